"""Catalog snapshots of an event store schema, and older reference layouts to migrate.

``snapshot`` reads what defines a schema -- tables, columns, types, defaults,
indexes, constraints, triggers, functions (with their source), sequences and
rules -- from information_schema and pg_catalog, with the schema's name taken
out, so two schemas built by different paths compare equal exactly when they
are the same.

``make_reference_v1_3_2`` turns a freshly initialised schema into what the
Elixir library (v1.4) creates: this package's additions removed.
``make_reference_layout`` turns it into the layout the Elixir library had at an
older schema version (v0.14.0: EventStore v0.14-v0.16; v0.17.0: v0.17-v1.0),
undoing the reference's later migrations, so that ``migrate`` can be tested on
the databases it is for.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from sqlalchemy_eventstore.storage.schema import notification_trigger_ddl
from sqlalchemy_eventstore.storage.sequencer_sql import drop_sequencer_ddl

_QUERIES = {
    "tables": """
        SELECT table_name, table_type FROM information_schema.tables
        WHERE table_schema = :schema
    """,
    "columns": """
        SELECT table_name, column_name,
               row_number() OVER (PARTITION BY table_name ORDER BY ordinal_position),
               data_type, udt_name, is_nullable, column_default,
               character_maximum_length, numeric_precision, is_identity, is_generated
        FROM information_schema.columns WHERE table_schema = :schema
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :schema
    """,
    "constraints": """
        SELECT c.relname, k.conname, k.contype, k.condeferrable, pg_get_constraintdef(k.oid)
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :schema
    """,
    "triggers": """
        SELECT c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid)
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :schema AND NOT t.tgisinternal
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_function_result(p.oid), l.lanname, p.prosrc, p.provolatile, p.prosecdef
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_language l ON l.oid = p.prolang
        WHERE n.nspname = :schema
    """,
    "sequences": """
        SELECT sequence_name, data_type, start_value, minimum_value, maximum_value, increment
        FROM information_schema.sequences WHERE sequence_schema = :schema
    """,
    "rules": """
        SELECT tablename, rulename, definition FROM pg_rules WHERE schemaname = :schema
    """,
}


def _strip(value: Any, schema: str) -> Any:
    if isinstance(value, str):
        for prefix in (f'"{schema}".', f"{schema}."):
            value = value.replace(prefix, "")
    return value


def snapshot(conn: Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every definition in ``schema``, sorted, with the schema's qualification removed."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    for name, query in _QUERIES.items():
        rows = conn.execute(text(query), {"schema": schema}).all()
        result[name] = sorted(
            (tuple(_strip(value, schema) for value in row) for row in rows), key=repr
        )
    return result


def objects(conn: Connection, schema: str) -> dict[str, set[str]]:
    """The names of the tables, functions and triggers in ``schema``."""
    found = snapshot(conn, schema)
    return {
        "tables": {row[0] for row in found["tables"]},
        "functions": {row[0] for row in found["functions"]},
        "triggers": {row[1] for row in found["triggers"]},
    }


def schema_present(conn: Connection, schema: str) -> bool:
    return (
        conn.execute(text("SELECT to_regnamespace(:s)"), {"s": f'"{schema}"'}).scalar() is not None
    )


def recorded_versions(conn: Connection, schema: str) -> list[tuple[int, int, int]]:
    rows = conn.exec_driver_sql(
        "SELECT major_version, minor_version, patch_version "
        f'FROM "{schema}".schema_migrations ORDER BY 1, 2, 3'
    ).all()
    return [(int(row[0]), int(row[1]), int(row[2])) for row in rows]


REFERENCE_TABLES = {
    "streams",
    "events",
    "stream_events",
    "subscriptions",
    "snapshots",
    "schema_migrations",
}
# This package's own additions, beside the reference's tables.
ADDITION_TABLES = {"parked_events", "sequencer_state", "unsequenced"}
EVENTSTORE_TABLES = REFERENCE_TABLES | ADDITION_TABLES
REFERENCE_FUNCTIONS = {"event_store_exception", "event_store_delete", "notify_events"}
# The sequencer's functions and procedure (global_order="sequencer"), also additions.
ADDITION_FUNCTIONS = {"eventstore_help", "eventstore_link_waiting", "eventstore_sequence"}
EVENTSTORE_FUNCTIONS = REFERENCE_FUNCTIONS | ADDITION_FUNCTIONS
EVENTSTORE_TRIGGERS = {
    "eventstore_link_waiting",
    "no_delete_streams",
    "event_notification",
    "no_delete_events",
    "no_update_events",
    "no_delete_stream_events",
    "no_update_stream_events",
}

# notify_events() as the reference's v0.14.0 migration created it: AFTER UPDATE
# only, on the unqualified "events" channel.
_NOTIFY_V0_14 = """
CREATE OR REPLACE FUNCTION {s}.notify_events()
  RETURNS trigger AS $function$
