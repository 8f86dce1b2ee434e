"""Creating an event store schema: tables, functions, triggers, the ``$all`` row.

The functions and triggers are the reference's (v1.4) text for text, so a
database initialised here behaves identically under the Elixir library. Every
path that builds the schema -- ``EventStore.init()``, the Alembic branch (online
and ``--sql``) and the upgrades of older databases -- takes its DDL from here.

This package's own additions (the ``parked_events`` table) are kept apart from
the reference's layout and versioned apart: :func:`additions_ddl` creates them
with idempotent statements, run after the reference's DDL by ``init()`` (on a
new schema and on an existing one), by the ``migrate`` command and by the
Alembic revision ``eventstore_additions_1``. The reference's tables, functions
and ``schema_migrations`` rows are never changed by them.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from ..models import ADDITION_TABLES, metadata_for
from .connection import _LOCK_NOT_AVAILABLE, _sqlstate
from .sequencer_sql import (
    HELP_PROCEDURE,
    drop_sequencer_ddl,
    installed_revision_sql,
    sequencer_ddl,
)
from .sequencer_sql import (
    REVISION as SEQUENCER_REVISION,
)

logger = logging.getLogger("sqlalchemy_eventstore.schema")

__all__ = [
    "ADDITIONS_NAME",
    "SCHEMA_LOCK_KEY",
    "SCHEMA_VERSION",
    "add_additions",
    "additions_ddl",
    "additions_incomplete",
    "additions_missing",
    "create_schema",
    "delete_function_ddl",
    "drop_additions_ddl",
    "drop_schema_ddl",
    "exception_function_ddl",
    "function_and_trigger_ddl",
    "lock_schema_changes",
    "notification_trigger_ddl",
    "notify_function_ddl",
    "protection_trigger_ddl",
    "quote_ident",
    "record_version_ddl",
    "schema_ddl",
    "schema_exists",
    "table_ddl",
]

#: The reference's schema version that this layout corresponds to.
SCHEMA_VERSION = (1, 3, 2)

#: How ``eventstore migrations`` names the additions' step (one step so far;
#: a later one would be "additions 2", with its own Alembic revision).
ADDITIONS_NAME = "additions 1"

#: Key of the advisory lock held by whatever creates or changes a schema:
#: ``init()`` and the Alembic branch take it for their transaction, the
#: ``migrate`` command for its session. Any constant works as long as every one
#: of them uses the same: it keeps two concurrent initialisers from both
#: creating the schema (``CREATE SCHEMA IF NOT EXISTS`` alone is not safe against
#: a concurrent twin) and two migrations from applying the same step twice.
SCHEMA_LOCK_KEY = 0x6576_7374  # "evst"

_TABLES = ("stream_events", "events", "streams", "subscriptions", "snapshots", "schema_migrations")
# Dropped before the reference's tables (they refer to subscriptions).
_ADDITION_TABLES = tuple(sorted(ADDITION_TABLES))
_FUNCTIONS = ("notify_events()", "event_store_delete()", "event_store_exception()")
_ADDITION_FUNCTIONS = ("eventstore_link_waiting()", "eventstore_sequence(boolean)")


def quote_ident(name: str) -> str:
    """Quote a Postgres identifier (a schema name) for embedding in SQL text."""
    return '"' + name.replace('"', '""') + '"'


def table_ddl(schema: str, column_data_type: str, *, foreign_keys: bool = True) -> list[str]:
    """``CREATE TABLE``/``CREATE INDEX`` of the models, inside ``schema``.

    The statements ``metadata.create_all()`` would send, compiled once for
    PostgreSQL so that they can also be printed (Alembic's ``--sql`` mode).
    ``foreign_keys=False``: the variant without ``stream_events``' foreign keys.
    """
    return _create_tables(schema, column_data_type, additions=False, foreign_keys=foreign_keys)


def _create_tables(
    schema: str, column_data_type: str, *, additions: bool, foreign_keys: bool = True
) -> list[str]:
    """The reference's tables (``additions`` False) or this package's own (True)."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statements: list[str] = []
    for table in metadata_for(column_data_type, schema, foreign_keys=foreign_keys).sorted_tables:
        if (table.name in ADDITION_TABLES) != additions:
            continue
        create = CreateTable(table, if_not_exists=additions)
        statements.append(str(create.compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            create_index = CreateIndex(index, if_not_exists=additions)
            statements.append(str(create_index.compile(dialect=dialect)).strip())
    return statements


def additions_ddl(schema: str) -> list[str]:
    """Idempotent statements creating this package's additions inside ``schema``.

    ``CREATE TABLE IF NOT EXISTS`` (and ``CREATE INDEX IF NOT EXISTS``) of the
    tables in :data:`~sqlalchemy_eventstore.models.ADDITION_TABLES`, compiled
    from their models, then the sequencer's functions and triggers
    (:func:`.sequencer_sql.sequencer_ddl`). They need the reference's
    ``subscriptions`` table (a foreign key refers to it) and change none of
    its tables; the one reference object they touch is the
    ``event_notification`` trigger, re-created with a WHEN clause that only
    this package's sequencer-mode appends ever make false.
    """
    # The additions hold no payload column: the column data type is irrelevant.
    # Then the sequencer's functions and triggers (global_order="sequencer").
    return [*_create_tables(schema, "bytea", additions=True), *sequencer_ddl(schema)]


def exception_function_ddl(schema: str) -> str:
    """The trigger function that refuses a statement (UPDATE of events)."""
    s = quote_ident(schema)
    return f"""
        CREATE OR REPLACE FUNCTION {s}.event_store_exception()
          RETURNS trigger AS $$
        DECLARE
          message text;
        BEGIN
          message := 'EventStore: ' || TG_ARGV[0];

          RAISE EXCEPTION USING MESSAGE = message;
        END;
        $$ LANGUAGE plpgsql;
        """


def delete_function_ddl(schema: str) -> str:
    """The trigger function that refuses DELETE unless hard deletes are on."""
    s = quote_ident(schema)
    # DELETE is refused unless the transaction or session turned on
    # ``eventstore.enable_hard_deletes`` (the store does, around a hard delete).
    return f"""
        CREATE OR REPLACE FUNCTION {s}.event_store_delete()
          RETURNS trigger AS $$
        DECLARE
          message text;
        BEGIN
          IF current_setting('eventstore.enable_hard_deletes', true) = 'on' OR
            current_setting('eventstore.reset', true) = 'on'
          THEN
            -- Allow DELETE
            RETURN OLD;
          ELSE
            -- Prevent DELETE
            message := 'EventStore: ' || TG_ARGV[0];

            RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'feature_not_supported';
          END IF;
        END;
        $$ LANGUAGE plpgsql;
        """


def protection_trigger_ddl(schema: str) -> list[str]:
    """The five triggers that keep events, stream events and streams append-only."""
    s = quote_ident(schema)
    return [
        f"""
        CREATE TRIGGER no_delete_streams
        BEFORE DELETE ON {s}.streams
        FOR EACH STATEMENT
        EXECUTE PROCEDURE {s}.event_store_delete('Cannot delete streams');
        """,
        f"""
        CREATE TRIGGER no_delete_events
        BEFORE DELETE ON {s}.events
        FOR EACH STATEMENT
        EXECUTE PROCEDURE {s}.event_store_delete('Cannot delete events');
        """,
        f"""
        CREATE TRIGGER no_update_events
        BEFORE UPDATE ON {s}.events
        FOR EACH STATEMENT
        EXECUTE PROCEDURE {s}.event_store_exception('Cannot update events');
        """,
        f"""
        CREATE TRIGGER no_delete_stream_events
        BEFORE DELETE ON {s}.stream_events
        FOR EACH STATEMENT
        EXECUTE PROCEDURE {s}.event_store_delete('Cannot delete stream events');
        """,
        f"""
        CREATE TRIGGER no_update_stream_events
        BEFORE UPDATE ON {s}.stream_events
        FOR EACH STATEMENT
        EXECUTE PROCEDURE {s}.event_store_exception('Cannot update stream events');
        """,
    ]


def notify_function_ddl(schema: str) -> str:
    """The NOTIFY function behind subscriptions."""
    s = quote_ident(schema)
    # The NOTIFY that drives subscriptions. It fires once per streams row an
    # append touches (the stream's and $all's), after the row changed, and
    # Postgres delivers it only when the transaction commits -- so listeners
    # never hear of events that a rollback discarded.
    return f"""
        CREATE OR REPLACE FUNCTION {s}.notify_events()
          RETURNS trigger AS $$
        DECLARE
          old_stream_version bigint;
          channel text;
          payload text;
        BEGIN
            -- Payload text contains:
            --  * `stream_uuid`
            --  * `stream_id`
            --  * first `stream_version`
            --  * last `stream_version`
            -- Each separated by a comma (e.g. 'stream-12345,1,1,5')

            IF TG_OP = 'UPDATE' THEN
              old_stream_version := OLD.stream_version + 1;
            ELSE
              old_stream_version := 1;
            END IF;

            channel := TG_TABLE_SCHEMA || '.events';
            payload := NEW.stream_uuid || ',' || NEW.stream_id || ',' || old_stream_version || ',' || NEW.stream_version;

            -- Notify events to listeners
            PERFORM pg_notify(channel, payload);

            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql;
        """


def notification_trigger_ddl(schema: str) -> str:
    """The trigger that calls ``notify_events()`` for each changed streams row."""
    s = quote_ident(schema)
    return f"""
        CREATE TRIGGER event_notification
        AFTER INSERT OR UPDATE ON {s}.streams
        FOR EACH ROW EXECUTE PROCEDURE {s}.notify_events();
        """


def record_version_ddl(schema: str, version: tuple[int, int, int]) -> str:
    """The ``schema_migrations`` row saying ``version`` is applied."""
    return f"""
        INSERT INTO {quote_ident(schema)}.schema_migrations (major_version, minor_version, patch_version)
        VALUES {version};
        """


def function_and_trigger_ddl(schema: str) -> list[str]:
    """The reference's functions and triggers, created inside ``schema``."""
    s = quote_ident(schema)
    return [
        exception_function_ddl(schema),
        delete_function_ddl(schema),
        *protection_trigger_ddl(schema),
        notify_function_ddl(schema),
        f"""
        INSERT INTO {s}.streams (stream_id, stream_uuid, stream_version) VALUES (0, '$all', 0);
        """,
        notification_trigger_ddl(schema),
        record_version_ddl(schema, SCHEMA_VERSION),
    ]


def schema_ddl(schema: str, column_data_type: str, *, foreign_keys: bool = True) -> list[str]:
    """Every statement that creates an event store in ``schema``, in order."""
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}",
        *table_ddl(schema, column_data_type, foreign_keys=foreign_keys),
        *function_and_trigger_ddl(schema),
    ]


def drop_additions_ddl(schema: str) -> list[str]:
    """Statements that drop this package's additions (and nothing of the reference's)."""
    s = quote_ident(schema)
    return [
        *drop_sequencer_ddl(schema, notification_trigger_ddl(schema)),
        "DROP TABLE IF EXISTS " + ", ".join(f"{s}.{table}" for table in _ADDITION_TABLES),
    ]


def drop_schema_ddl(schema: str) -> list[str]:
    """Statements that drop the event store's objects from ``schema``, and nothing else.

    The tables go with their indexes, sequences and triggers; then the
    functions; then the schema itself, but only when it is not ``public`` and
    nothing else is left in it (``DROP SCHEMA`` without ``CASCADE`` refuses a
    schema that still holds objects: that refusal is caught, the schema kept).
    """
    s = quote_ident(schema)
    statements = [
        "DROP TABLE IF EXISTS "
        + ", ".join(f"{s}.{table}" for table in (*_ADDITION_TABLES, *_TABLES)),
        f"DROP PROCEDURE IF EXISTS {s}.{HELP_PROCEDURE}",
        "DROP FUNCTION IF EXISTS "
        + ", ".join(f"{s}.{fn}" for fn in (*_ADDITION_FUNCTIONS, *_FUNCTIONS)),
    ]
    if schema != "public":
        statements.append(
            f"""
        DO $eventstore$
        BEGIN
          DROP SCHEMA IF EXISTS {s};
        EXCEPTION WHEN dependent_objects_still_exist THEN
          NULL;
        END;
        $eventstore$
        """
        )
    return statements


def schema_exists(conn: Connection, schema: str) -> bool:
    """Whether ``schema`` already holds an initialised event store."""
    found = conn.execute(
        text("SELECT to_regclass(:name)"), {"name": f"{quote_ident(schema)}.events"}
    ).scalar()
    return found is not None


def lock_schema_changes(conn: Connection) -> None:
    """Take :data:`SCHEMA_LOCK_KEY` until the caller's transaction ends."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})


def additions_missing(conn: Connection, schema: str) -> list[str]:
    """The addition tables that ``schema`` lacks, sorted (``[]``: all present)."""
    s = quote_ident(schema)
    return [
        table
        for table in _ADDITION_TABLES
        if conn.execute(text("SELECT to_regclass(:name)"), {"name": f"{s}.{table}"}).scalar()
        is None
    ]


def additions_incomplete(conn: Connection, schema: str) -> bool:
    """Whether ``schema`` lacks an addition or has an outdated one: a table, or
    the sequencer's routines at an older :data:`.sequencer_sql.REVISION` (or
    none: made before ``eventstore_help``)."""
    if additions_missing(conn, schema):
        return True
    return _installed_revision(conn, schema) < SEQUENCER_REVISION


def _installed_revision(conn: Connection, schema: str) -> int:
    return int(conn.exec_driver_sql(installed_revision_sql(schema)).scalar() or 0)


def _owns_routines(conn: Connection, schema: str) -> bool:
    """Whether the current role has the privileges of the sequencer's routines'
    owner and of ``streams``' (a cheap first check before trying to replace them)."""
    s = quote_ident(schema)
    found = conn.execute(
        text(
            "SELECT pg_has_role(current_user, p.proowner, 'USAGE') "
            "AND pg_has_role(current_user, c.relowner, 'USAGE') "
            "FROM pg_proc p, pg_class c "
            "WHERE p.oid = to_regprocedure(:procedure) AND c.oid = to_regclass(:streams)"
        ),
        {"procedure": f"{s}.{HELP_PROCEDURE}", "streams": f"{s}.streams"},
    ).scalar()
    return bool(found)


