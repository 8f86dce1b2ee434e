"""The Postgres schema: layout, initialisation, isolation, triggers and NOTIFY.

Ports the reference's schema_test.exs, storage/schema_test.exs,
multi_event_store_test.exs (reading and writing parts) and
storage/protect_against_update_and_delete_test.exs. The expected layout below
is the reference's initialiser (EventStore v1.4, schema version 1.3.2).
"""

from __future__ import annotations

import multiprocessing
import select
import threading
import uuid

import psycopg2
import pytest
from psycopg2 import sql as pgsql
from sqlalchemy import NullPool, create_engine, text
from sqlalchemy.exc import DBAPIError

from sqlalchemy_eventstore import ALL_STREAM, EventData, EventStore, SnapshotData
from sqlalchemy_eventstore.errors import StreamNotFoundError

# -- the reference's layout -------------------------------------------------------

SERIAL = "nextval('{table}_{column}_seq'::regclass)"


def expected_columns(data_type: str) -> dict[str, list[tuple]]:
    """(column, type, nullable, default) per table, in column order."""
    return {
        "streams": [
            ("stream_id", "bigint", "NO", SERIAL.format(table="streams", column="stream_id")),
            ("stream_uuid", "text", "NO", None),
            ("stream_version", "bigint", "NO", "0"),
            ("created_at", "timestamp with time zone", "NO", "now()"),
            ("deleted_at", "timestamp with time zone", "YES", None),
        ],
        "events": [
            ("event_id", "uuid", "NO", None),
            ("event_type", "text", "NO", None),
            ("causation_id", "uuid", "YES", None),
            ("correlation_id", "uuid", "YES", None),
            ("data", data_type, "NO", None),
            ("metadata", data_type, "YES", None),
            ("created_at", "timestamp with time zone", "NO", "now()"),
        ],
        "stream_events": [
            ("event_id", "uuid", "NO", None),
            ("stream_id", "bigint", "NO", None),
            ("stream_version", "bigint", "NO", None),
            ("original_stream_id", "bigint", "YES", None),
            ("original_stream_version", "bigint", "YES", None),
        ],
        "subscriptions": [
            (
                "subscription_id",
                "bigint",
                "NO",
                SERIAL.format(table="subscriptions", column="subscription_id"),
            ),
            ("stream_uuid", "text", "NO", None),
            ("subscription_name", "text", "NO", None),
            ("last_seen", "bigint", "YES", None),
            ("created_at", "timestamp with time zone", "NO", "now()"),
        ],
        "snapshots": [
            ("source_uuid", "text", "NO", None),
            ("source_version", "bigint", "NO", None),
            ("source_type", "text", "NO", None),
            ("data", data_type, "NO", None),
            ("metadata", data_type, "YES", None),
            ("created_at", "timestamp with time zone", "NO", "now()"),
        ],
        "schema_migrations": [
            ("major_version", "integer", "NO", None),
            ("minor_version", "integer", "NO", None),
            ("patch_version", "integer", "NO", None),
            ("migrated_at", "timestamp with time zone", "NO", "now()"),
        ],
    }


