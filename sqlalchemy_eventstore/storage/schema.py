"""Creating an event store schema: tables, functions, triggers, the ``$all`` row.

The functions and triggers are the reference's (v1.4) text for text, so a
database initialised here behaves identically under the Elixir library.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from ..models import metadata_for

__all__ = ["SCHEMA_VERSION", "create_schema", "function_and_trigger_ddl", "quote_ident"]

#: The reference's schema version that this layout corresponds to.
SCHEMA_VERSION = (1, 3, 2)

# Any constant works as long as every initialiser uses the same one: it only
# has to keep two concurrent ``init()`` calls from both creating the schema.
_INIT_LOCK_KEY = 0x6576_7374  # "evst"


def quote_ident(name: str) -> str:
    """Quote a Postgres identifier (a schema name) for embedding in SQL text."""
    return '"' + name.replace('"', '""') + '"'


def function_and_trigger_ddl(schema: str) -> list[str]:
    """The reference's functions and triggers, created inside ``schema``."""
    s = quote_ident(schema)
    return [
        f"""
        CREATE OR REPLACE FUNCTION {s}.event_store_exception()
          RETURNS trigger AS $$
        DECLARE
          message text;
        BEGIN
          message := 'EventStore: ' || TG_ARGV[0];

          RAISE EXCEPTION USING MESSAGE = message;
        END;
        $$ LANGUAGE plpgsql;
        """,
        # DELETE is refused unless the transaction or session turned on
        # ``eventstore.enable_hard_deletes`` (the store does, around a hard delete).
        f"""
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
        """,
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
        # The NOTIFY that drives subscriptions. It fires once per streams row an
        # append touches (the stream's and $all's), after the row changed, and
        # Postgres delivers it only when the transaction commits -- so listeners
        # never hear of events that a rollback discarded.
        f"""
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
        """,
        f"""
        INSERT INTO {s}.streams (stream_id, stream_uuid, stream_version) VALUES (0, '$all', 0);
        """,
        f"""
        CREATE TRIGGER event_notification
        AFTER INSERT OR UPDATE ON {s}.streams
        FOR EACH ROW EXECUTE PROCEDURE {s}.notify_events();
        """,
        f"""
        INSERT INTO {s}.schema_migrations (major_version, minor_version, patch_version)
        VALUES {SCHEMA_VERSION};
        """,
    ]


def schema_exists(conn: Connection, schema: str) -> bool:
    """Whether ``schema`` already holds an initialised event store."""
    found = conn.execute(
        text("SELECT to_regclass(:name)"), {"name": f"{quote_ident(schema)}.events"}
    ).scalar()
    return found is not None


def create_schema(conn: Connection, schema: str, column_data_type: str) -> bool:
    """Create the schema and all its objects unless present; True if created.

    Runs inside the caller's transaction. A transaction-scoped advisory lock
    serialises concurrent initialisers: the second one waits for the first to
    commit, then finds the tables and does nothing (``CREATE SCHEMA IF NOT
    EXISTS`` alone is not safe against a concurrent twin).
    """
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK_KEY})
    if schema_exists(conn, schema):
        return False
    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    metadata_for(column_data_type, schema).create_all(conn, checkfirst=False)
    for statement in function_and_trigger_ddl(schema):
        conn.exec_driver_sql(statement)
    return True
