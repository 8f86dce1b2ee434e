"""``eventstore check``: run as a subprocess against real schemas, clean and broken."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.engine import URL, Engine

from sqlalchemy_eventstore import EventData, EventStore
from sqlalchemy_eventstore.commands import CommandError, check

from .sequencer_helpers import all_rows, commit_behind_the_hooks, settle, waiting
from .test_cli import assert_failed, assert_ok, run, url_text

Factory = Callable[..., EventStore]


def events(n: int) -> list[EventData]:
    return [EventData("T", {"i": i}) for i in range(n)]


def leave_waiting(store: EventStore, stream_uuid: str, expected: int, n: int) -> None:
    """A committed sequencer-mode append that nothing numbered (its writer died)."""
    with store.engine.connect() as conn:
        conn.begin()
        store.append_to_stream(stream_uuid, expected, events(n), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()


def delete_rows(admin_engine: Engine, schema: str, where: str) -> None:
    """Break a schema on purpose (the protection triggers allow it this once)."""
    with admin_engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql("SET LOCAL eventstore.enable_hard_deletes = 'on'")
        conn.exec_driver_sql(f'DELETE FROM "{schema}".stream_events WHERE {where}')
        conn.exec_driver_sql("COMMIT")


@pytest.mark.parametrize("global_order", ["lock", "sequencer"])
def test_a_sound_schema_passes_after_numbering_waiting_events(
    make_store: Factory, database_url: URL, admin_engine: Engine, global_order: str
) -> None:
    store = make_store(global_order=global_order)
    seq = make_store(schema=store.schema, global_order="sequencer")
    store.append_to_stream("a", 0, events(3))
    leave_waiting(seq, "b", 0, 2)
    store.append_to_stream("c", 0, events(1))
    leave_waiting(seq, "a", 3, 1)
    assert waiting(admin_engine, store.schema) >= 1
    out = assert_ok(run("check", "--url", url_text(database_url), "--schema", store.schema))
    assert "OK: no violation found" in out
    assert "$all head: 7; positions linked: 7" in out
    assert "events: 7; streams: 3" in out
    assert waiting(admin_engine, store.schema) == 0
    assert len(all_rows(admin_engine, store.schema)) == 7
    # Positions are stable: a second run finds the same $all.
    before = all_rows(admin_engine, store.schema)
    assert_ok(run("check", "--url", url_text(database_url), "--schema", store.schema))
    assert all_rows(admin_engine, store.schema) == before


def test_holes_from_a_hard_delete_fail_unless_allowed(
    make_store: Factory, database_url: URL
) -> None:
    store = make_store(global_order="sequencer", enable_hard_deletes=True)
    store.append_to_stream("kept", 0, events(1))
    store.append_to_stream("gone", 0, events(2))
    store.append_to_stream("kept", 1, events(1))
    settle(store)  # numbered: the hard delete then leaves holes
    store.delete_stream("gone", hard=True)
    url = url_text(database_url)
    result = run("check", "--url", url, "--schema", store.schema)
    assert_failed(result, "check found 1 kinds of violation")
    assert "VIOLATION: $all has 2 missing positions: 2..3" in result.stdout
    out = assert_ok(run("check", "--allow-holes", "--url", url, "--schema", store.schema))
    assert "holes in $all (allowed): 2 positions" in out
    assert "OK: no violation found" in out


def test_every_kind_of_violation_is_reported(
    make_store: Factory, database_url: URL, admin_engine: Engine
) -> None:
    store = make_store()
    store.append_to_stream("a", 0, events(3))
    store.append_to_stream("b", 0, events(2))
    s = store.schema
    # An event of "a" unlinked from $all (a hole at position 2 too), and a
    # version missing from "b".
    delete_rows(admin_engine, s, "stream_id = 0 AND stream_version = 2")
    delete_rows(
        admin_engine,
        s,
        f"stream_version = 1 AND stream_id = "
        f"(SELECT stream_id FROM \"{s}\".streams WHERE stream_uuid = 'b')",
    )
    result = run("check", "--url", url_text(database_url), "--schema", s, "--allow-holes")
    assert_failed(result, "check found 2 kinds of violation")
    assert "VIOLATION: 1 events are not linked into $all" in result.stdout
    assert "VIOLATION: 1 streams have missing versions: b" in result.stdout
    assert "missing positions" not in result.stdout  # allowed


def test_stream_order_violations_are_reported(
    make_store: Factory, database_url: URL, admin_engine: Engine
) -> None:
    store = make_store()
    store.append_to_stream("a", 0, events(2))
    with admin_engine.connect() as conn:  # swap the two $all rows of "a"
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql("SET LOCAL eventstore.enable_hard_deletes = 'on'")
        rows = conn.exec_driver_sql(
            f'DELETE FROM "{store.schema}".stream_events WHERE stream_id = 0 '
            "RETURNING event_id, stream_version, original_stream_id, original_stream_version"
        ).all()
        for event_id, position, original_id, original_version in rows:
            conn.exec_driver_sql(
                f'INSERT INTO "{store.schema}".stream_events VALUES '
                "(%(e)s, 0, %(p)s, %(o)s, %(v)s)",
                {"e": event_id, "p": 3 - position, "o": original_id, "v": original_version},
            )
        conn.exec_driver_sql("COMMIT")
    result = run("check", "--url", url_text(database_url), "--schema", store.schema)
    assert_failed(result)
    assert "VIOLATION: 1 streams appear out of stream order in $all: a" in result.stdout


def test_check_of_a_schema_without_an_event_store(database_url: URL) -> None:
    result = run("check", "--url", url_text(database_url), "--schema", "no_such_schema")
    assert_failed(result, "holds no event store")
    with pytest.raises(CommandError, match="holds no event store"):
        check(database_url, "no_such_schema", quiet=True)


def test_check_as_a_function_returns_the_report(make_store: Factory, database_url: URL) -> None:
    store = make_store(global_order="sequencer")
    leave_waiting(store, "f", 0, 2)
    report = check(database_url, store.schema, quiet=True)
    assert (report.head, report.linked, report.events, report.numbered_now) == (2, 2, 2, 1)
    assert report.ok and report.violations() == []
