"""``global_order="sequencer"``: appends that do not lock ``$all``, numbered after commit.

Each path that numbers waiting events is taken for certain: the append's own
call, a Session's and a Connection's commit hooks, readers of ``$all``, a
writer that dies right after its commit, lock-mode writers (this package's and
the reference's own SQL) numbering waiting events before theirs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData, EventStore

from .sequencer_helpers import (
    all_head,
    all_rows,
    assert_gap_free_in_stream_order,
    commit_behind_the_hooks,
    eventually,
    numbered,
    settle,
    wait_until_blocked,
    waiting,
)

Factory = Callable[..., EventStore]


def events(n: int, tag: str = "e") -> list[EventData]:
    return [EventData("T", {"tag": tag, "i": i}) for i in range(n)]


@pytest.fixture
def seq(make_store: Factory) -> EventStore:
    return make_store(global_order="sequencer")


def lock_store_on(make_store: Factory, store: EventStore, **options: Any) -> EventStore:
    """A lock-mode store on the same schema (init is idempotent)."""
    return make_store(schema=store.schema, **options)


def test_global_order_is_validated(database_url: URL) -> None:
    with pytest.raises(ValueError, match="global_order"):
        EventStore(database_url, global_order="fifo")


def test_an_append_is_in_all_when_the_call_returns(seq: EventStore, admin_engine: Engine) -> None:
    seq.append_to_stream("a", 0, events(2))
    seq.append_to_stream("b", 0, events(1))
    # Read raw: the append's own post-commit call numbered them.
    assert all_rows(admin_engine, seq.schema) == [(1, "a", 1), (2, "a", 2), (3, "b", 1)]
    assert waiting(admin_engine, seq.schema) == 0
    assert seq.stream_info(ALL_STREAM).stream_version == 3


def test_a_reader_right_after_an_append_sees_it(seq: EventStore, make_store: Factory) -> None:
    """A read of $all advances the sequencer first (here from another store,
    which appended nothing itself)."""
    reader = make_store(schema=seq.schema, global_order="sequencer")
    for i in range(20):
        seq.append_to_stream(f"s-{i}", 0, events(1))
        assert reader.stream_info(ALL_STREAM).stream_version == i + 1
        assert reader.read_all_streams_backward(count=1)[0].stream_uuid == f"s-{i}"


APPEND_BY_SCRIPT = {
    # The append's own call numbers it.
    "plain": 'store.append_to_stream("script", 0, EVENTS)',
    # The Connection's commit hook hands it to the worker thread, drained at exit.
    "connection": textwrap.dedent(
        """
        with store.engine.connect() as conn:
            conn.begin()
            store.append_to_stream("script", 0, EVENTS, conn=conn)
            conn.commit()
        """
    ),
}


@pytest.mark.parametrize("how", sorted(APPEND_BY_SCRIPT))
def test_a_script_that_appends_and_exits_is_numbered_before_it_ends(
    seq: EventStore, database_url: URL, admin_engine: Engine, how: str
) -> None:
    """Nothing is left for a reader, though the store was never closed."""
    url = database_url.render_as_string(hide_password=False)
    script = (
        textwrap.dedent(
            """
        import sys
        from sqlalchemy_eventstore import EventStore, EventData
        store = EventStore(sys.argv[1], schema=sys.argv[2], global_order="sequencer")
        EVENTS = [EventData("T", {"i": i}) for i in range(3)]
        """
        )
        + APPEND_BY_SCRIPT[how]
    )
    result = subprocess.run(
        [sys.executable, "-c", script, url, seq.schema], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # Read at once, no waiting: numbered before the process ended.
    assert all_rows(admin_engine, seq.schema) == [
        (1, "script", 1),
        (2, "script", 2),
        (3, "script", 3),
    ]
    assert waiting(admin_engine, seq.schema) == 0


def test_an_open_append_does_not_hold_up_other_writers(
    seq: EventStore, admin_engine: Engine
) -> None:
    """The caller's transaction holds its stream's lock only: another append
    (and its numbering) completes while it is open; $all skips nothing."""
    with seq.engine.connect() as conn, conn.begin():
        seq.append_to_stream("held", 0, events(2), conn=conn)
        started = time.monotonic()
        done = threading.Event()

        def other() -> None:
            seq.append_to_stream("other", 0, events(3))
            done.set()

        worker = threading.Thread(target=other)
        worker.start()
        assert done.wait(5), "an append waited for an unrelated open transaction"
        worker.join()
        assert time.monotonic() - started < 5
        assert numbered(admin_engine, seq.schema, 3) == [
            (1, "other", 1),
            (2, "other", 2),
            (3, "other", 3),
        ]
    # Committed by the block: the Connection's commit hook numbers it.
    assert eventually(lambda: len(all_rows(admin_engine, seq.schema)) == 5)
    assert all_rows(admin_engine, seq.schema)[3:] == [(4, "held", 1), (5, "held", 2)]


def test_session_commit_numbers_the_events_before_it_returns(
    seq: EventStore, admin_engine: Engine
) -> None:
    with Session(seq.engine) as session:
        seq.append_to_stream("s", 0, events(2), conn=session)
        seq.append_to_stream("t", 0, events(1), conn=session)
        assert all_rows(admin_engine, seq.schema) == []
        session.commit()
        assert all_rows(admin_engine, seq.schema) == [(1, "s", 1), (2, "s", 2), (3, "t", 1)]
        # The session goes on: a second transaction is hooked again.
        seq.append_to_stream("s", 2, events(1), conn=session)
        session.commit()
        assert all_rows(admin_engine, seq.schema)[-1] == (4, "s", 3)


def test_session_rollback_numbers_nothing(seq: EventStore, admin_engine: Engine) -> None:
    with Session(seq.engine) as session:
        seq.append_to_stream("s", 0, events(2), conn=session)
        session.rollback()
        seq.append_to_stream("t", 0, events(1))
    assert numbered(admin_engine, seq.schema, 1) == [(1, "t", 1)]
    assert waiting(admin_engine, seq.schema) == 0


def test_connection_commit_is_followed_by_numbering(seq: EventStore, admin_engine: Engine) -> None:
    with seq.engine.connect() as conn:
        with conn.begin():
            seq.append_to_stream("c", 0, events(2), conn=conn)
        # The commit event fires before the commit: a worker waits for the
        # transaction's outcome, then numbers.
        assert eventually(lambda: len(all_rows(admin_engine, seq.schema)) == 2)
        conn.begin()
        seq.append_to_stream("c", 2, events(1), conn=conn)
        conn.rollback()
        conn.begin()
        seq.append_to_stream("d", 0, events(1), conn=conn)
        conn.commit()
    assert eventually(lambda: len(all_rows(admin_engine, seq.schema)) == 3)
    assert all_rows(admin_engine, seq.schema) == [(1, "c", 1), (2, "c", 2), (3, "d", 1)]


def test_reading_all_inside_the_appending_transaction(seq: EventStore) -> None:
    """Documented difference: the caller's own uncommitted events are in their
    stream but not in $all until after the commit (lock mode shows them)."""
    seq.append_to_stream("before", 0, events(1))
    with Session(seq.engine) as session:
        seq.append_to_stream("mine", 0, events(2), conn=session)
        assert [e.stream_uuid for e in seq.read_all_streams_forward(conn=session)] == ["before"]
        assert seq.stream_info(ALL_STREAM, conn=session).stream_version == 1
        assert len(seq.read_stream_forward("mine", conn=session)) == 2
        session.commit()
    assert [e.stream_uuid for e in seq.read_all_streams_forward()] == ["before", "mine", "mine"]


def test_a_committed_but_unnumbered_append_is_numbered_by_the_next_reader(
    seq: EventStore, admin_engine: Engine
) -> None:
    with seq.engine.connect() as conn:
        conn.begin()
        seq.append_to_stream("lost", 0, events(2), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()
    assert all_rows(admin_engine, seq.schema) == []
    assert waiting(admin_engine, seq.schema) == 1
    read = seq.read_all_streams_forward()
    assert [(e.event_number, e.stream_uuid) for e in read] == [(1, "lost"), (2, "lost")]
    assert waiting(admin_engine, seq.schema) == 0


@pytest.mark.parametrize("reader", ["stream_info", "backward", "stream_all_forward"])
def test_every_reader_of_all_numbers_waiting_events(
    seq: EventStore, admin_engine: Engine, reader: str
) -> None:
    with seq.engine.connect() as conn:
        conn.begin()
        seq.append_to_stream("w", 0, events(3), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()
    if reader == "stream_info":
        assert seq.stream_info(ALL_STREAM).stream_version == 3
    elif reader == "backward":
        assert [e.event_number for e in seq.read_all_streams_backward()] == [3, 2, 1]
    else:
        assert [e.event_number for e in seq.stream_all_forward(read_batch_size=2)] == [1, 2, 3]


WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from sqlalchemy_eventstore import EventStore, EventData
    url, schema = sys.argv[1], sys.argv[2]
    store = EventStore(url, schema=schema, global_order="sequencer")
    with store.engine.connect() as conn:
        conn.begin()
        store.append_to_stream("killed", 0, [EventData("T", {"i": i}) for i in range(3)], conn=conn)
        # The commit reaches the server; the process dies before any hook runs.
        conn.connection.dbapi_connection.commit()
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_writer_killed_after_its_commit_loses_nothing(
    seq: EventStore, database_url: URL, admin_engine: Engine
) -> None:
    url = database_url.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-c", WRITER, url, seq.schema], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert all_rows(admin_engine, seq.schema) == []
    assert waiting(admin_engine, seq.schema) == 1
    # A subscriber to $all (no writer left alive) receives them...
    sub = seq.subscribe_to_all_streams("after-kill", buffer_size=10)
    try:
        received = sub.receive(timeout=10)
        assert [(e.event_number, e.stream_uuid) for e in received] == [
            (1, "killed"),
            (2, "killed"),
            (3, "killed"),
        ]
    finally:
        sub.unsubscribe()


def test_a_transient_all_subscriber_hears_of_killed_writers_events(
    seq: EventStore, admin_engine: Engine
) -> None:
    """A live subscription's runner numbers what waits now and then, so events
    of a writer that died unnumbered still arrive without any other writer."""
    sub = seq.subscribe(ALL_STREAM)
    try:
        with seq.engine.connect() as conn:
            conn.begin()
            seq.append_to_stream("orphan", 0, events(1), conn=conn)
            commit_behind_the_hooks(conn)
            conn.rollback()
        received = sub.receive(timeout=10)
        assert [(e.event_number, e.stream_uuid) for e in received] == [(1, "orphan")]
    finally:
        sub.unsubscribe()


def test_lock_mode_append_numbers_waiting_events_first(
    seq: EventStore, make_store: Factory, admin_engine: Engine
) -> None:
    lock = lock_store_on(make_store, seq)
    with seq.engine.connect() as conn:
        conn.begin()
        seq.append_to_stream("s", 0, events(2), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()
    lock.append_to_stream("s", 2, events(1))
    lock.append_to_stream("t", 0, events(1))
    assert all_rows(admin_engine, seq.schema) == [
        (1, "s", 1),
        (2, "s", 2),
        (3, "s", 3),
        (4, "t", 1),
    ]
    assert waiting(admin_engine, seq.schema) == 0


def test_lock_mode_append_that_waited_for_a_sequencer_append_to_its_stream(
    seq: EventStore, make_store: Factory, admin_engine: Engine
) -> None:
    """The lock-mode statement's snapshot predates the sequencer-mode append
    it waited for: the numbering trigger (fresh snapshot) still sees it, so
    the stream's events stay in stream order in $all."""
    lock = lock_store_on(make_store, seq, name="lock-writer")
    with seq.engine.connect() as conn:
        conn.begin()
        seq.append_to_stream("s", 0, events(2), conn=conn)
        result: list[Any] = []
        worker = threading.Thread(
            target=lambda: result.append(lock.append_to_stream("s", ANY_VERSION, events(1)))
        )
        worker.start()
        wait_until_blocked(admin_engine, "lock-writer")
        commit_behind_the_hooks(conn)
        conn.rollback()
        worker.join(10)
    assert result == [None]
    assert all_rows(admin_engine, seq.schema) == [(1, "s", 1), (2, "s", 2), (3, "s", 3)]