EXPECTED_INDEXES = {
    (
        "streams",
        "streams_pkey",
        "CREATE UNIQUE INDEX streams_pkey ON streams USING btree (stream_id)",
    ),
    (
        "streams",
        "ix_streams_stream_uuid",
        "CREATE UNIQUE INDEX ix_streams_stream_uuid ON streams USING btree (stream_uuid)",
    ),
    ("events", "events_pkey", "CREATE UNIQUE INDEX events_pkey ON events USING btree (event_id)"),
    (
        "stream_events",
        "stream_events_pkey",
        "CREATE UNIQUE INDEX stream_events_pkey ON stream_events USING btree (event_id, stream_id)",
    ),
    (
        "stream_events",
        "ix_stream_events",
        "CREATE UNIQUE INDEX ix_stream_events ON stream_events "
        "USING btree (stream_id, stream_version)",
    ),
    (
        "subscriptions",
        "subscriptions_pkey",
        "CREATE UNIQUE INDEX subscriptions_pkey ON subscriptions USING btree (subscription_id)",
    ),
    (
        "subscriptions",
        "ix_subscriptions_stream_uuid_subscription_name",
        "CREATE UNIQUE INDEX ix_subscriptions_stream_uuid_subscription_name ON subscriptions "
        "USING btree (stream_uuid, subscription_name)",
    ),
    (
        "snapshots",
        "snapshots_pkey",
        "CREATE UNIQUE INDEX snapshots_pkey ON snapshots USING btree (source_uuid)",
    ),
    (
        "schema_migrations",
        "schema_migrations_pkey",
        "CREATE UNIQUE INDEX schema_migrations_pkey ON schema_migrations "
        "USING btree (major_version, minor_version, patch_version)",
    ),
}

EXPECTED_CONSTRAINTS = {
    ("streams", "streams_pkey", "PRIMARY KEY (stream_id)"),
    ("events", "events_pkey", "PRIMARY KEY (event_id)"),
    ("stream_events", "stream_events_pkey", "PRIMARY KEY (event_id, stream_id)"),
    (
        "stream_events",
        "stream_events_event_id_fkey",
        "FOREIGN KEY (event_id) REFERENCES events(event_id)",
    ),
    (
        "stream_events",
        "stream_events_stream_id_fkey",
        "FOREIGN KEY (stream_id) REFERENCES streams(stream_id)",
    ),
    (
        "stream_events",
        "stream_events_original_stream_id_fkey",
        "FOREIGN KEY (original_stream_id) REFERENCES streams(stream_id)",
    ),
    ("subscriptions", "subscriptions_pkey", "PRIMARY KEY (subscription_id)"),
    ("snapshots", "snapshots_pkey", "PRIMARY KEY (source_uuid)"),
    (
        "schema_migrations",
        "schema_migrations_pkey",
        "PRIMARY KEY (major_version, minor_version, patch_version)",
    ),
}

EXPECTED_TRIGGERS = {
    (
        "streams",
        "no_delete_streams",
        "CREATE TRIGGER no_delete_streams BEFORE DELETE ON streams FOR EACH STATEMENT "
        "EXECUTE FUNCTION event_store_delete('Cannot delete streams')",
    ),
    (
        "streams",
        "event_notification",
        "CREATE TRIGGER event_notification AFTER INSERT OR UPDATE ON streams FOR EACH ROW "
        "EXECUTE FUNCTION notify_events()",
    ),
    (
        "events",
        "no_delete_events",
        "CREATE TRIGGER no_delete_events BEFORE DELETE ON events FOR EACH STATEMENT "
        "EXECUTE FUNCTION event_store_delete('Cannot delete events')",
    ),
    (
        "events",
        "no_update_events",
        "CREATE TRIGGER no_update_events BEFORE UPDATE ON events FOR EACH STATEMENT "
        "EXECUTE FUNCTION event_store_exception('Cannot update events')",
    ),
    (
        "stream_events",
        "no_delete_stream_events",
        "CREATE TRIGGER no_delete_stream_events BEFORE DELETE ON stream_events FOR EACH STATEMENT "
        "EXECUTE FUNCTION event_store_delete('Cannot delete stream events')",
    ),
    (
        "stream_events",
        "no_update_stream_events",
        "CREATE TRIGGER no_update_stream_events BEFORE UPDATE ON stream_events FOR EACH STATEMENT "
        "EXECUTE FUNCTION event_store_exception('Cannot update stream events')",
    ),
}


# -- this package's additions (beside the reference's layout, which they leave alone) --

