"""The reference's mix tasks as plain functions: create, drop, init, migrate, migrations.

Also the operators' tools beyond the reference: ``parked_list``,
``parked_replay`` and ``parked_discard`` (a subscription's parked events).

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

import base64
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import NullPool

from . import _validation
from ._types import ALL_STREAM, ParkedEvent
from .errors import EventStoreError
from .serializers import JsonbSerializer, JsonSerializer
from .storage import parked, upgrades
from .storage.checker import CheckReport, check_schema
from .storage.schema import (
    ADDITIONS_NAME,
    SCHEMA_LOCK_KEY,
    add_additions,
    additions_missing,
    quote_ident,
)
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
    "parked_discard",
    "parked_list",
    "parked_replay",
]

_DUPLICATE_DATABASE = "42P04"
_DUPLICATE_SCHEMA = "42P06"
_UNIQUE_VIOLATION = "23505"  # two concurrent CREATE SCHEMA IF NOT EXISTS
_INVALID_CATALOG_NAME = "3D000"  # the database does not exist


class CommandError(EventStoreError):
    """A command failed; the message is one line, fit for a terminal."""

    reason = "command_failed"


class MigrationStatus(NamedTuple):
    """One migration and whether it is applied: a step of the reference's
    numbering ("1.3.2"), or this package's additions ("additions 1")."""

    version: str  # "1.3.2" or "additions 1"
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
            if additions_missing(conn, schema):
                _say(quiet, f"Running migration {ADDITIONS_NAME}...")
                add_additions(conn, schema)
                applied.append(ADDITIONS_NAME)
    if applied:
        _say(quiet, "The EventStore database has been migrated.")
    else:
        _say(quiet, "The EventStore database is already migrated.")
    return applied


def migrations(
    url: str | URL, schema: str = "public", quiet: bool = False
) -> list[MigrationStatus]:
    """Each known migration, oldest first, as applied or pending.

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
        missing = additions_missing(conn, schema) if recorded is not None else []
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
    _say(quiet, f"EventStore: {_show(given)} schema {schema}\n")
    _say(quiet, "  migration     state\n  -----------   -------")
    for status in statuses:
        _say(quiet, f"  {status.version:<12}  {status.status}")
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


# -- parked events -----------------------------------------------------------------


def _parked_target(
    conn: Connection, given: URL, schema: str, subscription_name: str, stream_uuid: str
) -> tuple[str, int]:
    """(the data column type, the subscription id), or a CommandError saying what is missing."""
    column_type = conn.execute(
        text(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = :schema "
            "AND table_name = 'events' AND column_name = 'data'"
        ),
        {"schema": schema},
    ).scalar()
    if column_type is None:
        raise _not_initialised(schema, given.database)
    if additions_missing(conn, schema):
        raise CommandError(
            f'schema "{schema}" has no parked_events table: run `eventstore migrate` first'
        )
    subscription_id = conn.execute(
        text(
            f"SELECT subscription_id FROM {quote_ident(schema)}.subscriptions "
            "WHERE stream_uuid = :stream AND subscription_name = :name"
        ),
        {"stream": stream_uuid, "name": subscription_name},
    ).scalar()
    if subscription_id is None:
        raise CommandError(
            f'schema "{schema}" has no subscription "{subscription_name}" to {stream_uuid}'
        )
    return str(column_type), int(subscription_id)


def _check_parked_args(
    subscription_name: str, stream_uuid: str, event_numbers: Sequence[int] | None = None
) -> list[int] | None:
    try:
        _validation.check_stream_uuid(subscription_name, "subscription name")
        _validation.check_stream_uuid(stream_uuid, "stream")
        if event_numbers is not None:
            event_numbers = list(event_numbers)
        return _validation.check_event_numbers(event_numbers, "event numbers")
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _json_payload(value: Any) -> tuple[Any, str]:
    """A payload as JSON can hold it, and its format: json, text or base64."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return value, "json"
    raw = bytes(value)
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _parked_json(entry: ParkedEvent, replay_requested: bool) -> str:
    event = entry.event
    data, data_format = _json_payload(event.data)
    metadata, metadata_format = _json_payload(event.metadata)
    return json.dumps(
        {
            "subscription_name": entry.subscription_name,
            "subscription_stream": entry.stream_uuid,
            "event_number": event.event_number,
            "event_id": event.event_id,
            "stream_uuid": event.stream_uuid,
            "stream_version": event.stream_version,
            "event_type": event.event_type,
            "data": data,
            "data_format": data_format,
            "metadata": metadata,
            "metadata_format": metadata_format,
            "causation_id": event.causation_id,
            "correlation_id": event.correlation_id,
            "created_at": event.created_at.isoformat(),
            "reason": entry.reason,
            "parked_at": entry.parked_at.isoformat(),
            "replay_requested": replay_requested,
        },
        default=str,
    )