def test_reference_sql_writer_numbers_waiting_events_first(
    seq: EventStore, admin_engine: Engine
) -> None:
    """The reference's own append statement (any-version form, as v1.4 sends
    it) knows nothing of the queue; the trigger on the $all row numbers the
    waiting events below its own anyway."""
    with seq.engine.connect() as conn:
        conn.begin()
        seq.append_to_stream("s", 0, events(2), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()
    reference_append(admin_engine, seq.schema, "s", 1)
    assert all_rows(admin_engine, seq.schema) == [(1, "s", 1), (2, "s", 2), (3, "s", 3)]


def reference_append(engine: Engine, schema: str, stream_uuid: str, n: int) -> None:
    """The reference's insert_events_any_version statement, for an existing stream."""
    s = f'"{schema}"'
    ids = [str(uuid.uuid4()) for _ in range(n)]
    values = ", ".join(f"(CAST(%(id{i})s AS uuid), {i + 1}, 0)" for i in range(n))
    event_values = ", ".join(
        f"(CAST(%(id{i})s AS uuid), 'Ref', NULL, NULL, CAST('{{}}' AS bytea), NULL, now())"
        for i in range(n)
    )
    sql = f"""
    WITH
      stream AS (
        UPDATE {s}.streams SET stream_version = stream_version + {n}
        WHERE stream_id = (SELECT stream_id FROM {s}.streams WHERE stream_uuid = %(uuid)s)
        RETURNING stream_id, stream_version - {n} AS initial_stream_version
      ),
      new_events_indexes (event_id, index, stream_version) AS (VALUES {values}),
      events AS (
        INSERT INTO {s}.events
          (event_id, event_type, causation_id, correlation_id, data, metadata, created_at)
        VALUES {event_values}
      ),
      source_stream_events AS (
        INSERT INTO {s}.stream_events
          (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
        SELECT new_events_indexes.event_id, stream.stream_id,
               stream.initial_stream_version + new_events_indexes.index,
               stream.stream_id, stream.initial_stream_version + new_events_indexes.index
        FROM new_events_indexes, stream
      ),
      linked_stream AS (
        UPDATE {s}.streams SET stream_version = stream_version + {n}
        WHERE stream_id = 0
        RETURNING stream_version - {n} AS initial_stream_version
      ),
      linked_stream_events AS (
        INSERT INTO {s}.stream_events
          (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
        SELECT new_events_indexes.event_id, 0,
               linked_stream.initial_stream_version + new_events_indexes.index,
               stream.stream_id, stream.initial_stream_version + new_events_indexes.index
        FROM new_events_indexes, linked_stream, stream
      )
    SELECT stream_id FROM stream
    """
    params: dict[str, Any] = {"uuid": stream_uuid}
    params.update({f"id{i}": ids[i] for i in range(n)})
    with engine.connect() as conn:
        assert conn.exec_driver_sql(sql, params).first() is not None


def test_mixed_writers_stay_gap_free_and_in_stream_order(
    seq: EventStore, make_store: Factory, admin_engine: Engine
) -> None:
    """Sequencer-mode, lock-mode and reference-SQL writers on the same streams
    at once; readers of $all meanwhile never see a hole or a moved event."""
    lock = lock_store_on(make_store, seq)
    streams = [f"mixed-{i}" for i in range(3)]
    for name in streams:
        seq.append_to_stream(name, 0, events(1))
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(kind: int) -> None:
        try:
            for round_ in range(40):
                name = streams[(kind + round_) % len(streams)]
                if kind % 3 == 0:
                    seq.append_to_stream(name, ANY_VERSION, events(1 + round_ % 3))
                elif kind % 3 == 1:
                    lock.append_to_stream(name, ANY_VERSION, events(1 + round_ % 2))
                else:
                    reference_append(admin_engine, seq.schema, name, 2)
        except BaseException as error:  # reported below
            errors.append(error)

    def read() -> None:
        seen: list[tuple[int, str]] = []
        try:
            while not stop.is_set():
                now = [
                    (e.event_number, e.event_id) for e in seq.read_all_streams_forward(0, 10_000)
                ]
                assert [n for n, _ in now] == list(range(1, len(now) + 1))
                assert now[: len(seen)] == seen, "an event moved or appeared below a read position"
                seen = now
        except BaseException as error:
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(k,)) for k in range(6)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    stop.set()
    reader.join(30)
    assert not errors, errors
    seq.advance_all_stream()
    rows = all_rows(admin_engine, seq.schema)
    assert_gap_free_in_stream_order(rows)
    with admin_engine.connect() as conn:
        events_count = conn.exec_driver_sql(f'SELECT count(*) FROM "{seq.schema}".events').scalar()
    assert len(rows) == events_count == all_head(admin_engine, seq.schema)