ADDITION_COLUMNS = {
    "parked_events": [
        ("subscription_id", "bigint", "NO", None),
        ("event_number", "bigint", "NO", None),
        ("event_id", "uuid", "NO", None),
        ("partition_key", "text", "YES", None),
        ("reason", "text", "NO", None),
        ("parked_at", "timestamp with time zone", "NO", "now()"),
        ("replay_requested", "boolean", "NO", "false"),
    ],
}

ADDITION_COLUMNS["unsequenced"] = [
    ("seq", "bigint", "NO", "nextval('unsequenced_seq_seq'::regclass)"),
    ("stream_id", "bigint", "NO", None),
    ("first_version", "bigint", "NO", None),
    ("last_version", "bigint", "NO", None),
]

ADDITION_COLUMNS["sequencer_state"] = [
    ("run", "bigint", "NO", None),
    ("numbered_through", "bigint", "NO", None),
    ("gaps", "ARRAY", "NO", "'{}'::bigint[]"),
    ("gap_horizons", "ARRAY", "NO", "'{}'::bigint[]"),
]

ADDITION_INDEXES = {
    (
        "sequencer_state",
        "sequencer_state_pkey",
        "CREATE UNIQUE INDEX sequencer_state_pkey ON sequencer_state USING btree (run)",
    ),
    (
        "unsequenced",
        "unsequenced_pkey",
        "CREATE UNIQUE INDEX unsequenced_pkey ON unsequenced USING btree (seq)",
    ),
    (
        "parked_events",
        "parked_events_pkey",
        "CREATE UNIQUE INDEX parked_events_pkey ON parked_events "
        "USING btree (subscription_id, event_number)",
    ),
}

# The sequencer's: a trigger numbering waiting appends before any $all update,
# and the reference's notification trigger re-created with a WHEN clause that
# only sequencer-mode appends make false (their NOTIFY comes per batch).
REFERENCE_NOTIFICATION_TRIGGER = (
    "streams",
    "event_notification",
    "CREATE TRIGGER event_notification AFTER INSERT OR UPDATE ON streams FOR EACH ROW "
    "EXECUTE FUNCTION notify_events()",
)
ADDITION_TRIGGERS = {
    (
        "streams",
        "eventstore_link_waiting",
        "CREATE TRIGGER eventstore_link_waiting BEFORE UPDATE ON streams FOR EACH ROW "
        "WHEN ((old.stream_id = 0)) EXECUTE FUNCTION eventstore_link_waiting()",
    ),
    (
        "streams",
        "event_notification",
        "CREATE TRIGGER event_notification AFTER INSERT OR UPDATE ON streams FOR EACH ROW "
        "WHEN ((new.stream_uuid IS DISTINCT FROM "
        "current_setting('eventstore.quiet_stream'::text, true))) "
        "EXECUTE FUNCTION notify_events()",
    ),
}

ADDITION_CONSTRAINTS = {
    ("sequencer_state", "sequencer_state_pkey", "PRIMARY KEY (run)"),
    ("unsequenced", "unsequenced_pkey", "PRIMARY KEY (seq)"),
    ("parked_events", "parked_events_pkey", "PRIMARY KEY (subscription_id, event_number)"),
    (
        "parked_events",
        "parked_events_subscription_id_fkey",
        "FOREIGN KEY (subscription_id) REFERENCES subscriptions(subscription_id) ON DELETE CASCADE",
    ),
}


def catalog_rows(admin_engine, schema: str, query: str) -> set[tuple]:
    """Rows of a catalog query, with the schema's qualification stripped."""
    prefixes = (f'"{schema}".', f"{schema}.")

    def strip(value):
        if isinstance(value, str):
            for prefix in prefixes:
                value = value.replace(prefix, "")
        return value

    with admin_engine.connect() as conn:
        rows = conn.execute(text(query), {"schema": schema}).all()
    return {tuple(strip(v) for v in row) for row in rows}


