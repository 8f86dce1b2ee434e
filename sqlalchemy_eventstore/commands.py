"""The reference's mix tasks as plain functions: create, drop, init, migrate, migrations.

Each takes the database URL and the event store's schema, prints what it did
(unless ``quiet``) and raises :class:`CommandError` -- one line, password
hidden -- for every failure: a bad URL, an unreachable server, a missing
database, a missing permission. The ``eventstore`` console command
(:mod:`sqlalchemy_eventstore.cli`) is a thin shell over them.

Every command is safe to repeat: creating what exists, dropping what is gone,
initialising an initialised schema or migrating a current one reports so and
succeeds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from .errors import EventStoreError
from .storage import upgrades
from .storage.checker import CheckReport, check_schema
from .storage.schema import SCHEMA_LOCK_KEY, quote_ident
from .store import EventStore, _engine_url

__all__ = [
    "CheckReport",
    "CommandError",
    "MigrationStatus",
    "check",
    "create",
    "drop",
    "init",
    "migrate",
    "migrations",
]

_DUPLICATE_DATABASE = "42P04"
_DUPLICATE_SCHEMA = "42P06"
_UNIQUE_VIOLATION = "23505"  # two concurrent CREATE SCHEMA IF NOT EXISTS
_INVALID_CATALOG_NAME = "3D000"  # the database does not exist


class CommandError(EventStoreError):
    """A command failed; the message is one line, fit for a terminal."""

    reason = "command_failed"


class MigrationStatus(NamedTuple):
    """One migration of the reference's numbering and whether it is applied."""

    version: str  # "1.3.2"
    status: str  # "applied" or "pending"


# -- helpers -------------------------------------------------------------------


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
    if not isinstance(schema, str) or not schema:
        raise CommandError("the schema must be a non-empty name")


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


# -- commands ------------------------------------------------------------------


def create(
    url: str | URL,
    schema: str = "public",
    quiet: bool = False,
    *,
    maintenance_database: str = "postgres",
) -> None:
    """Create the database the URL names, then the schema inside it.

    The database is created from a connection to ``maintenance_database`` on
    the same server. Tables come later, from :func:`init`.
    """
    given, url_ = _parse_url(url)
    name = _database_name(given)
    _check_schema(schema)
    with (
        _failures(f'cannot create database "{name}"', given.set(database=maintenance_database)),
        _connection(url_.set(database=maintenance_database), autocommit=True) as conn,
    ):
        created = False
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if found.first() is None:
            try:
                conn.exec_driver_sql(f"CREATE DATABASE {quote_ident(name)}")
                created = True
            except DBAPIError as error:
                # Created meanwhile by a concurrent run: that is success too.
                if _sqlstate(error) != _DUPLICATE_DATABASE:
                    raise
    if created:
        _say(quiet, f'The EventStore database "{name}" has been created.')
    else:
        _say(quiet, f'The EventStore database "{name}" already exists.')

    with (
        _failures(f'cannot create schema "{schema}"', given),
        _connection(url_, autocommit=True) as conn,
    ):
        created = False
        if not _schema_present(conn, schema):
            try:
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                created = True
            except DBAPIError as error:
                if _sqlstate(error) not in (_DUPLICATE_SCHEMA, _UNIQUE_VIOLATION):
                    raise
    if created:
        _say(quiet, f'The EventStore schema "{schema}" has been created.')
    else:
        _say(quiet, f'The EventStore schema "{schema}" already exists.')


def drop(
    url: str | URL,
    schema: str = "public",
    quiet: bool = False,
    *,
    maintenance_database: str = "postgres",
) -> None:
    """Drop the event store: its whole database for ``public``, else only its schema.

    As the reference does: stores that live in their own schemas share one
    database, so dropping one of them drops its schema (``CASCADE``: with all it
    holds) and leaves the database and the other schemas alone. For ``public``
    the database the URL names is dropped; it must have no other sessions.
    """
    given, url_ = _parse_url(url)
    name = _database_name(given)
    _check_schema(schema)
    if schema != "public":
        with (
            _failures(f'cannot drop schema "{schema}"', given),
            _connection(url_, autocommit=True) as conn,
        ):
            present = _schema_present(conn, schema)
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        if present:
            _say(quiet, f'The EventStore schema "{schema}" has been dropped.')
        else:
            _say(quiet, f'The EventStore schema "{schema}" has already been dropped.')
        return

    if name == maintenance_database:
        raise CommandError(f'refusing to drop the maintenance database "{name}"')
    with (
        _failures(f'cannot drop database "{name}"', given.set(database=maintenance_database)),
        _connection(url_.set(database=maintenance_database), autocommit=True) as conn,
    ):
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        present = found.first() is not None
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    if present:
        _say(quiet, f'The EventStore database "{name}" has been dropped.')
    else:
        _say(quiet, f'The EventStore database "{name}" has already been dropped.')