#: How long ``init()`` waits for ``streams``' lock to replace outdated routines
#: (appends queue behind the request meanwhile), before leaving them be.
REPLACE_LOCK_TIMEOUT = "2s"
_INSUFFICIENT_PRIVILEGE = "42501"  # not the owner; no CREATE on the schema


def add_additions(conn: Connection, schema: str, *, strict: bool = True) -> bool:
    """Create or update the additions in an existing event store; True if it did.

    The caller holds :data:`SCHEMA_LOCK_KEY`. When every addition is present
    and current nothing is sent, so an ``init()`` by a role without CREATE
    rights still succeeds on a complete schema. With ``strict=False``
    (``init()``), routines that are only outdated -- they work as they are --
    are replaced if that can be done at once, and otherwise left with a
    warning: when the role may not (not their owner, no CREATE on the schema)
    or ``streams``' lock is not had within :data:`REPLACE_LOCK_TIMEOUT` (a
    long reader holds it; appends queue behind the request). An application
    still starts; ``eventstore migrate``, run as the owner, replaces them.
    """
    if not additions_missing(conn, schema):
        installed = _installed_revision(conn, schema)
        if installed >= SEQUENCER_REVISION:
            return False
        if not strict and installed > 0:
            return _replace_routines_or_warn(conn, schema, installed)
    for statement in additions_ddl(schema):
        conn.exec_driver_sql(statement)
    return True