@pytest.mark.parametrize("data_type", ["bytea", "jsonb"])
def test_tables_and_columns_match_the_reference(make_store, admin_engine, data_type):
    store = make_store(column_data_type=data_type)

    with admin_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT table_name, column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = :schema "
                "ORDER BY table_name, ordinal_position"
            ),
            {"schema": store.schema},
        ).all()
    found: dict[str, list[tuple]] = {}
    for table, column, type_, nullable, default in rows:
        if default is not None:
            default = default.replace(f"{store.schema}.", "")
        found.setdefault(table, []).append((column, type_, nullable, default))

    assert found == {**expected_columns(data_type), **ADDITION_COLUMNS}


def test_indexes_match_the_reference(store, admin_engine):
    indexes = catalog_rows(
        admin_engine,
        store.schema,
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :schema",
    )
    assert indexes == EXPECTED_INDEXES | ADDITION_INDEXES


def test_constraints_match_the_reference(store, admin_engine):
    constraints = catalog_rows(
        admin_engine,
        store.schema,
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        # PostgreSQL 18 lists NOT NULL as constraints too: the columns test covers them.
        "WHERE n.nspname = :schema AND k.contype <> 'n'",
    )
    assert constraints == EXPECTED_CONSTRAINTS | ADDITION_CONSTRAINTS


FOREIGN_KEYS = {
    c for c in EXPECTED_CONSTRAINTS if c[0] == "stream_events" and c[2].startswith("FOREIGN KEY")
}


def test_variant_without_foreign_keys_differs_only_by_them(make_store, admin_engine, driver):
    store = make_store(driver=driver, foreign_keys=False)
    constraints = catalog_rows(
        admin_engine,
        store.schema,
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND k.contype <> 'n'",
    )
    indexes = catalog_rows(
        admin_engine,
        store.schema,
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = :schema",
    )
    assert len(FOREIGN_KEYS) == 3
    assert constraints == (EXPECTED_CONSTRAINTS | ADDITION_CONSTRAINTS) - FOREIGN_KEYS
    assert indexes == EXPECTED_INDEXES | ADDITION_INDEXES


def test_variant_without_foreign_keys_takes_the_reference_writes(make_store, admin_engine):
    """Rows written the reference's way (events, then stream_events, then streams)."""
    store = make_store(foreign_keys=False)
    store.append_to_stream("mine", 0, [EventData("Mine", {"n": 1})])
    s = f'"{store.schema}"'
    event_id = str(uuid.uuid4())
    with admin_engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {s}.streams (stream_uuid, stream_version) VALUES ('theirs', 1)"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {s}.events (event_id, event_type, data) "
            f"VALUES ('{event_id}', 'Theirs', convert_to('{{\"n\": 2}}', 'UTF8'))"
        )
        conn.exec_driver_sql(
            f"INSERT INTO {s}.stream_events (event_id, stream_id, stream_version, "
            f"original_stream_id, original_stream_version) "
            f"SELECT CAST('{event_id}' AS uuid), stream_id, 1, stream_id, 1 FROM {s}.streams "
            f"WHERE stream_uuid = 'theirs' UNION ALL "
            f"SELECT CAST('{event_id}' AS uuid), 0, 2, stream_id, 1 FROM {s}.streams "
            f"WHERE stream_uuid = 'theirs'"
        )
        conn.exec_driver_sql(f"UPDATE {s}.streams SET stream_version = 2 WHERE stream_id = 0")
    events = store.read_all_streams_forward()
    assert [(e.stream_uuid, e.data) for e in events] == [("mine", {"n": 1}), ("theirs", {"n": 2})]
    store.append_to_stream("theirs", 1, [EventData("Mine", {"n": 3})])
    assert [e.event_number for e in store.read_stream_forward("theirs")] == [1, 2]