def test_concurrent_sequencer_writers_on_distinct_streams(
    seq: EventStore, admin_engine: Engine, start_gate: Any
) -> None:
    def work(i: int) -> None:
        for b in range(10):
            seq.append_to_stream(f"w{i}", ANY_VERSION, events(1 + b % 3, tag=f"{i}-{b}"))

    results = start_gate(8, work)
    assert results == [None] * 8
    settle(seq)
    rows = all_rows(admin_engine, seq.schema)
    assert_gap_free_in_stream_order(rows)
    assert len(rows) == 8 * sum(1 + b % 3 for b in range(10))
    # Each append's events are adjacent in $all (one queue row, numbered together).
    read = seq.read_all_streams_forward(0, 10_000)
    tags = [e.data["tag"] for e in read]
    for tag in set(tags):
        positions = [p for p, t in enumerate(tags) if t == tag]
        assert positions == list(range(positions[0], positions[0] + len(positions)))


def left_waiting(store: EventStore, stream_uuid: str) -> None:
    """A committed append of one event that nothing numbered yet."""
    with store.engine.connect() as conn:
        conn.begin()
        store.append_to_stream(stream_uuid, 0, events(1), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()


@contextmanager
def sequencer_lock_held(admin_engine: Engine, schema: str) -> Iterator[None]:
    """Another session holds the schema's sequencer lock until the block ends."""
    holder = admin_engine.connect()
    try:
        holder.exec_driver_sql("BEGIN")
        key = holder.exec_driver_sql(
            f"SELECT CAST(CAST(CAST('\"{schema}\".unsequenced' AS regclass) AS oid) AS int)"
        ).scalar()
        holder.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s, 0)", {"k": key})
        yield
        holder.exec_driver_sql("COMMIT")
    finally:
        holder.close()


