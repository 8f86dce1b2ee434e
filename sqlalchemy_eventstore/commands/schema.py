"""The reference's mix tasks: create, drop, init, migrate, migrations.

Every command is safe to repeat: creating what exists, initialising an
initialised schema or migrating a current one reports so and succeeds.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ..storage import upgrades
from ..storage.schema import (
    ADDITIONS_NAME,
    SCHEMA_LOCK_KEY,
    add_additions,
    additions_incomplete,
    quote_ident,
)
from ..store import EventStore
from ._common import (
    _DUPLICATE_DATABASE,
    _DUPLICATE_SCHEMA,
    _UNIQUE_VIOLATION,
    CommandError,
    _check_schema,
    _connection,
    _database_name,
    _engine,
    _failures,
    _not_initialised,
    _parse_url,
    _say,
    _schema_present,
    _show,
    _sqlstate,
)

__all__ = ["MigrationStatus", "create", "drop", "init", "migrate", "migrations"]


class MigrationStatus(NamedTuple):
    """One migration and whether it is applied: a step of the reference's
    numbering ("1.3.2"), or this package's additions ("additions 1")."""

    version: str  # "1.3.2" or "additions 1"
    status: str  # "applied" or "pending"


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
    if_exists: bool = False,
) -> None:
    """Drop the event store: its whole database for ``public``, else only its schema.

    As the reference does: stores that live in their own schemas share one
    database, so dropping one of them drops its schema (``CASCADE``: with all it
    holds) and leaves the database and the other schemas alone. For ``public``
    the database the URL names is dropped; it must have no other sessions.

    A schema or database that does not exist is a failure (a mistyped name
    must not look like success) unless ``if_exists``. This function asks
    nothing: the ``eventstore drop`` command asks for confirmation.
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
            if present:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
        if present:
            _say(quiet, f'The EventStore schema "{schema}" has been dropped.')
        elif if_exists:
            _say(quiet, f'The EventStore schema "{schema}" does not exist: nothing to drop.')
        else:
            raise CommandError(f'schema "{schema}" does not exist in database "{name}"')
        return

    if name == maintenance_database:
        raise CommandError(f'refusing to drop the maintenance database "{name}"')
    with (
        _failures(f'cannot drop database "{name}"', given.set(database=maintenance_database)),
        _connection(url_.set(database=maintenance_database), autocommit=True) as conn,
    ):
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        present = found.first() is not None
        if present:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    if present:
        _say(quiet, f'The EventStore database "{name}" has been dropped.')
    elif if_exists:
        _say(quiet, f'The EventStore database "{name}" does not exist: nothing to drop.')
    else:
        raise CommandError(f'database "{name}" does not exist on {_show(given)}')


def init(
    url: str | URL,
    schema: str = "public",
    quiet: bool = False,
    *,
    column_data_type: str = "bytea",
    foreign_keys: bool = True,
) -> bool:
    """Create the event store's tables, functions and triggers: ``EventStore.init()``.

    Creates the schema too when missing. Returns True when it created the
    event store, False when the schema already held one. ``foreign_keys=False``
    creates the variant without ``stream_events``' foreign keys.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    if column_data_type not in ("bytea", "jsonb"):
        raise CommandError(f"column data type must be bytea or jsonb, got {column_data_type!r}")
    with _failures(f'cannot initialise schema "{schema}"', given):
        engine = _engine(url_)
        try:
            with EventStore(
                engine,
                schema=schema,
                column_data_type=column_data_type,
                foreign_keys=foreign_keys,
            ) as store:
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

    The reference's steps first, each committing on its own with its
    ``schema_migrations`` row; then this package's additions when missing
    (``"additions 1"``: they record no row, their tables say they are there).
    Safe to run again (nothing pending: nothing done) and concurrently: the
    runs queue on an advisory lock and each later one finds nothing to do.
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
        with conn.begin():
            if additions_incomplete(conn, schema):
                _say(quiet, f"Running migration {ADDITIONS_NAME}...")
                add_additions(conn, schema)
                applied.append(ADDITIONS_NAME)
    if applied:
        _say(quiet, "The EventStore database has been migrated.")
    else:
        _say(quiet, "The EventStore database is already migrated.")
    return applied


def migrations(
    url: str | URL, schema: str = "public", quiet: bool = False, *, print_list: bool = False
) -> list[MigrationStatus]:
    """Each known migration, oldest first, as applied or pending.

    Printed as a table unless ``quiet``; ``print_list`` prints the bare list
    instead, one ``version<TAB>state`` line each, whatever ``quiet`` says
    (``eventstore migrations --quiet``: for scripts).

    A migration of the reference counts as applied when its version is at most
    the latest one recorded: a schema created at the current layout records
    only that. This package's additions come last (``"additions 1"``), applied
    when their tables exist.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    with (
        _failures(f'cannot read the migrations of schema "{schema}"', given),
        _connection(url_) as conn,
    ):
        recorded = upgrades.recorded_versions(conn, schema)
        missing = additions_incomplete(conn, schema) if recorded is not None else False
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
    statuses.append(MigrationStatus(ADDITIONS_NAME, "pending" if missing else "applied"))
    if print_list:
        # The list is the answer: ``quiet`` drops the header, not the list.
        for status in statuses:
            print(f"{status.version}\t{status.status}", flush=True)
        return statuses
    _say(quiet, f"EventStore: {_show(given)} schema {schema}\n")
    _say(quiet, "  migration     state\n  -----------   -------")
    for status in statuses:
        _say(quiet, f"  {status.version:<12}  {status.status}")
    return statuses
