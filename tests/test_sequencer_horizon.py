"""The sequencer under a long-running transaction (``global_order="sequencer"``).

While any transaction holding an xid stays open, PostgreSQL keeps every queue
row deleted after it began. The sequencer must not walk them: its probes and
its numbering visit the rows above ``numbered_through`` and the gaps only. The
shape is pinned on a counter -- the index entries of the queue's primary key
returned to the statements of one transaction
(``pg_stat_get_xact_tuples_returned``), which counts dead entries too -- never
on timings. Then correctness under such a hold: appends held open or rolled
back meanwhile, with writers on real threads, and the checker's verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection
from sqlalchemy.engine import URL, Engine

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore.commands import check

from .sequencer_helpers import (
    all_rows,
    assert_gap_free_in_stream_order,
    commit_behind_the_hooks,
    eventually,
    settle,
)

Factory = Callable[..., EventStore]

NUMBERED_UNDER_HOLD = 2000
# Index entries a probe or a numbering run may visit: a descent's worth plus
# the rows it numbers -- nothing that grows with NUMBERED_UNDER_HOLD.
BOUND = 10


def events(n: int) -> list[EventData]:
    return [EventData("T", {"i": i}) for i in range(n)]


@contextmanager
def holding_an_xid(admin_engine: Engine) -> Iterator[Connection]:
    """A transaction elsewhere that holds an xid open (vacuum cannot pass it)."""
    with admin_engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql("SELECT txid_current()")
        try:
            yield conn
        finally:
            conn.exec_driver_sql("ROLLBACK")


def entries_returned(conn: Connection, schema: str) -> int:
    """The queue index's entries returned to this backend, not yet flushed to the
    statistics (so only differences within one transaction mean anything)."""
    return int(
        conn.exec_driver_sql(
            "SELECT pg_stat_get_xact_tuples_returned("
            f"CAST('\"{schema}\".unsequenced_pkey' AS regclass))"
        ).scalar_one()
    )


def queue_entries_visited(admin_engine: Engine, schema: str, statement: str) -> int:
    """Run ``statement`` in a transaction of its own; the queue index entries it read."""
    with admin_engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        before = entries_returned(conn, schema)
        conn.exec_driver_sql(statement)
        visited = entries_returned(conn, schema) - before
        conn.exec_driver_sql("COMMIT")
    return visited


def others_running(admin_engine: Engine) -> bool:
    """Whether another session of the cluster is in a transaction now."""
    with admin_engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)"
            ).scalar()
        )


def leave_waiting(store: EventStore, stream_uuid: str, n: int) -> None:
    """A committed append that nothing numbered (its writer died after commit)."""
    with store.engine.connect() as conn:
        conn.begin()
        store.append_to_stream(stream_uuid, ANY_VERSION, events(n), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()


def state(admin_engine: Engine, schema: str) -> tuple[int, list[int]]:
    with admin_engine.connect() as conn:
        row = conn.exec_driver_sql(
            f'SELECT numbered_through, gaps FROM "{schema}".sequencer_state '
            "ORDER BY run DESC LIMIT 1"
        ).one()
    return int(row[0]), [int(g) for g in row[1]]


def test_probes_and_numbering_visit_a_bounded_number_of_queue_entries_under_a_hold(
    make_store: Factory, admin_engine: Engine
) -> None:
    store = make_store(global_order="sequencer")
    lock_store = make_store(schema=store.schema, global_order="lock")
    s = f'"{store.schema}"'
    with holding_an_xid(admin_engine):
        for i in range(NUMBERED_UNDER_HOLD):
            store.append_to_stream(f"s-{i % 50}", ANY_VERSION, events(1))
        settle(store)  # the worker numbered them (it runs behind the appends)
        assert len(all_rows(admin_engine, store.schema)) == NUMBERED_UNDER_HOLD

        # The dead queue entries are there: a probe of the whole queue walks them.
        walked = queue_entries_visited(
            admin_engine, store.schema, f"SELECT 1 FROM {s}.unsequenced ORDER BY seq LIMIT 1"
        )
        assert walked >= NUMBERED_UNDER_HOLD

        # The sequencer's probe with nothing waiting (both calls of it).
        for wait in ("false", "true"):
            assert (
                queue_entries_visited(
                    admin_engine, store.schema, f"SELECT {s}.eventstore_sequence({wait})"
                )
                <= BOUND
            )
        # A numbering run: probe, lock, probe, trigger (probe, number, state).
        leave_waiting(store, "late", 2)
        assert (
            queue_entries_visited(
                admin_engine, store.schema, f"SELECT {s}.eventstore_sequence(true)"
            )
            <= BOUND
        )
        assert all_rows(admin_engine, store.schema)[-1][1] == "late"
        # A lock-mode append: the trigger on the $all row probes the queue first.
        with lock_store.engine.connect() as conn:
            conn.begin()
            before = entries_returned(conn, store.schema)
            lock_store.append_to_stream("locked", ANY_VERSION, events(1), conn=conn)
            visited = entries_returned(conn, store.schema) - before
            conn.commit()
        assert visited <= BOUND
        # ... and one that finds a committed waiting append numbers it first.
        leave_waiting(store, "late", 1)
        with lock_store.engine.connect() as conn:
            conn.begin()
            before = entries_returned(conn, store.schema)
            lock_store.append_to_stream("locked", ANY_VERSION, events(1), conn=conn)
            visited = entries_returned(conn, store.schema) - before
            conn.commit()
        assert visited <= BOUND
        assert [r[1] for r in all_rows(admin_engine, store.schema)[-2:]] == ["late", "locked"]
    assert_gap_free_in_stream_order(all_rows(admin_engine, store.schema))


def test_under_a_hold_a_late_commit_is_numbered_last_and_a_rollback_leaves_no_hole(
    make_store: Factory,
    admin_engine: Engine,
    database_url: URL,
    start_gate: Callable[[int, Callable[[int], object]], list[object]],
) -> None:
    store = make_store(global_order="sequencer")
    with holding_an_xid(admin_engine):
        held = store.engine.connect()
        held.begin()
        store.append_to_stream("held", ANY_VERSION, events(3), conn=held)
        rolled = store.engine.connect()
        rolled.begin()
        store.append_to_stream("rolled", ANY_VERSION, events(2), conn=rolled)

        def writer(i: int) -> int:
            written = 0
            for n in range(60):
                if n % 10 == 3:  # a tenth rolled back
                    with store.engine.connect() as conn:
                        conn.begin()
                        store.append_to_stream(f"w-{i}", ANY_VERSION, events(1), conn=conn)
                        conn.rollback()
                else:
                    store.append_to_stream(f"w-{i}", ANY_VERSION, events(1))
                    written += 1
            return written

        results = start_gate(4, writer)
        assert results == [54] * 4
        settle(store)
        rolled.rollback()
        rolled.close()
        rows = all_rows(admin_engine, store.schema)
        assert len(rows) == 4 * 54
        assert {r[1] for r in rows} == {f"w-{i}" for i in range(4)}
        # The held append and the rolled-back ones are gaps (their writers'
        # transactions are newer than the hold: none can be dropped yet).
        _, gaps_under_hold = state(admin_engine, store.schema)
        assert len(gaps_under_hold) >= 1 + 4 * 6  # the held one, the rolled back ones
        held.commit()  # the commit hook numbers it (on the store's worker thread)
        held.close()
        assert eventually(lambda: len(all_rows(admin_engine, store.schema)) == 4 * 54 + 3)
        rows = all_rows(admin_engine, store.schema)
        assert [r[1] for r in rows[-3:]] == ["held"] * 3
        assert len(rows) == 4 * 54 + 3
    # The hold over, the next run drops the gaps whose writers have ended --
    # all of them, unless a transaction elsewhere in the cluster (older than
    # those writers) still runs: then they are kept, never numbered wrongly.
    leave_waiting(store, "after", 1)
    store.advance_all_stream()
    _, gaps = state(admin_engine, store.schema)
    assert set(gaps) <= set(gaps_under_hold)
    if not others_running(admin_engine):
        assert gaps == []
    rows = all_rows(admin_engine, store.schema)
    assert rows[-1][1] == "after"
    assert_gap_free_in_stream_order(rows)
    report = check(database_url, store.schema, quiet=True)
    assert report.violations() == []


def test_a_gap_never_drops_a_committed_append(
    make_store: Factory,
    database_url: URL,
    admin_engine: Engine,
    start_gate: Callable[[int, Callable[[int], object]], list[object]],
) -> None:
    """Writers whose transaction ids were assigned long before their appends take
    their queue seqs (conn= transactions), racing plain appends: a gap's horizon
    must outlast each of them, or a late committer would be passed for good."""
    store = make_store(global_order="sequencer")
    stop = threading.Event()

    def runner() -> None:  # numbering runs as often as possible meanwhile
        while not stop.is_set():
            store.advance_all_stream()

    numbering = threading.Thread(target=runner)
    numbering.start()

    def writer(i: int) -> int:
        written = 0
        for n in range(40):
            if i % 2:
                with store.engine.connect() as conn:
                    conn.begin()
                    conn.exec_driver_sql("SELECT txid_current()")  # xid first
                    conn.exec_driver_sql("SELECT pg_sleep(0.002)")
                    store.append_to_stream(f"w-{i}", ANY_VERSION, events(1), conn=conn)
                    if n % 7 == 0:
                        conn.rollback()
                        continue
                    conn.exec_driver_sql("SELECT pg_sleep(0.001)")
                    commit_behind_the_hooks(conn)  # left to the runner
                    conn.rollback()
            else:
                store.append_to_stream(f"w-{i}", ANY_VERSION, events(1))
            written += 1
        return written

    try:
        results = start_gate(6, writer)
    finally:
        stop.set()
        numbering.join(30)
    written = sum(int(r) for r in results)  # type: ignore[call-overload]
    store.advance_all_stream()
    rows = all_rows(admin_engine, store.schema)
    assert len(rows) == written
    assert_gap_free_in_stream_order(rows)
    assert check(database_url, store.schema, quiet=True).violations() == []


def test_init_brings_a_schema_without_the_state_table_up_to_date(
    make_store: Factory, admin_engine: Engine, database_url: URL
) -> None:
    """A schema of the earlier layout: appends wait in the queue, no state table."""
    store = make_store(global_order="sequencer")
    store.append_to_stream("a", ANY_VERSION, events(2))
    settle(store)
    leave_waiting(store, "b", 2)
    leave_waiting(store, "a", 1)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP TABLE "{store.schema}".sequencer_state')
    again = make_store(schema=store.schema, global_order="sequencer", init=False)
    assert again.init() is False  # the event store existed; its additions are completed
    numbered_through, gaps = state(admin_engine, store.schema)
    assert gaps == []
    assert numbered_through >= 1  # just below the lowest waiting append
    again.advance_all_stream()
    rows = all_rows(admin_engine, store.schema)
    assert [r[1] for r in rows] == ["a", "a", "b", "b", "a"]
    assert check(database_url, store.schema, quiet=True).violations() == []


@pytest.mark.parametrize("wait", [True, False])
def test_a_missing_state_row_is_an_error_not_a_silent_stall(
    make_store: Factory, admin_engine: Engine, wait: bool
) -> None:
    store = make_store(global_order="sequencer")
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{store.schema}".sequencer_state')
        with pytest.raises(Exception, match="sequencer_state row is missing"):
            conn.exec_driver_sql(f'SELECT "{store.schema}".eventstore_sequence({wait})')