def _replace_routines_or_warn(conn: Connection, schema: str, installed: int) -> bool:
    """``init()``'s try at replacing outdated routines, in a savepoint."""
    why = "the role does not own them"
    if _owns_routines(conn, schema):
        previous = conn.exec_driver_sql("SELECT current_setting('lock_timeout')").scalar()
        try:
            with conn.begin_nested():
                conn.execute(
                    text("SELECT set_config('lock_timeout', :value, true)"),
                    {"value": REPLACE_LOCK_TIMEOUT},
                )
                for statement in sequencer_ddl(schema):
                    conn.exec_driver_sql(statement)
                conn.execute(
                    text("SELECT set_config('lock_timeout', :value, true)"), {"value": previous}
                )
            return True
        except DBAPIError as error:
            if _sqlstate(error) not in (_INSUFFICIENT_PRIVILEGE, _LOCK_NOT_AVAILABLE):
                raise
            why = str(error.orig).splitlines()[0]
    logger.warning(
        "schema %s: the sequencer's routines are at revision %d, this version's at %d; "
        "they keep working as they are (%s). Run `eventstore migrate` as the schema's "
        "owner to replace them.",
        quote_ident(schema),
        installed,
        SEQUENCER_REVISION,
        why,
    )
    return False


def create_schema(
    conn: Connection,
    schema: str,
    column_data_type: str,
    *,
    additions: bool = True,
    foreign_keys: bool = True,
) -> bool:
    """Create the schema and all its objects unless present; True if created.

    Runs inside the caller's transaction. A transaction-scoped advisory lock
    serialises concurrent initialisers: the second one waits for the first to
    commit, then finds the tables and does nothing (``CREATE SCHEMA IF NOT
    EXISTS`` alone is not safe against a concurrent twin). With ``additions``
    (the default), this package's additions are created too -- also in a
    schema that already existed (made by the reference, or by an older version
    of this package), which still counts as not created (False).
    """
    lock_schema_changes(conn)
    created = False
    if not schema_exists(conn, schema):
        for statement in schema_ddl(schema, column_data_type, foreign_keys=foreign_keys):
            conn.exec_driver_sql(statement)
        created = True
    if additions:
        add_additions(conn, schema, strict=False)
    return created
