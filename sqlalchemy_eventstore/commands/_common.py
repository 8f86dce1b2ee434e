"""What every command shares: URL parsing, connections, and failures as one-line errors.

Each command takes the database URL and the event store's schema, prints what
it did (unless ``quiet``) and raises :class:`CommandError` -- one line,
password hidden -- for every failure: a bad URL, an unreachable server, a
missing database, a missing permission.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from .. import _validation
from ..errors import EventStoreError
from ..storage.schema import quote_ident
from ..store import _engine_url

__all__ = ["CommandError"]

_DUPLICATE_DATABASE = "42P04"
_DUPLICATE_SCHEMA = "42P06"
_UNIQUE_VIOLATION = "23505"  # two concurrent CREATE SCHEMA IF NOT EXISTS
_INVALID_CATALOG_NAME = "3D000"  # the database does not exist


class CommandError(EventStoreError):
    """A command failed; the message is one line, fit for a terminal."""

    reason = "command_failed"


def _mask(raw: str) -> str:
    """Hide a password in a URL that may not even parse."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", raw)


def _show(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _parse_url(url: str | URL) -> tuple[URL, URL]:
    """(the URL as given, for messages; the URL to connect with)."""
    if not isinstance(url, (str, URL)) or not str(url).strip():
        raise CommandError("no database URL given: pass --url or set EVENTSTORE_URL")
    try:
        given = make_url(url)
    except (ArgumentError, ValueError) as error:
        shown = _mask(url) if isinstance(url, str) else "?"
        raise CommandError(f"invalid database URL {shown!r}: {_one_line(error)}") from None
    if given.get_backend_name() not in ("postgres", "postgresql"):
        raise CommandError(
            f"invalid database URL {_show(given)!r}: expected postgresql://user@host/database"
        )
    return given, _engine_url(given)


def _database_name(given: URL) -> str:
    if not given.database:
        raise CommandError(f"the URL {_show(given)!r} names no database")
    return given.database


def _check_schema(schema: str) -> None:
    """The rule ``EventStore(schema=...)`` applies, as a CommandError."""
    try:
        _validation.check_schema(schema, "--schema")
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _one_line(error: BaseException) -> str:
    """The first line of an error's message, whitespace collapsed."""
    cause = error.orig if isinstance(error, DBAPIError) else error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else type(cause).__name__


def _sqlstate(error: DBAPIError) -> str | None:
    orig: Any = error.orig
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return str(code) if code else None


@contextmanager
def _failures(action: str, given: URL) -> Iterator[None]:
    """Turn a database error into a :class:`CommandError` saying what failed."""
    try:
        yield
    except DBAPIError as error:
        if error.statement is None:  # raised while connecting
            message = f"cannot connect to {_show(given)}: {_one_line(error)}"
        else:
            message = f"{action}: {_one_line(error)}"
        if _sqlstate(error) == _INVALID_CATALOG_NAME:
            message += " (create it with `eventstore create`)"
        raise CommandError(message) from error
    except ArgumentError as error:  # an unknown driver in the URL
        raise CommandError(f"invalid database URL {_show(given)!r}: {_one_line(error)}") from error
    except ImportError as error:  # the URL's driver is not installed
        raise CommandError(f"cannot use {_show(given)}: {_one_line(error)}") from error


def _engine(url: URL, *, autocommit: bool = False) -> Engine:
    """An engine of real sessions (no pool): closing a connection ends its session."""
    connect_args: dict[str, Any] = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    if "application_name" not in url.query:
        connect_args["application_name"] = "eventstore-command"
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_engine(url, poolclass=NullPool, connect_args=connect_args, **options)


@contextmanager
def _connection(url: URL, *, autocommit: bool = False) -> Iterator[Connection]:
    engine = _engine(url, autocommit=autocommit)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, flush=True)


def _schema_present(conn: Connection, schema: str) -> bool:
    found = conn.execute(text("SELECT to_regnamespace(:s)"), {"s": quote_ident(schema)})
    return found.scalar() is not None


def _not_initialised(schema: str, database: str | None) -> CommandError:
    return CommandError(
        f'schema "{schema}" of database "{database}" holds no event store: '
        "run `eventstore init` first"
    )


def _column_type(conn: Connection, given: URL, schema: str) -> str:
    """The type of the events' data column (bytea or jsonb): the schema holds an event store."""
    found = conn.execute(
        text(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = :schema "
            "AND table_name = 'events' AND column_name = 'data'"
        ),
        {"schema": schema},
    ).scalar()
    if found is None:
        raise _not_initialised(schema, given.database)
    return str(found)