def test_one_sequencer_at_a_time(seq: EventStore, admin_engine: Engine) -> None:
    """The sequencer's advisory lock: a second call waits while one holds it,
    then finds the queue emptied and returns."""
    left_waiting(seq, "q")
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(seq.advance_all_stream()))
    with sequencer_lock_held(admin_engine, seq.schema):
        worker.start()
        time.sleep(0.3)
        assert done == [] and waiting(admin_engine, seq.schema) == 1
    worker.join(10)
    assert done == [1]
    assert seq.advance_all_stream() == -1  # nothing waits: no lock, no write


def test_numbering_after_a_commit_is_one_round_trip(seq: EventStore) -> None:
    """The append's call after its commit: one ``CALL eventstore_help()``,
    whose rounds (each committed) run in the database."""
    from sqlalchemy import event

    seq.append_to_stream("warm", 0, events(1))  # connect; look the procedure up
    settle(seq)
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(seq.engine, "before_cursor_execute", record)
    try:
        seq.append_to_stream("one", 0, events(2))
        settle(seq)
    finally:
        event.remove(seq.engine, "before_cursor_execute", record)
    calls = [s for s in sent if "eventstore_" in s and "EXECUTE" not in s]
    assert calls == [f'CALL "{seq.schema}".eventstore_help()']
    assert seq.advance_all_stream() == -1  # nothing left waiting