def test_triggers_and_functions_match_the_reference(store, admin_engine):
    triggers = catalog_rows(
        admin_engine,
        store.schema,
        "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND NOT t.tgisinternal",
    )
    functions = catalog_rows(
        admin_engine,
        store.schema,
        "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = :schema",
    )
    sequences = catalog_rows(
        admin_engine,
        store.schema,
        "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = :schema",
    )

    assert triggers == (EXPECTED_TRIGGERS - {REFERENCE_NOTIFICATION_TRIGGER}) | ADDITION_TRIGGERS
    assert functions == {
        ("event_store_exception",),
        ("event_store_delete",),
        ("notify_events",),
        ("eventstore_link_waiting",),
        ("eventstore_sequence",),
        ("eventstore_help",),  # a procedure
    }
    assert sequences == {
        ("streams_stream_id_seq",),
        ("subscriptions_subscription_id_seq",),
        ("unsequenced_seq_seq",),
    }


def test_initial_rows(store, admin_engine):
    with admin_engine.connect() as conn:
        streams = conn.exec_driver_sql(
            "SELECT stream_id, stream_uuid, stream_version, deleted_at "
            f'FROM "{store.schema}".streams'
        ).all()
        migrations = conn.exec_driver_sql(
            "SELECT major_version, minor_version, patch_version "
            f'FROM "{store.schema}".schema_migrations'
        ).all()
        counts = [
            conn.exec_driver_sql(f'SELECT count(*) FROM "{store.schema}".{table}').scalar()
            for table in ("events", "stream_events", "subscriptions", "snapshots")
        ]

    assert [tuple(r) for r in streams] == [(0, "$all", 0, None)]
    assert [tuple(r) for r in migrations] == [(1, 3, 2)]
    assert counts == [0, 0, 0, 0]


# -- init ------------------------------------------------------------------------


def all_rows(admin_engine, schema: str) -> int:
    with admin_engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                f"SELECT count(*) FROM \"{schema}\".streams WHERE stream_uuid = '$all'"
            ).scalar()
        )


def test_init_is_idempotent(make_store, admin_engine):
    store = make_store(init=False)

    assert store.init() is True
    store.append_to_stream("s", 0, [EventData("E", {"n": 1})])
    assert store.init() is False
    # A second store object on the same schema finds it initialised too.
    again = make_store(schema=store.schema, init=False)
    assert again.init() is False

    assert [e.data for e in again.read_stream_forward("s")] == [{"n": 1}]
    assert all_rows(admin_engine, store.schema) == 1


def test_store_before_init_has_no_tables(make_store):
    store = make_store(init=False)

    with pytest.raises(DBAPIError):
        store.read_all_streams_forward()

    store.init()
    assert store.read_all_streams_forward() == []


def test_concurrent_init_from_threads(make_store, admin_engine, start_gate, driver):
    schema = f"es_{uuid.uuid4().hex[:12]}"
    stores = [make_store(schema=schema, init=False, driver=driver) for _ in range(8)]

    results = start_gate(len(stores), lambda i: stores[i].init())

    assert sorted(results, key=repr) == [False] * 7 + [True], results
    assert all_rows(admin_engine, schema) == 1
    stores[0].append_to_stream("s", 0, [EventData("E", {})])
    assert len(stores[-1].read_all_streams_forward()) == 1


def _init_in_process(url: str, schema: str, barrier, results) -> None:
    """Run in a spawned process: two threads initialise the same schema at once."""

    def one() -> None:
        store = EventStore(url, schema=schema)
        try:
            barrier.wait(60)
            results.put(store.init())
        except BaseException as error:  # report, never hang the parent
            results.put(repr(error))
        finally:
            store.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_concurrent_init_from_processes(make_store, admin_engine, database_url):
    schema = f"es_{uuid.uuid4().hex[:12]}"
    make_store(schema=schema, init=False)  # registers the schema for cleanup
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    url = database_url.render_as_string(hide_password=False)
    processes = [
        context.Process(target=_init_in_process, args=(url, schema, barrier, results))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in range(4)]
    for process in processes:
        process.join(60)

    assert [p.exitcode for p in processes] == [0, 0]
    assert sorted(outcomes, key=repr) == [False, False, False, True], outcomes
    assert all_rows(admin_engine, schema) == 1
    with admin_engine.connect() as conn:
        migrations = conn.exec_driver_sql(
            f'SELECT count(*) FROM "{schema}".schema_migrations'
        ).scalar()
    assert migrations == 1