DECLARE
  payload text;
BEGIN
    payload := NEW.stream_uuid || ',' || NEW.stream_id || ','
      || (OLD.stream_version + 1) || ',' || NEW.stream_version;

    -- Notify events to listeners
    PERFORM pg_notify('events', payload);

    RETURN NULL;
END;
$function$ LANGUAGE plpgsql;
"""

_TIMESTAMPS = [
    ("streams", "created_at"),
    ("events", "created_at"),
    ("subscriptions", "created_at"),
    ("snapshots", "created_at"),
    ("schema_migrations", "migrated_at"),
]


def make_reference_v1_3_2(conn: Connection, schema: str) -> None:
    """Turn an initialised ``schema`` into what the reference (v1.4) creates: no additions."""
    conn.exec_driver_sql(f'DROP TABLE "{schema}".parked_events')
    for statement in drop_sequencer_ddl(schema, notification_trigger_ddl(schema)):
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(f'DROP TABLE "{schema}".unsequenced, "{schema}".sequencer_state')


def make_reference_layout(conn: Connection, schema: str, version: tuple[int, int, int]) -> None:
    """Turn an initialised ``schema`` into the reference's layout at ``version``.

    ``version`` is (0, 17, 0) or (0, 14, 0); events already stored stay.
    """
    assert version in ((0, 17, 0), (0, 14, 0))
    make_reference_v1_3_2(conn, schema)
    s = f'"{schema}"'
    statements = [
        # 1.3.0 / 1.3.2 / 1.1.0: the notification trigger and function
        f"DROP TRIGGER event_notification ON {s}.streams",
        _NOTIFY_V0_14.format(s=s),
        f"CREATE TRIGGER event_notification AFTER UPDATE ON {s}.streams "
        f"FOR EACH ROW EXECUTE PROCEDURE {s}.notify_events()",
        # 1.2.0: triggers were rules; no soft deletes
        f"DROP TRIGGER no_delete_streams ON {s}.streams",
        f"DROP TRIGGER no_delete_events ON {s}.events",
        f"DROP TRIGGER no_update_events ON {s}.events",
        f"DROP TRIGGER no_delete_stream_events ON {s}.stream_events",
        f"DROP TRIGGER no_update_stream_events ON {s}.stream_events",
        f"DROP FUNCTION {s}.event_store_delete()",
        f"DROP FUNCTION {s}.event_store_exception()",
        f"CREATE RULE no_update_stream_events AS ON UPDATE TO {s}.stream_events DO INSTEAD NOTHING",
        f"CREATE RULE no_delete_stream_events AS ON DELETE TO {s}.stream_events DO INSTEAD NOTHING",
        f"CREATE RULE no_update_events AS ON UPDATE TO {s}.events DO INSTEAD NOTHING",
        f"CREATE RULE no_delete_events AS ON DELETE TO {s}.events DO INSTEAD NOTHING",
        f"ALTER TABLE {s}.streams DROP COLUMN deleted_at",
        f"DELETE FROM {s}.schema_migrations",
    ]
    if version == (0, 14, 0):
        # 0.17.0: timestamps were "timestamp without time zone", in UTC
        for table, column in _TIMESTAMPS:
            statements += [
                f"ALTER TABLE {s}.{table} ALTER COLUMN {column} "
                f"TYPE timestamp without time zone USING {column} AT TIME ZONE 'UTC'",
                f"ALTER TABLE {s}.{table} ALTER COLUMN {column} "
                "SET DEFAULT (now() AT TIME ZONE 'UTC')",
            ]
        rows = [(0, 13, 0), (0, 14, 0)]
    else:
        rows = [(0, 13, 0), (0, 14, 0), (0, 17, 0)]
    statements += [
        f"INSERT INTO {s}.schema_migrations (major_version, minor_version, patch_version) "
        f"VALUES {row}"
        for row in rows
    ]
    for statement in statements:
        conn.exec_driver_sql(statement)