def test_the_help_procedure_leaves_a_busy_sequencer_to_its_holder(
    seq: EventStore, admin_engine: Engine
) -> None:
    """While another session holds the sequencer's lock the procedure returns at
    once (it only tries the lock); the events wait for the holder's next round."""
    left_waiting(seq, "busy")
    autocommit = admin_engine.execution_options(isolation_level="AUTOCOMMIT")
    with sequencer_lock_held(admin_engine, seq.schema):
        with autocommit.connect() as caller:
            began = time.monotonic()
            caller.exec_driver_sql(f'CALL "{seq.schema}".eventstore_help()')
            assert time.monotonic() - began < 5  # did not wait for the lock
        assert waiting(admin_engine, seq.schema) == 1
    with autocommit.connect() as caller:
        caller.exec_driver_sql(f'CALL "{seq.schema}".eventstore_help()')
    assert all_rows(admin_engine, seq.schema) == [(1, "busy", 1)]
    assert waiting(admin_engine, seq.schema) == 0


def test_a_schema_without_the_help_procedure_is_numbered_and_init_adds_it(
    seq: EventStore, make_store: Factory, admin_engine: Engine
) -> None:
    """Additions created before ``eventstore_help()`` existed: the store falls
    back to one call per round, and ``init()`` adds the procedure."""
    found = f"SELECT to_regprocedure('\"{seq.schema}\".eventstore_help(integer)')"
    with admin_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP PROCEDURE "{seq.schema}".eventstore_help(integer)')
    older = make_store(schema=seq.schema, global_order="sequencer", init=False)
    older.append_to_stream("old", 0, events(2))
    settle(older)
    assert all_rows(admin_engine, seq.schema) == [(1, "old", 1), (2, "old", 2)]
    with admin_engine.connect() as conn:
        assert conn.exec_driver_sql(found).scalar() is None
    assert older.init() is False  # the event store existed; its additions completed
    with admin_engine.connect() as conn:
        assert conn.exec_driver_sql(found).scalar() is not None
    newer = make_store(schema=seq.schema, global_order="sequencer", init=False)
    newer.append_to_stream("new", 0, events(1))
    settle(newer)
    assert all_rows(admin_engine, seq.schema)[-1] == (3, "new", 1)