# -- isolation between schemas ------------------------------------------------------


def make_events(count: int) -> list[EventData]:
    return [
        EventData(
            "TestEvent",
            {"n": n},
            metadata={"m": n},
            causation_id=str(uuid.uuid4()),
            correlation_id=str(uuid.uuid4()),
        )
        for n in range(1, count + 1)
    ]


def test_append_to_one_of_two_stores(make_store, driver):
    first = make_store(driver=driver)
    second = make_store(driver=driver)
    stream_uuid = str(uuid.uuid4())

    first.append_to_stream(stream_uuid, 0, make_events(3))

    assert [e.data["n"] for e in first.stream_forward(stream_uuid)] == [1, 2, 3]
    assert len(first.read_all_streams_forward()) == 3
    with pytest.raises(StreamNotFoundError):
        second.read_stream_forward(stream_uuid)
    with pytest.raises(StreamNotFoundError):
        second.stream_forward(stream_uuid)
    assert second.read_all_streams_forward() == []
    assert [s.stream_uuid for s in second.paginate_streams().entries] == [ALL_STREAM]
    assert second.stream_info(ALL_STREAM).stream_version == 0


def test_append_to_two_stores(make_store, driver):
    first = make_store(driver=driver)
    second = make_store(driver=driver)
    stream_uuid = str(uuid.uuid4())
    events = make_events(3)

    first.append_to_stream(stream_uuid, 0, events)
    second.append_to_stream(stream_uuid, 0, events)

    for store in (first, second):
        for read in (store.read_stream_forward(stream_uuid), store.read_all_streams_forward()):
            assert [(e.stream_uuid, e.stream_version, e.event_number) for e in read] == [
                (stream_uuid, n, n) for n in (1, 2, 3)
            ]
            assert [(e.data, e.metadata, e.causation_id, e.correlation_id) for e in read] == [
                (ev.data, ev.metadata, ev.causation_id, ev.correlation_id) for ev in events
            ]
        assert store.stream_info(stream_uuid).stream_id == 1
    second.append_to_stream(stream_uuid, 3, make_events(1))
    assert first.stream_info(stream_uuid).stream_version == 3
    assert second.stream_info(stream_uuid).stream_version == 4


def test_stores_sharing_one_engine_stay_isolated(make_store, admin_engine):
    first = make_store()
    schema = f"es_{uuid.uuid4().hex[:12]}"
    second = EventStore(first.engine, schema=schema)
    try:
        assert second.engine is first.engine
        second.init()
        first.append_to_stream("s", 0, make_events(2))
        second.append_to_stream("s", 0, make_events(1))

        assert len(first.read_stream_forward("s")) == 2
        assert len(second.read_stream_forward("s")) == 1
        second.close()
        # Closing a store that shares an engine leaves the engine working.
        assert len(first.read_all_streams_forward()) == 2
    finally:
        second.close()
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_schema_name_needing_quotes(make_store, admin_engine, database_url, driver):
    schema = f"Tenant-{uuid.uuid4().hex[:8]} One"
    store = make_store(schema=schema, driver=driver)
    with Listener(database_url, schema) as listener:
        store.append_to_stream("s", 0, make_events(2))
        store.record_snapshot(SnapshotData("s", 2, "T", {"x": 1}))

        payloads = listener.wait_for(lambda p: {"s,1,1,2", "$all,0,1,2"} <= set(p))

    assert {"s,1,1,2", "$all,0,1,2"} <= set(payloads)
    assert [e.data["n"] for e in store.read_stream_forward("s")] == [1, 2]
    assert store.read_snapshot("s").data == {"x": 1}
    assert [s.stream_uuid for s in store.paginate_streams().entries] == ["$all", "s"]
    assert store.init() is False
    with admin_engine.connect() as conn:
        assert conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".events').scalar() == 2


