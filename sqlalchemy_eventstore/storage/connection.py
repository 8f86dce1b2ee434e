"""Resolving ``conn=`` to a SQLAlchemy ``Connection``, under a call timeout.

A call's ``timeout`` becomes PostgreSQL's ``statement_timeout`` on the
connection the call runs on, set so as to cost as few round trips as the
connection allows:

- ``"session"``: a pooled connection of an engine the store made, straight to
  PostgreSQL. The setting is kept on the connection between calls (noted in
  its pool record), so a call at the store's timeout sends nothing extra;
  only a call with another timeout changes it (one round trip).
- ``"restore"``: a connection shared with someone else -- the caller's
  ``conn=`` transaction, or a pooled connection of the caller's Engine. The
  previous value is read and replaced in one round trip and put back after
  the call (in a transaction, only for that transaction: ``is_local``).
- ``"local"``: an engine reaching PostgreSQL through a transaction-mode
  pooler (PgBouncer), where a session setting would stay on a server
  connection other clients get next. The store's own calls then run in a
  transaction whose first statement sets the timeout for it alone.

A cancelled statement (SQLSTATE 57014, or 55P03 for a ``lock_timeout``),
and a wait for a pooled connection that runs out, raise
:class:`StoreTimeoutError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeAlias

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, scoped_session

from ..errors import DuplicateEventError, EventNotFoundError, StoreTimeoutError

__all__ = [
    "ConnLike",
    "Connector",
    "TimeoutMode",
    "connection",
    "resolve_conn",
    "translate_db_error",
]

#: What ``conn=`` accepts: a Session, scoped_session or Connection in the caller's transaction.
ConnLike: TypeAlias = "Session | scoped_session[Any] | Connection"

TimeoutMode: TypeAlias = Literal["session", "restore", "local"]

_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"
_QUERY_CANCELED = "57014"  # statement_timeout (or a cancel request)
_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout
_TIMEOUT_STATES = (_QUERY_CANCELED, _LOCK_NOT_AVAILABLE)

# Where "session" mode notes the value it left on a pooled connection.
_INFO_KEY = "sqlalchemy_eventstore.statement_timeout"

_SET = "SELECT set_config('statement_timeout', %(value)s, %(local)s)"
# The old value and the new one in one round trip: OFFSET 0 keeps the
# subquery (read first) from being merged into the outer projection (which
# sets); set_config returns the value as current_setting shows it, so the
# two compare.
_SWAP = (
    "SELECT old, set_config('statement_timeout', %(value)s, %(local)s)"
    " FROM (SELECT current_setting('statement_timeout') AS old OFFSET 0) AS s"
)


def milliseconds(timeout: float | None) -> str | None:
    """``timeout`` in seconds as a ``statement_timeout`` value (None: no limit)."""
    if timeout is None:
        return None
    return str(max(1, round(timeout * 1000)))


def resolve_conn(conn: Any) -> Session | Connection:
    """The Session or Connection ``conn=`` names (a scoped_session's current Session)."""
    if isinstance(conn, scoped_session):
        conn = conn()
    if isinstance(conn, (Session, Connection)):
        return conn
    raise TypeError(
        "conn must be a SQLAlchemy Session, scoped_session or Connection, "
        f"got {type(conn).__name__}"
    )


class Connector:
    """Hands out the connection each storage call runs on, with its timeout set.

    ``mode`` says how the store's own pooled connections get the timeout
    (module docstring); a caller's ``conn=`` always gets ``"restore"``,
    transaction-local unless that connection is in autocommit mode.
    """

    def __init__(self, engine: Engine, mode: TimeoutMode) -> None:
        self.engine = engine
        self.mode = mode

    @contextmanager
    def connect(
        self, conn: ConnLike | None, *, transaction: bool, timeout: float | None
    ) -> Iterator[Connection]:
        """Yield the connection a call runs on, its errors translated.

        With ``conn``, the caller's own transaction: joined, never committed or
        rolled back here. Without it, a pooled connection of the store's
        engine -- in autocommit mode when the call is one statement
        (``transaction`` False: a single statement is atomic by itself, and
        skipping BEGIN/COMMIT saves two round trips), else inside a
        transaction committed on success.
        """
        value = milliseconds(timeout)
        try:
            if conn is not None:
                joined = resolve_conn(conn)
                c = joined.connection() if isinstance(joined, Session) else joined
                local = not c.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
                with _restoring(c, value, local=local):
                    yield c
            elif self.mode == "local" or (transaction and self.mode == "restore"):
                with self.engine.begin() as own:
                    if value is not None:
                        own.exec_driver_sql(_SET, {"value": value, "local": True})
                    yield own
            elif self.mode == "restore":
                with (
                    self.engine.connect() as own,
                    _autocommit(own),
                    _restoring(own, value, local=False),
                ):
                    yield own
            else:
                with self.engine.connect() as own:
                    # Set outside any transaction, so that no rollback undoes it.
                    with _autocommit(own):
                        _keep(own, value)
                        if not transaction:
                            yield own
                    if transaction:
                        own.commit()  # ends SQLAlchemy's autobegin: nothing sent
                        with own.begin():
                            yield own
        except DBAPIError as error:
            if _sqlstate(error) in _TIMEOUT_STATES:
                raise StoreTimeoutError(f"timed out on the database: {error.orig}") from error
            raise
        except PoolTimeoutError as error:
            raise StoreTimeoutError(
                f"timed out waiting for a pooled connection: {error}"
            ) from error


@contextmanager
def connection(engine: Engine, conn: ConnLike | None, *, transaction: bool) -> Iterator[Connection]:
    """:meth:`Connector.connect` with no timeout of its own (bookkeeping statements)."""
    with Connector(engine, "restore").connect(conn, transaction=transaction, timeout=None) as c:
        yield c


def _keep(conn: Connection, value: str | None) -> None:
    """Give a store-owned pooled connection ``value``, unless it has it already.

    Called in autocommit mode, so the setting is committed at once: no later
    rollback undoes it, and the note stays true for the connection's life.
    """
    info = conn.info
    dbapi_conn = conn.connection.dbapi_connection
    noted = info.get(_INFO_KEY)
    current = noted[1] if noted is not None and noted[0] is dbapi_conn else None
    if current == value:
        return
    if value is None:
        conn.exec_driver_sql("RESET statement_timeout")
    else:
        conn.exec_driver_sql(_SET, {"value": value, "local": False})
    info[_INFO_KEY] = (dbapi_conn, value)


@contextmanager
def _restoring(conn: Connection, value: str | None, *, local: bool) -> Iterator[None]:
    """Set ``value`` for the call and put the previous value back after it.

    After a database error the caller's transaction is aborted: PostgreSQL
    undoes a transaction-local setting at its rollback, and accepts no
    statement before it, so nothing is put back then.
    """
    if value is None:
        yield
        return
    old, new = conn.exec_driver_sql(_SWAP, {"value": value, "local": local}).one()
    try:
        yield
    except DBAPIError:
        if not (local and conn.in_transaction()) and not conn.invalidated:
            conn.exec_driver_sql(_SET, {"value": old, "local": local})
        raise
    except BaseException:
        if old != new and not conn.invalidated:
            conn.exec_driver_sql(_SET, {"value": old, "local": local})
        raise
    if old != new:
        conn.exec_driver_sql(_SET, {"value": old, "local": local})


@contextmanager
def _autocommit(conn: Connection) -> Iterator[None]:
    """Autocommit on the driver connection, restored before it returns to the pool.

    Not ``execution_options(isolation_level="AUTOCOMMIT")``: on psycopg2 that
    costs a round trip per operation, since SQLAlchemy resets the connection to
    an explicit READ COMMITTED at check-in and psycopg2, leaving autocommit with
    an explicit level, sends ``SET default_transaction_isolation``. Flipping
    the DBAPI ``autocommit`` attribute leaves the isolation level alone, so it
    sends nothing (psycopg2 at its default level, psycopg 3 always); statements
    run exactly as under SQLAlchemy's AUTOCOMMIT, whose begin and rollback are
    no-ops on the driver too.
    """
    dbapi_conn: Any = conn.connection.dbapi_connection
    previous = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    try:
        yield
    finally:
        # A lost connection is invalidated (and closed) by SQLAlchemy: leave it.
        if not conn.invalidated and not dbapi_conn.closed:
            dbapi_conn.autocommit = previous


def _sqlstate(error: DBAPIError) -> str | None:
    orig: Any = error.orig
    return getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)


def _constraint(error: DBAPIError) -> str | None:
    diag = getattr(error.orig, "diag", None)
    if diag is not None:  # psycopg2, psycopg 3
        return getattr(diag, "constraint_name", None)
    # asyncpg, behind SQLAlchemy's adapter: the driver's own exception.
    return getattr(getattr(error.orig, "__cause__", None), "constraint_name", None)


def translate_db_error(error: DBAPIError) -> Exception | None:
    """The domain error a storage failure means, by SQLSTATE and constraint name.

    None when it means nothing to us: the caller re-raises the original.
    """
    state, constraint = _sqlstate(error), _constraint(error)
    if state == _UNIQUE_VIOLATION and constraint in ("events_pkey", "stream_events_pkey"):
        return DuplicateEventError(f"duplicate event: {error.orig}")
    if state == _FOREIGN_KEY_VIOLATION and constraint == "stream_events_event_id_fkey":
        return EventNotFoundError(f"event not found: {error.orig}")
    return None