def init(
    url: str | URL,
    schema: str = "public",
    quiet: bool = False,
    *,
    column_data_type: str = "bytea",
) -> bool:
    """Create the event store's tables, functions and triggers: ``EventStore.init()``.

    Creates the schema too when missing. Returns True when it created the
    event store, False when the schema already held one.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    if column_data_type not in ("bytea", "jsonb"):
        raise CommandError(f"column data type must be bytea or jsonb, got {column_data_type!r}")
    with _failures(f'cannot initialise schema "{schema}"', given):
        engine = _engine(url_)
        try:
            with EventStore(engine, schema=schema, column_data_type=column_data_type) as store:
                created = store.init()
        finally:
            engine.dispose()
    if created:
        _say(quiet, "The EventStore database has been initialized.")
    else:
        _say(quiet, "The EventStore database has already been initialized.")
    return created


def migrate(url: str | URL, schema: str = "public", quiet: bool = False) -> list[str]:
    """Apply the pending migrations of an initialised event store; their versions.

    Safe to run again (nothing pending: nothing done) and concurrently: the
    runs queue on an advisory lock and each later one finds nothing to do.
    Each migration commits on its own, with its ``schema_migrations`` row.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    applied: list[str] = []
    with (
        _failures(f'cannot migrate schema "{schema}"', given),
        _connection(url_) as conn,
    ):
        # Session-level lock on the key that init() and the Alembic branch
        # take per transaction: it blocks other migrations and initialisers
        # until this session ends, so no step is applied twice and no
        # initialiser sees a half-migrated schema. Not released by hand:
        # the connection (a real session, NullPool) closes on every path.
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        conn.commit()
        recorded = upgrades.recorded_versions(conn, schema)
        conn.rollback()
        if recorded is None:
            raise _not_initialised(schema, given.database)
        if not recorded:
            raise CommandError(f'schema "{schema}" records no schema version: cannot migrate')
        steps = upgrades.pending(recorded)
        problem = upgrades.unsupported(steps, schema)
        if problem is not None:
            raise CommandError(problem)
        for migration in steps:
            _say(quiet, f"Running migration v{migration.name}...")
            with conn.begin():
                upgrades.apply(conn, schema, migration)
            applied.append(migration.name)
    if applied:
        _say(quiet, "The EventStore database has been migrated.")
    else:
        _say(quiet, "The EventStore database is already migrated.")
    return applied


def migrations(
    url: str | URL, schema: str = "public", quiet: bool = False
) -> list[MigrationStatus]:
    """Each known migration, oldest first, as applied or pending.

    A migration counts as applied when its version is at most the latest one
    recorded: a schema created at the current layout records only that.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    with (
        _failures(f'cannot read the migrations of schema "{schema}"', given),
        _connection(url_) as conn,
    ):
        recorded = upgrades.recorded_versions(conn, schema)
    if recorded is None:
        raise _not_initialised(schema, given.database)
    latest = max(recorded, default=None)
    versions = sorted({m.version for m in upgrades.MIGRATIONS} | set(recorded))
    statuses = [
        MigrationStatus(
            upgrades.version_name(version),
            "applied" if latest is not None and version <= latest else "pending",
        )
        for version in versions
    ]
    _say(quiet, f"EventStore: {_show(given)} schema {schema}\n")
    _say(quiet, "  migration   state\n  ---------   -------")
    for status in statuses:
        _say(quiet, f"  {status.version:<10}  {status.status}")
    return statuses


def check(
    url: str | URL, schema: str = "public", quiet: bool = False, *, allow_holes: bool = False
) -> CheckReport:
    """Verify the event store's invariants; raise :class:`CommandError` on a violation.

    First numbers committed appends still waiting for ``$all``
    (``global_order="sequencer"``), then checks: ``$all`` positions 1..N
    without holes, every event linked into ``$all`` exactly once, every
    stream's versions without holes, each stream in stream order in ``$all``.
    Holes that hard deletes leave in ``$all`` are violations unless
    ``allow_holes``. Prints what it found (unless ``quiet``) and returns it.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    with (
        _failures(f'cannot check schema "{schema}"', given),
        _connection(url_, autocommit=True) as conn,
    ):
        if upgrades.recorded_versions(conn, schema) is None:
            raise _not_initialised(schema, given.database)
        report = check_schema(conn, schema, allow_holes=allow_holes)
    _say(quiet, f"EventStore: {_show(given)} schema {schema}")
    for line in report.lines():
        _say(quiet, f"  {line}")
    problems = report.violations()
    if problems:
        raise CommandError(f"check found {len(problems)} kinds of violation in schema {schema!r}")
    return report