# -- triggers -------------------------------------------------------------------------


@pytest.fixture
def filled_store(store):
    store.append_to_stream("s", 0, make_events(2))
    return store


def sqlstate(error: DBAPIError) -> str:
    return error.orig.pgcode  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE {s}.events SET created_at = now()", "EventStore: Cannot update events"),
        ("UPDATE {s}.events SET event_type = 'x'", "EventStore: Cannot update events"),
        ("UPDATE {s}.stream_events SET stream_id = 1", "EventStore: Cannot update stream events"),
    ],
)
def test_direct_updates_are_rejected(filled_store, admin_engine, statement, message):
    with pytest.raises(DBAPIError, match=message), admin_engine.connect() as conn:
        conn.exec_driver_sql(statement.format(s=f'"{filled_store.schema}"'))

    assert [e.event_type for e in filled_store.read_all_streams_forward()] == ["TestEvent"] * 2


@pytest.mark.parametrize("table", ["events", "streams", "stream_events"])
def test_direct_deletes_are_rejected(filled_store, admin_engine, table):
    expected = "EventStore: Cannot delete " + table.replace("_", " ")
    with pytest.raises(DBAPIError, match=expected) as info, admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{filled_store.schema}".{table}')

    assert sqlstate(info.value) == "0A000"  # feature_not_supported
    assert len(filled_store.read_stream_forward("s")) == 2


@pytest.fixture
def private_engine(database_url):
    """Connections nobody else reuses, for session settings (no pool)."""
    engine = create_engine(database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("setting", ["eventstore.enable_hard_deletes", "eventstore.reset"])
def test_deletes_are_allowed_when_the_session_enables_them(filled_store, private_engine, setting):
    schema = filled_store.schema
    with private_engine.connect() as conn:
        conn.exec_driver_sql(f"SET {setting} = 'on'")
        for table in ("stream_events", "events", "streams"):
            conn.exec_driver_sql(f'DELETE FROM "{schema}".{table}')
        counts = [
            conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".{table}').scalar()
            for table in ("stream_events", "events", "streams")
        ]
        conn.commit()

    assert counts == [0, 0, 0]


def test_set_local_allows_deletes_in_that_transaction_only(filled_store, private_engine):
    schema = filled_store.schema
    with private_engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql("SET LOCAL eventstore.enable_hard_deletes = 'on'")
            deleted = conn.exec_driver_sql(
                f'DELETE FROM "{schema}".stream_events WHERE stream_id = 0'
            ).rowcount
        with pytest.raises(DBAPIError, match="Cannot delete stream events"), conn.begin():
            conn.exec_driver_sql(f'DELETE FROM "{schema}".stream_events')

    assert deleted == 2
    assert filled_store.read_all_streams_forward() == []
    assert len(filled_store.read_stream_forward("s")) == 2


def test_enable_hard_deletes_other_than_on_still_rejects(filled_store, private_engine):
    with private_engine.connect() as conn:
        conn.exec_driver_sql("SET eventstore.enable_hard_deletes = 'true'")
        with pytest.raises(DBAPIError, match="Cannot delete events"):
            conn.exec_driver_sql(f'DELETE FROM "{filled_store.schema}".events')


# -- NOTIFY -------------------------------------------------------------------------


class Listener:
    """A raw psycopg2 connection LISTENing on ``"<schema>.events"``."""

    def __init__(self, database_url, schema: str) -> None:
        self.channel = f"{schema}.events"
        params = database_url.translate_connect_args(username="user", database="dbname")
        params.update(database_url.query)  # the embedded server's socket dir is ?host=
        self.conn = psycopg2.connect(**params)
        self.conn.autocommit = True
        with self.conn.cursor() as cursor:
            # One quoted identifier: "schema.events", not "schema"."events".
            cursor.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
        self.payloads: list[str] = []

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()

    def wait_for(self, done, limit: float = 30.0) -> list[str]:
        """Collect payloads until ``done(payloads)`` holds (or give up after ``limit``s)."""
        remaining = int(limit * 10)
        while not done(self.payloads) and remaining > 0:
            if select.select([self.conn], [], [], 0.1)[0]:
                self.conn.poll()
                while self.conn.notifies:
                    notification = self.conn.notifies.pop(0)
                    assert notification.channel == self.channel
                    self.payloads.append(notification.payload)
            remaining -= 1
        return list(self.payloads)

    def sync(self, admin_engine) -> list[str]:
        """Everything notified so far: a sentinel sent now arrives after it."""
        sentinel = f"sentinel-{uuid.uuid4().hex}"
        with admin_engine.connect() as conn:
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {
                    "channel": self.channel,
                    "payload": sentinel,
                },
            )
        payloads = self.wait_for(lambda p: sentinel in p)
        assert sentinel in payloads, "the sentinel notification never arrived"
        return [p for p in payloads if not p.startswith("sentinel-")]


