"""The shape of every read's plan: O(page) at any position, with or without statistics.

A page read must be a range scan of ``stream_events``' index in index order,
stopped by a LIMIT, whose rows are then joined to ``events`` (and their original
stream) by primary key -- never a sort of every event from the start position
on, never a sequential scan of the big tables. That shape is what keeps a read
at position 1,000,000 as cheap as one at 0; it is pinned here, not a timing.

The tables are filled by the library's own appends with autovacuum off, so the
first checks run with no statistics at all (as a freshly loaded store has), the
later ones after ANALYZE, and each with the plan each driver gets: psycopg2
sends the values inline (a custom plan), psycopg 3 binds them server-side and,
once it prepares the statement, may run a generic plan (checked with
``plan_cache_mode = force_generic_plan``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from sqlalchemy_eventstore import ALL_STREAM, EventData, EventStore
from sqlalchemy_eventstore.storage.reader import END

from .conftest import DRIVERS, unique_schema

STREAMS = 30
PER_STREAM = 1000
TOTAL = STREAMS * PER_STREAM
TABLES = ("streams", "stream_events", "events")


@pytest.fixture(scope="module")
def loaded_schema(database_url: Any, admin_engine: Engine) -> Iterator[str]:
    """A schema with 30,000 events in 30 streams, written by the library, never analysed."""
    schema = unique_schema()
    loader = EventStore(database_url, schema=schema)
    try:
        loader.init()
        with admin_engine.connect() as conn:
            for table in TABLES:
                conn.exec_driver_sql(
                    f'ALTER TABLE "{schema}".{table} SET (autovacuum_enabled = false)'
                )
        batch = [EventData("Loaded", {"n": n, "pad": "x" * 100}) for n in range(PER_STREAM)]
        for i in range(STREAMS):
            loader.append_to_stream(f"stream-{i}", 0, batch)
        yield schema
    finally:
        loader.close()
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _describe(plan: dict[str, Any], depth: int = 0) -> str:
    line = "  " * depth + plan["Node Type"]
    if "Relation Name" in plan:
        line += f" on {plan['Relation Name']}"
    if "Index Name" in plan:
        line += f" using {plan['Index Name']}"
    return "\n".join([line, *(_describe(c, depth + 1) for c in plan.get("Plans", []))])


def assert_page_plan(plan: dict[str, Any]) -> None:
    """No sort, no full scan of the event tables, a LIMIT right over the index scan."""
    shape = _describe(plan)
    nodes = list(_nodes(plan))
    assert not [n for n in nodes if "Sort" in n["Node Type"]], shape
    for node in nodes:
        if node.get("Relation Name") in ("stream_events", "events"):
            assert node["Node Type"] in ("Index Scan", "Index Only Scan"), shape
    limits = [n for n in nodes if n["Node Type"] == "Limit"]
    assert len(limits) == 1, shape
    (under_limit,) = [p for p in limits[0]["Plans"] if p["Parent Relationship"] == "Outer"]
    scans = [n for n in _nodes(under_limit) if "Relation Name" in n]
    assert [(s["Node Type"], s["Relation Name"], s["Index Name"]) for s in scans] == [
        ("Index Scan", "stream_events", "ix_stream_events")
    ], shape
    # Every event is fetched by its primary key, once per row of the page.
    event_scans = [n for n in nodes if n.get("Relation Name") == "events"]
    assert [n["Index Name"] for n in event_scans] == ["events_pkey"], shape


def _explain(conn: Any, statement: str, params: dict[str, Any]) -> dict[str, Any]:
    row = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar()
    return dict(row[0]["Plan"])


def _cases() -> list[tuple[str, bool, int]]:
    middle = TOTAL // 2
    return [
        (ALL_STREAM, True, 0),
        (ALL_STREAM, True, middle),
        (ALL_STREAM, True, TOTAL - 10),
        (ALL_STREAM, False, END),
        (ALL_STREAM, False, middle),
        (ALL_STREAM, False, 10),
        ("stream-7", True, 0),
        ("stream-7", True, PER_STREAM // 2),
        ("stream-7", False, END),
        ("stream-7", False, PER_STREAM // 2),
    ]


def _check_every_read(store: EventStore, *, count: int = 1000) -> None:
    with store.engine.connect() as conn:
        for stream_uuid, forward, start in _cases():
            statement = store._sql.read_forward if forward else store._sql.read_backward
            params = {"stream_uuid": stream_uuid, "start": start, "count": count}
            plan = _explain(conn, statement, params)
            assert_page_plan(plan)


def _check_generic_plans(store: EventStore, admin_engine: Engine) -> None:
    """The plan a prepared statement may settle on: no parameter values known."""
    numbered = {"stream_uuid": "$1", "start": "$2", "count": "$3"}
    with admin_engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        try:
            for name, statement in (
                ("read_forward", store._sql.read_forward),
                ("read_backward", store._sql.read_backward),
            ):
                body = re.sub(r"%\((\w+)\)s", lambda m: numbered[m.group(1)], statement)
                conn.exec_driver_sql(f"PREPARE {name} (text, bigint, bigint) AS {body}")
                try:
                    for stream_uuid, _, start in _cases():
                        row = conn.execute(
                            text(
                                f"EXPLAIN (FORMAT JSON) EXECUTE {name}(:stream_uuid, :start, 1000)"
                            ),
                            {"stream_uuid": stream_uuid, "start": start},
                        ).scalar()
                        assert_page_plan(dict(row[0]["Plan"]))
                finally:
                    conn.exec_driver_sql(f"DEALLOCATE {name}")
        finally:
            conn.exec_driver_sql("RESET plan_cache_mode")


def _has_statistics(admin_engine: Engine, schema: str) -> bool:
    with admin_engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stats WHERE schemaname = %(s)s", {"s": schema}
            ).scalar()
        )


@pytest.fixture(params=list(DRIVERS))
def reader_store(request: pytest.FixtureRequest, database_url: Any, loaded_schema: str):
    store = EventStore(database_url.set(drivername=DRIVERS[request.param]), schema=loaded_schema)
    yield store
    store.close()


def test_loaded_tables_have_no_statistics(admin_engine, loaded_schema):
    assert not _has_statistics(admin_engine, loaded_schema)
    with admin_engine.connect() as conn:
        reltuples = conn.exec_driver_sql(
            "SELECT relname, reltuples FROM pg_class WHERE relnamespace = %(s)s::regnamespace"
            " AND relname IN ('stream_events', 'events')",
            {"s": loaded_schema},
        ).all()
    # Never vacuumed nor analysed: -1, or 0 as CREATE INDEX left it on the empty table.
    assert sorted(reltuples) == [("events", 0), ("stream_events", 0)] or all(
        n == -1 for _, n in reltuples
    ), reltuples


def test_every_read_is_an_index_range_scan_without_statistics(
    reader_store, admin_engine, loaded_schema
):
    assert not _has_statistics(admin_engine, loaded_schema)
    _check_every_read(reader_store)
    _check_every_read(reader_store, count=10)
    _check_generic_plans(reader_store, admin_engine)
    assert len(reader_store.read_all_streams_forward(TOTAL // 2, 1000)) == 1000


def test_every_read_is_an_index_range_scan_after_analyze(reader_store, admin_engine, loaded_schema):
    with admin_engine.connect() as conn:
        for table in TABLES:
            conn.exec_driver_sql(f'ANALYZE "{loaded_schema}".{table}')
    assert _has_statistics(admin_engine, loaded_schema)
    _check_every_read(reader_store)
    _check_every_read(reader_store, count=10)
    _check_generic_plans(reader_store, admin_engine)