def parked_list(
    url: str | URL,
    subscription_name: str,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
    as_json: bool = False,
) -> list[ParkedEvent]:
    """The parked events of a subscription, in event order; printed unless ``quiet``.

    One line per event: its number in the subscribed stream, type, original
    stream and version, when it was parked and why (``--json``: one JSON object
    per line, payloads the serializer could not read given as text or base64).
    An unknown subscription is a failure here, so that a mistyped name shows.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    _check_parked_args(subscription_name, stream_uuid)
    with (
        _failures(f'cannot list the parked events of "{subscription_name}"', given),
        _connection(url_) as conn,
    ):
        column_type, subscription_id = _parked_target(
            conn, given, schema, subscription_name, stream_uuid
        )
        serializer = JsonbSerializer() if column_type == "jsonb" else JsonSerializer()
        found = parked.list_parked(
            conn, schema, column_type, serializer, stream_uuid, subscription_name
        )
        requested = {
            ref.event_number for ref in parked.replay_requested(conn, schema, subscription_id)
        }
    if as_json:
        for entry in found:
            _say(quiet, _parked_json(entry, entry.event.event_number in requested))
        return found
    _say(
        quiet,
        f'Subscription "{subscription_name}" to {stream_uuid} (schema "{schema}"): '
        f"{len(found)} parked event{'' if len(found) == 1 else 's'}",
    )
    for entry in found:
        event = entry.event
        mark = "  [replay requested]" if event.event_number in requested else ""
        _say(
            quiet,
            f"  {event.event_number:>8}  {event.event_type}  "
            f"{event.stream_uuid}@{event.stream_version}  "
            f"{entry.parked_at.isoformat(timespec='seconds')}  "
            f"{' '.join(entry.reason.split())}{mark}",
        )
    return found


def _parked_change(
    action: str,
    url: str | URL,
    subscription_name: str,
    schema: str,
    stream_uuid: str,
    event_numbers: Sequence[int] | None,
) -> int:
    given, url_ = _parse_url(url)
    _check_schema(schema)
    numbers = _check_parked_args(subscription_name, stream_uuid, event_numbers)
    change = parked.request_replay if action == "replay" else parked.discard
    with (
        _failures(f'cannot {action} the parked events of "{subscription_name}"', given),
        _connection(url_) as conn,
        conn.begin(),
    ):
        _parked_target(conn, given, schema, subscription_name, stream_uuid)
        return change(conn, schema, stream_uuid, subscription_name, numbers)


def parked_replay(
    url: str | URL,
    subscription_name: str,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
    event_numbers: Sequence[int] | None = None,
) -> int:
    """Queue a subscription's parked events (all, or those numbered) for redelivery.

    The process running the subscription delivers them in order (at once when
    it is live, else when it next starts). Returns how many were queued.
    """
    count = _parked_change("replay", url, subscription_name, schema, stream_uuid, event_numbers)
    _say(
        quiet,
        f'{count} parked event{"" if count == 1 else "s"} of "{subscription_name}" '
        "queued for replay.",
    )
    return count


def parked_discard(
    url: str | URL,
    subscription_name: str,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
    event_numbers: Sequence[int] | None = None,
) -> int:
    """Remove a subscription's parked events (all, or those numbered) undelivered; how many."""
    count = _parked_change("discard", url, subscription_name, schema, stream_uuid, event_numbers)
    _say(
        quiet,
        f'{count} parked event{"" if count == 1 else "s"} of "{subscription_name}" discarded.',
    )
    return count