def test_append_notifies_stream_and_all(store, database_url, admin_engine):
    with Listener(database_url, store.schema) as listener:
        store.append_to_stream("stream-1", 0, make_events(3))
        store.append_to_stream("stream-1", 3, make_events(2))
        store.append_to_stream("stream-2", 0, make_events(1))
        payloads = listener.sync(admin_engine)

    assert sorted(payloads) == sorted(
        [
            "stream-1,1,1,3",
            "$all,0,1,3",
            "stream-1,1,4,5",
            "$all,0,4,5",
            "stream-2,2,1,1",
            "$all,0,6,6",
        ]
    )
    # Each append's $all notification comes in commit order.
    assert [p for p in payloads if p.startswith("$all")] == [
        "$all,0,1,3",
        "$all,0,4,5",
        "$all,0,6,6",
    ]


def test_link_notifies_the_target_stream(store, database_url, admin_engine):
    store.append_to_stream("source", 0, make_events(2))
    with Listener(database_url, store.schema) as listener:
        store.link_to_stream("target", 0, store.read_stream_forward("source"))
        payloads = listener.sync(admin_engine)

    assert payloads == ["target,2,1,2"]


def test_notifications_only_after_commit(store, database_url, admin_engine):
    with Listener(database_url, store.schema) as listener:
        with store.engine.connect() as conn:
            tx = conn.begin()
            store.append_to_stream("pending", 0, make_events(2), conn=conn)
            before_commit = listener.sync(admin_engine)
            tx.commit()
        after_commit = listener.sync(admin_engine)

    assert before_commit == []
    assert sorted(after_commit) == ["$all,0,1,2", "pending,1,1,2"]


def test_no_notification_on_rollback(store, database_url, admin_engine):
    with Listener(database_url, store.schema) as listener:
        with store.engine.connect() as conn:
            tx = conn.begin()
            store.append_to_stream("discarded", 0, make_events(2), conn=conn)
            tx.rollback()
        store.append_to_stream("kept", 0, make_events(1))
        payloads = listener.sync(admin_engine)

    assert "$all,0,1,1" in payloads
    assert [p.split(",")[0] for p in payloads if not p.startswith("$all")] == ["kept"]
    assert not any(p.startswith("discarded") for p in payloads)


def test_notifications_stay_on_their_schema(make_store, database_url, admin_engine):
    first = make_store()
    second = make_store()
    with Listener(database_url, first.schema) as listener:
        second.append_to_stream("s", 0, make_events(1))
        first.append_to_stream("s", 0, make_events(2))
        payloads = listener.sync(admin_engine)

    assert sorted(payloads) == ["$all,0,1,2", "s,1,1,2"]
