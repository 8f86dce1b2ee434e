"""This package's additions to the reference's schema (the parked_events table).

They are created by ``init()`` on a new schema and on one made by the
reference (or an older version of this package), by ``migrate``, and by the
Alembic branch (tested in test_alembic_branch.py), without touching the
reference's tables or ``schema_migrations`` rows.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from sqlalchemy_eventstore import EventData, commands
from sqlalchemy_eventstore.commands import MigrationStatus
from sqlalchemy_eventstore.storage.schema import (
    additions_ddl,
    create_schema,
    drop_additions_ddl,
    drop_schema_ddl,
    notification_trigger_ddl,
)
from sqlalchemy_eventstore.storage.upgrades import upgrade_schema

from .catalog_helpers import (
    REFERENCE_TABLES,
    make_reference_v1_3_2,
    objects,
    recorded_versions,
    snapshot,
)
from .parked_helpers import park_numbers, parked_rows


def test_additions_ddl_is_idempotent_and_leaves_the_reference_alone():
    statements = additions_ddl("tenant")
    # Tables IF NOT EXISTS; the sequencer's functions OR REPLACE, its
    # triggers dropped IF EXISTS and created again; its queue's storage
    # options ALTER ... SET and the routines' revision, a COMMENT (idempotent
    # as well).
    idempotent = (
        " IF NOT EXISTS ",
        "CREATE OR REPLACE ",
        "\nSET (",
        "DROP TRIGGER IF EXISTS ",
        "COMMENT ON ",
        "LOCK TABLE ",
    )
    assert statements and all(
        any(marker in s for marker in idempotent) or "CREATE TRIGGER" in s for s in statements
    )
    for i, s in enumerate(statements):
        if "CREATE TRIGGER" in s:
            assert "DROP TRIGGER IF EXISTS" in statements[i - 1]
    assert any(
        "REFERENCES tenant.subscriptions (subscription_id) ON DELETE CASCADE" in s
        for s in statements
    )
    assert all("schema_migrations" not in s for s in statements)
    # Dropping them puts the reference's notification trigger back as it was.
    drops = drop_additions_ddl("tenant")
    assert drops[-1] == (
        'DROP TABLE IF EXISTS "tenant".parked_events, "tenant".sequencer_state, '
        '"tenant".unsequenced'
    )
    assert notification_trigger_ddl("tenant") in drops
    assert '"tenant".parked_events' in drop_schema_ddl("tenant")[0]


@pytest.mark.parametrize("data_type", ["bytea", "jsonb"])
def test_init_adds_them_to_a_schema_the_reference_made(make_store, admin_engine, data_type):
    fresh = make_store(column_data_type=data_type)
    store = make_store(column_data_type=data_type)
    store.append_to_stream("s", 0, [EventData("E", {"n": 1})])
    with admin_engine.connect() as conn:
        make_reference_v1_3_2(conn, store.schema)
        assert objects(conn, store.schema)["tables"] == REFERENCE_TABLES
        before = recorded_versions(conn, store.schema)

    assert store.init() is False  # the event store existed: only the additions are new

    with admin_engine.connect() as conn:
        assert snapshot(conn, store.schema) == snapshot(conn, fresh.schema)
        assert recorded_versions(conn, store.schema) == before == [(1, 3, 2)]
    park_numbers(store, "projector", [1])
    assert [p.event.data for p in store.parked_events("projector")] == [{"n": 1}]
    assert store.init() is False


def test_concurrent_inits_of_a_reference_schema(make_store, admin_engine, start_gate, driver):
    schema = f"es_{uuid.uuid4().hex[:12]}"
    first = make_store(schema=schema, driver=driver)
    with admin_engine.connect() as conn:
        make_reference_v1_3_2(conn, schema)
    stores = [first] + [make_store(schema=schema, init=False, driver=driver) for _ in range(5)]

    results = start_gate(len(stores), lambda i: stores[i].init())

    assert results == [False] * len(stores), results
    assert parked_rows(first) == []


def test_a_complete_schema_needs_no_create_rights(make_store, admin_engine):
    """init() on a schema that has everything sends no DDL: a role that may only
    read and write (no CREATE) can still run it; with an addition missing, it tries."""
    store = make_store()
    role = f"es_user_{uuid.uuid4().hex[:8]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}"')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{store.schema}" TO "{role}"')
    try:
        with store.engine.connect() as conn:
            with conn.begin():
                conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
                assert create_schema(conn, store.schema, "bytea") is False
            with admin_engine.connect() as admin:
                make_reference_v1_3_2(admin, store.schema)
            with pytest.raises(Exception, match="permission denied"), conn.begin():
                conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
                create_schema(conn, store.schema, "bytea")
    finally:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')


def test_migrate_adds_them_to_a_reference_schema(make_store, admin_engine, database_url):
    fresh = make_store()
    store = make_store()
    store.append_to_stream("s", 0, [EventData("E", {"n": 1})])
    with admin_engine.connect() as conn:
        make_reference_v1_3_2(conn, store.schema)

    statuses = commands.migrations(database_url, store.schema, quiet=True)
    assert statuses[-2:] == [
        MigrationStatus("1.3.2", "applied"),
        MigrationStatus("additions 1", "pending"),
    ]
    assert commands.migrate(database_url, store.schema, quiet=True) == ["additions 1"]
    assert commands.migrate(database_url, store.schema, quiet=True) == []
    assert commands.migrations(database_url, store.schema, quiet=True)[-1] == MigrationStatus(
        "additions 1", "applied"
    )

    with admin_engine.connect() as conn:
        assert snapshot(conn, store.schema) == snapshot(conn, fresh.schema)
        assert recorded_versions(conn, store.schema) == [(1, 3, 2)]
    assert [e.data for e in store.read_stream_forward("s")] == [{"n": 1}]


def test_upgrade_schema_applies_them_unless_told_not_to(make_store, admin_engine):
    store = make_store()
    with admin_engine.connect() as conn:
        make_reference_v1_3_2(conn, store.schema)
    with store.engine.begin() as conn:
        assert upgrade_schema(conn, store.schema, "bytea", additions=False) == []
    with admin_engine.connect() as conn:
        assert objects(conn, store.schema)["tables"] == REFERENCE_TABLES
    with store.engine.begin() as conn:
        assert upgrade_schema(conn, store.schema, "bytea") == []
    with admin_engine.connect() as conn:
        assert "parked_events" in objects(conn, store.schema)["tables"]
        found = conn.execute(
            text(
                "SELECT confdeltype FROM pg_constraint WHERE conname = :name "
                "AND connamespace = to_regnamespace(:schema)"
            ),
            {"name": "parked_events_subscription_id_fkey", "schema": f'"{store.schema}"'},
        ).scalar()
    assert found == "c"  # ON DELETE CASCADE