def test_hard_delete_of_a_stream_with_waiting_events(
    make_store: Factory, admin_engine: Engine
) -> None:
    store = make_store(global_order="sequencer", enable_hard_deletes=True)
    with store.engine.connect() as conn:
        conn.begin()
        store.append_to_stream("doomed", 0, events(2), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()
    store.append_to_stream("kept", 0, events(1))  # numbers "doomed" first
    settle(store)
    with store.engine.connect() as conn:
        conn.begin()
        store.append_to_stream("doomed", 2, events(1), conn=conn)
        commit_behind_the_hooks(conn)
        conn.rollback()
    assert waiting(admin_engine, store.schema) == 1
    store.delete_stream("doomed", hard=True)
    assert waiting(admin_engine, store.schema) == 0
    assert all_rows(admin_engine, store.schema) == [(3, "kept", 1)]
    store.append_to_stream("after", 0, events(1))
    assert numbered(admin_engine, store.schema, 2)[-1] == (4, "after", 1)


def test_sequencer_appends_do_not_notify_at_commit(
    seq: EventStore, make_store: Factory, database_url: URL
) -> None:
    """NOTIFY serialises commits database-wide, so a sequencer-mode append sends
    none; the batch that numbers it notifies its stream and $all, with the
    reference's payloads. Lock-mode appends notify as the reference does."""
    import psycopg2

    listen = psycopg2.connect(database_url.set(drivername="postgresql").render_as_string(False))
    listen.autocommit = True
    try:
        listen.cursor().execute(f'LISTEN "{seq.schema}.events"')

        def heard() -> list[str]:
            time.sleep(0.2)
            listen.poll()
            payloads = [n.payload for n in listen.notifies]
            listen.notifies.clear()
            return payloads

        with seq.engine.connect() as conn:
            conn.begin()
            seq.append_to_stream("quiet", 0, events(2), conn=conn)
            commit_behind_the_hooks(conn)
            conn.rollback()
        assert heard() == []
        seq.advance_all_stream()
        stream_id = seq.stream_info("quiet").stream_id
        assert sorted(heard()) == sorted(["$all,0,1,2", f"quiet,{stream_id},1,2"])
        lock = lock_store_on(make_store, seq)
        lock.append_to_stream("loud", 0, events(1))
        loud_id = seq.stream_info("loud").stream_id
        assert sorted(heard()) == sorted(["$all,0,3,3", f"loud,{loud_id},1,1"])
    finally:
        listen.close()


def test_a_new_all_subscriber_gets_sequenced_events_live(seq: EventStore) -> None:
    sub = seq.subscribe_to_all_streams("live", buffer_size=100)
    try:
        assert sub.wait_subscribed(timeout=10)
        seq.append_to_stream("x", 0, events(2))
        got: list[int] = []
        while len(got) < 2:
            got += [e.event_number for e in sub.receive(timeout=5)]
        assert got == [1, 2]
    finally:
        sub.unsubscribe()


def test_single_stream_subscriber_hears_sequencer_appends(seq: EventStore) -> None:
    sub = seq.subscribe("solo")
    try:
        seq.append_to_stream("solo", 0, events(2))
        got: list[int] = []
        while len(got) < 2:
            got += [e.event_number for e in sub.receive(timeout=5)]
        assert got == [1, 2]
    finally:
        sub.unsubscribe()


def test_both_modes_on_connection_close_without_commit(
    seq: EventStore, admin_engine: Engine
) -> None:
    conn: Connection = seq.engine.connect()
    conn.begin()
    seq.append_to_stream("gone", 0, events(1), conn=conn)
    conn.close()  # rolled back by the pool
    seq.append_to_stream("here", 0, events(1))
    assert numbered(admin_engine, seq.schema, 1) == [(1, "here", 1)]
    assert os.getpid() > 0
