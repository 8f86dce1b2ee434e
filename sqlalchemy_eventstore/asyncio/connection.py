"""The async shell's connections and runner: ``conn=`` resolved, timeouts set, operations driven.

The async counterpart of :mod:`..storage.connection` and
:func:`..storage.steps.run`, with the same statements and rules:

- :class:`AsyncRunner` drives an operation of :mod:`..storage` on an
  ``AsyncConnection``, rendering each ``%(name)s`` statement once for the
  driver's paramstyle (asyncpg takes ``$1`` and a tuple; psycopg 3 the
  statement as it is).
- :class:`AsyncConnector` hands out the connection of each call with its
  ``statement_timeout``, in the modes the sync connector documents:
  ``"session"`` (kept on the store's own pooled connections), ``"restore"``
  (the caller's ``conn=`` or AsyncEngine: set and put back) and ``"local"``
  (through a transaction-mode pooler: set for the call's transaction only).
  Timeouts and database errors become the sync API's exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ..errors import StoreTimeoutError
from ..storage.connection import (
    _INFO_KEY,
    _SET,
    _SWAP,
    _TIMEOUT_STATES,
    TimeoutMode,
    _sqlstate,
    milliseconds,
)
from ..storage.steps import Numbered, Op, Rows, numeric_dollar, translated

__all__ = ["AsyncConnLike", "AsyncConnector", "AsyncRunner"]

T = TypeVar("T")

#: What ``conn=`` accepts in the async API: an AsyncSession or AsyncConnection.
AsyncConnLike: TypeAlias = "AsyncSession | AsyncConnection"

_PARAMSTYLES = ("pyformat", "numeric_dollar")


class AsyncRunner:
    """Executes statements and drives operations for one driver's paramstyle."""

    def __init__(self, paramstyle: str) -> None:
        if paramstyle not in _PARAMSTYLES:
            raise ValueError(
                f"the async store runs on psycopg 3 or asyncpg (postgresql+psycopg:// or "
                f"postgresql+asyncpg://); this driver's paramstyle is {paramstyle!r}"
            )
        self.numbered = paramstyle == "numeric_dollar"
        # Rendered once per statement text; a store has a bounded set of them.
        self._rendered: dict[str, Numbered] = {}

    async def execute(
        self, conn: AsyncConnection, sql: str, params: Mapping[str, Any] | None = None
    ) -> Rows:
        """Run one statement; its rows (empty when it returns none)."""
        if self.numbered:
            rendered = self._rendered.get(sql)
            if rendered is None:
                rendered = self._rendered[sql] = numeric_dollar(sql)
            result = await conn.exec_driver_sql(rendered.sql, rendered.args(params))
        elif params is None:
            result = await conn.exec_driver_sql(sql)
        else:
            result = await conn.exec_driver_sql(sql, dict(params))
        return result.fetchall() if result.returns_rows else ()

    async def run(self, conn: AsyncConnection, op: Op[T]) -> T:
        """Drive ``op`` to its result on ``conn``."""
        try:
            query = next(op)
            while True:
                try:
                    rows = await self.execute(conn, query.text, query.params)
                except DBAPIError as error:
                    problem = translated(error, query)
                    if problem is error:
                        raise
                    raise problem from error
                query = op.send(rows)
        except StopIteration as stop:
            value: T = stop.value
            return value


async def resolve_conn(conn: Any) -> AsyncConnection:
    """The AsyncConnection ``conn=`` names (an AsyncSession's, joining its transaction)."""
    if isinstance(conn, AsyncSession):
        return await conn.connection()
    if isinstance(conn, AsyncConnection):
        return conn
    raise TypeError(
        f"conn must be a SQLAlchemy AsyncSession or AsyncConnection, got {type(conn).__name__}"
    )


class AsyncConnector:
    """Hands out the AsyncConnection each call runs on, with its timeout set."""

    def __init__(self, engine: AsyncEngine, mode: TimeoutMode, runner: AsyncRunner) -> None:
        self.engine = engine
        self.mode = mode
        self.runner = runner

    @asynccontextmanager
    async def connect(
        self, conn: AsyncConnLike | None, *, transaction: bool, timeout: float | None
    ) -> AsyncIterator[AsyncConnection]:
        """Yield the connection a call runs on, its errors translated.

        With ``conn``, the caller's transaction: joined, never committed or
        rolled back here. Without it, a pooled connection: in autocommit mode
        for a one-statement call, else in a transaction committed on success.
        """
        value = milliseconds(timeout)
        try:
            if conn is not None:
                c = await resolve_conn(conn)
                options = c.sync_connection.get_execution_options()  # type: ignore[union-attr]
                local = options.get("isolation_level") != "AUTOCOMMIT"
                async with self._restoring(c, value, local=local):
                    yield c
            elif transaction or self.mode == "local":
                async with self.engine.begin() as own:
                    # For this transaction only: a rollback would undo a session setting.
                    if self.mode == "session":
                        if _noted(own) != (True, value):
                            local_value = "0" if value is None else value  # 0: no limit
                            await self.runner.execute(
                                own, _SET, {"value": local_value, "local": True}
                            )
                    elif value is not None:
                        await self.runner.execute(own, _SET, {"value": value, "local": True})
                    yield own
            else:
                async with self.engine.connect() as plain:
                    own = await plain.execution_options(isolation_level="AUTOCOMMIT")
                    if self.mode == "session":
                        await self._keep(own, value)
                        yield own
                    else:
                        async with self._restoring(own, value, local=False):
                            yield own
        except DBAPIError as error:
            if _sqlstate(error) in _TIMEOUT_STATES:
                raise StoreTimeoutError(f"timed out on the database: {error.orig}") from error
            raise
        except PoolTimeoutError as error:
            raise StoreTimeoutError(
                f"timed out waiting for a pooled connection: {error}"
            ) from error

    async def _keep(self, conn: AsyncConnection, value: str | None) -> None:
        """Give a store-owned pooled connection ``value`` (in autocommit), unless it has it."""
        if _noted(conn) == (True, value):
            return
        if value is None:
            await self.runner.execute(conn, "RESET statement_timeout")
        else:
            await self.runner.execute(conn, _SET, {"value": value, "local": False})
        conn.info[_INFO_KEY] = (_dbapi(conn), value)

    @asynccontextmanager
    async def _restoring(
        self, conn: AsyncConnection, value: str | None, *, local: bool
    ) -> AsyncIterator[None]:
        """Set ``value`` for the call and put the previous one back (see the sync twin)."""
        if value is None:
            yield
            return
        ((old, new),) = await self.runner.execute(conn, _SWAP, {"value": value, "local": local})
        try:
            yield
        except DBAPIError:
            if not (local and conn.in_transaction()) and not conn.invalidated:
                await self.runner.execute(conn, _SET, {"value": old, "local": local})
            raise
        except BaseException:
            if old != new and not conn.invalidated and not conn.closed:
                await self.runner.execute(conn, _SET, {"value": old, "local": local})
            raise
        if old != new:
            await self.runner.execute(conn, _SET, {"value": old, "local": local})


def _dbapi(conn: AsyncConnection) -> Any:
    return conn.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]


def _noted(conn: AsyncConnection) -> tuple[bool, str | None]:
    """(True, value) when this pooled connection was left with ``value`` by the store."""
    noted = conn.info.get(_INFO_KEY)
    if noted is not None and noted[0] is _dbapi(conn):
        return True, noted[1]
    return False, None
