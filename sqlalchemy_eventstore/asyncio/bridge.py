"""The subscription runner's way to the database in the async store: the store's loop.

The runner of :mod:`..subscriptions` (the sync API's, unchanged: one state
machine, one failure policy) runs on threads of its own and waits for I/O
through a :class:`~..subscriptions.io.StorageIO`. :class:`LoopIO` is the async
store's: each call is a coroutine scheduled on the store's event loop, on the
store's ``AsyncEngine`` -- so its connections, pool and driver (psycopg 3 or
asyncpg) serve the subscriptions too -- and the runner's thread waits for its
result. The loop itself never waits for the runner: the async API hands every
call that may take the runner's mutex to a thread (see ``subscribing``).

The advisory locks and LISTEN need a session connection of their own, outside
the pool: ``session`` is a NullPool engine made for them (on the
``session_mode_url`` when given, else like the store's engine -- from the
caller's own engine when the store shares one).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..notifications.payload import Notification
from ..storage.locks import SET_APPLICATION_NAME, AdvisoryLocks
from ..subscriptions.io import MakeOp
from .connection import AsyncRunner

__all__ = ["AsyncLockSession", "LoopIO", "discard", "submit", "wait_on"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
T = TypeVar("T")

# How often a thread waiting on the loop checks that the loop still runs.
_LOOP_CHECK = 0.5


def submit(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]
) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on ``loop`` from any thread.

    Raises RuntimeError when the loop is closed; ``coro`` is closed then, so it
    is never left un-awaited.
    """
    if loop.is_closed():
        coro.close()
        raise RuntimeError("the async event store's event loop is closed")
    try:
        return asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:
        coro.close()
        raise


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def wait_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` and block this thread (never the loop's) for its result.

    Raises RuntimeError, rather than waiting for good, when the loop stops
    before the result comes.
    """
    if _on_loop(loop):
        coro.close()
        raise RuntimeError("a subscription call would block the event loop it waits on")
    future = submit(loop, coro)
    while True:
        done, _ = concurrent.futures.wait([future], timeout=_LOOP_CHECK)
        if done:
            return future.result()
        if not loop.is_running():
            future.cancel()
            raise RuntimeError("the async event store's event loop stopped")


async def discard(conn: AsyncConnection) -> None:
    """Close a session connection that may be dead: invalidated, errors ignored."""
    try:
        await conn.invalidate()
    except Exception:
        logger.debug("error invalidating a session connection", exc_info=True)
    try:
        await conn.close()
    except Exception:
        logger.debug("error closing a session connection", exc_info=True)


class LoopIO:
    """The async store's :class:`~..subscriptions.io.StorageIO` (see the module)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: AsyncEngine,
        runner: AsyncRunner,
        session: AsyncEngine,
    ) -> None:
        self.loop = loop
        self.engine = engine
        self.runner = runner
        self.session = session

    def wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return wait_on(self.loop, coro)

    def read(self, make_op: MakeOp[T]) -> T:
        return self.wait(self._autocommit(make_op))

    def transact(self, make_op: MakeOp[T]) -> T:
        return self.wait(self._fresh(self._transaction, make_op))

    def autocommit(self, make_op: MakeOp[T]) -> T:
        return self.wait(self._fresh(self._autocommit, make_op))

    async def _autocommit(self, make_op: MakeOp[T]) -> T:
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await self.runner.run(conn, make_op())

    async def _transaction(self, make_op: MakeOp[T]) -> T:
        async with self.engine.begin() as conn:
            return await self.runner.run(conn, make_op())

    @staticmethod
    async def _fresh(
        attempt: Callable[[MakeOp[T]], Coroutine[Any, Any, T]], make_op: MakeOp[T]
    ) -> T:
        """Once more at once should the pooled connection turn out dead (as
        the sync store does: the pool has discarded it by then)."""
        for number in (1, 2):
            try:
                return await attempt(make_op)
            except DBAPIError as error:
                if number == 2 or not error.connection_invalidated:
                    raise
                logger.info("stale pooled connection; retrying at once")
        raise AssertionError("unreachable")  # pragma: no cover

    def listener(
        self,
        schema: str,
        *,
        on_notification: Callable[[Notification], None],
        on_reconnect: Callable[[], None],
        on_parked: Callable[[int], None],
        name: str,
        polling_reason: str | None,
    ) -> Any:
        from .listener import AsyncListener

        return AsyncListener(
            self,
            schema,
            on_notification=on_notification,
            on_reconnect=on_reconnect,
            on_parked=on_parked,
            name=name,
            polling_reason=polling_reason,
        )

    def locks(self, schema: str, application_name: str) -> AdvisoryLocks:
        return AdvisoryLocks(AsyncLockSession(self, application_name), schema)

    async def open_session(self, application_name: str) -> AsyncConnection:
        """A new session connection (autocommit), named in pg_stat_activity."""
        conn = await self.session.connect()
        try:
            await self.runner.execute(conn, SET_APPLICATION_NAME, {"name": application_name})
        except BaseException:
            await discard(conn)
            raise
        return conn


class AsyncLockSession:
    """The advisory locks' session on the async driver, driven from the runner's thread."""

    def __init__(self, io: LoopIO, application_name: str) -> None:
        self._io = io
        self._application_name = application_name
        self._conn: AsyncConnection | None = None

    @property
    def open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> None:
        self._conn = self._io.wait(self._io.open_session(self._application_name))

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        assert self._conn is not None
        return self._io.wait(self._io.runner.execute(self._conn, sql, params))

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._io.wait(discard(conn))
            except Exception:
                logger.debug("error dropping the advisory lock connection", exc_info=True)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                self._io.wait(conn.close())
            except Exception:
                logger.debug("error closing the advisory lock connection", exc_info=True)
