"""Resolving ``conn=`` to a SQLAlchemy ``Connection``, and database errors to ours."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..errors import DuplicateEventError, EventNotFoundError

__all__ = ["ConnLike", "connection", "translate_db_error"]

#: What ``conn=`` accepts: a Session or Connection in the caller's transaction.
ConnLike: TypeAlias = Session | Connection

_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"


@contextmanager
def connection(engine: Engine, conn: ConnLike | None, *, transaction: bool) -> Iterator[Connection]:
    """Yield the connection an operation runs on.

    With ``conn``, the caller's own transaction: joined, never committed or
    rolled back here. Without it, a pooled connection of the store's engine --
    in autocommit mode when the operation is one statement (``transaction``
    False: a single statement is atomic by itself, and skipping BEGIN/COMMIT
    saves two round trips), else inside a transaction committed on success.
    """
    if conn is None:
        if transaction:
            with engine.begin() as own:
                yield own
        else:
            with engine.connect() as own, _autocommit(own):
                yield own
    elif isinstance(conn, Session):
        yield conn.connection()
    elif isinstance(conn, Connection):
        yield conn
    else:
        raise TypeError(
            f"conn must be a SQLAlchemy Session or Connection, got {type(conn).__name__}"
        )


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
    return getattr(diag, "constraint_name", None)


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
