"""Concurrent writers on real threads and real connections.

Two kinds of test. Races: ``start_gate`` releases N threads together and the
outcome must hold whoever wins (the reference's "append events to same stream
concurrently" and "link events to same stream concurrently", and more).
Interleavings: one writer holds its transaction open while a second writer is
observed (in ``pg_stat_activity``) waiting on its lock, then the first commits
or rolls back -- so each path through the append statement's waits is taken
for certain, not by luck.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from sqlalchemy_eventstore import (
    ALL_STREAM,
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    EventData,
    EventStore,
    RecordedEvent,
)
from sqlalchemy_eventstore.errors import (
    DuplicateEventError,
    StreamDeletedError,
    StreamExistsError,
    WrongExpectedVersionError,
)

from .event_factory import new_stream

Gate = Callable[[int, Callable[[int], Any]], list[Any]]

WRITERS = 8


def tagged(writer: int, batch: int, n: int) -> list[EventData]:
    """A batch whose events say who wrote them, in which batch, at which index."""
    return [EventData("Tagged", {"w": writer, "b": batch, "i": i}) for i in range(n)]


def successes(results: list[Any]) -> list[int]:
    return [i for i, result in enumerate(results) if result is None]


def assert_only(results: list[Any], error: type[Exception], *, winners: int) -> None:
    """``winners`` calls returned, every other one raised exactly ``error``."""
    assert len(successes(results)) == winners, results
    for result in results:
        if result is not None:
            assert type(result) is error, repr(result)
            assert not isinstance(result, SQLAlchemyError)


def assert_contiguous_batches(events: list[RecordedEvent], batch_size: int) -> None:
    """Positions are 1..N, and each batch occupies consecutive positions in order."""
    assert [e.event_number for e in events] == list(range(1, len(events) + 1))
    assert len(events) % batch_size == 0
    seen: set[tuple[int, int]] = set()
    for start in range(0, len(events), batch_size):
        batch = events[start : start + batch_size]
        owner = {(e.data["w"], e.data["b"]) for e in batch}
        assert len(owner) == 1, f"interleaved batch at position {start + 1}: {owner}"
        assert [e.data["i"] for e in batch] == list(range(batch_size))
        assert owner.isdisjoint(seen)
        seen |= owner


def writer(
    store: EventStore, stream_uuid: str, expected: Any, size: int, batch: int = 0
) -> Callable[[int], None]:
    """Writer ``i`` appends one tagged batch of ``size`` events."""

    def append(i: int) -> None:
        store.append_to_stream(stream_uuid, expected, tagged(i, batch, size))

    return append


def linker(store: EventStore, target: str, events: list[RecordedEvent]) -> Callable[[int], None]:
    """Every caller links the same events into ``target`` with ANY_VERSION."""

    def link(_i: int) -> None:
        store.link_to_stream(target, ANY_VERSION, events)

    return link


# -- races ----------------------------------------------------------------------


def test_same_expected_version_exactly_one_wins(store: EventStore, start_gate: Gate) -> None:
    for _round in range(3):
        stream_uuid = new_stream()
        store.append_to_stream(stream_uuid, 0, tagged(-1, 0, 2))
        all_before = store.stream_info(ALL_STREAM).stream_version

        results = start_gate(WRITERS, writer(store, stream_uuid, 2, 3, batch=1))

        assert_only(results, WrongExpectedVersionError, winners=1)
        [winner] = successes(results)
        events = store.read_stream_forward(stream_uuid)
        assert [e.stream_version for e in events] == [1, 2, 3, 4, 5]
        assert [e.data["w"] for e in events[2:]] == [winner] * 3
        assert store.stream_info(ALL_STREAM).stream_version == all_before + 3


@pytest.mark.parametrize(
    ("expected", "error"), [(0, WrongExpectedVersionError), (NO_STREAM, StreamExistsError)]
)
def test_racing_first_appends_one_wins(
    store: EventStore, start_gate: Gate, expected: Any, error: type[Exception]
) -> None:
    for _round in range(3):
        stream_uuid = new_stream()

        results = start_gate(WRITERS, writer(store, stream_uuid, expected, 2))

        # Never a unique violation (IntegrityError) from the racing INSERTs.
        assert_only(results, error, winners=1)
        [winner] = successes(results)
        events = store.read_stream_forward(stream_uuid)
        assert [(e.stream_version, e.data["w"]) for e in events] == [(1, winner), (2, winner)]
    assert [e.event_number for e in store.read_all_streams_forward()] == list(range(1, 7))


def test_racing_appends_with_the_same_event_ids(store: EventStore, start_gate: Gate) -> None:
    # append_events_test: the same events appended five times at once.
    stream_uuid = new_stream()
    events = [EventData("E", {"n": i}, event_id=str(uuid.uuid4())) for i in range(10)]

    results = start_gate(5, lambda i: store.append_to_stream(stream_uuid, 0, events))

    assert_only(results, WrongExpectedVersionError, winners=1)
    recorded = store.read_stream_forward(stream_uuid)
    assert [e.event_id for e in recorded] == [e.event_id for e in events]
    assert len(store.read_all_streams_forward()) == 10


def test_any_version_writers_to_one_stream_all_succeed(store: EventStore, start_gate: Gate) -> None:
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, tagged(-1, 0, 4))
    batches, size = 5, 4

    def writer(i: int) -> None:
        for b in range(batches):
            store.append_to_stream(stream_uuid, ANY_VERSION, tagged(i, b, size))

    results = start_gate(WRITERS, writer)

    assert results == [None] * WRITERS
    total = size * (1 + WRITERS * batches)
    events = list(store.stream_forward(stream_uuid))
    assert [e.stream_version for e in events] == list(range(1, total + 1))
    assert_contiguous_batches(events, size)
    for i in range(WRITERS):  # each writer's batches landed in its own order
        mine = [e.data["b"] for e in events if e.data["w"] == i and e.data["i"] == 0]
        assert mine == list(range(batches))
    assert_contiguous_batches(store.read_all_streams_forward(0, total + 1), size)
    assert store.stream_info(stream_uuid).stream_version == total


def test_racing_first_appends_with_any_version_all_succeed(
    store: EventStore, start_gate: Gate
) -> None:
    size = 3
    for _round in range(3):
        stream_uuid = new_stream()

        results = start_gate(WRITERS, writer(store, stream_uuid, ANY_VERSION, size))

        assert results == [None] * WRITERS
        events = store.read_stream_forward(stream_uuid)
        assert len(events) == WRITERS * size
        assert_contiguous_batches(events, size)
        assert {e.data["w"] for e in events} == set(range(WRITERS))
        assert store.stream_info(stream_uuid).stream_version == WRITERS * size


def test_stream_exists_writers_race_to_an_existing_stream(
    store: EventStore, start_gate: Gate
) -> None:
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, tagged(-1, 0, 2))

    results = start_gate(WRITERS, writer(store, stream_uuid, STREAM_EXISTS, 2))

    assert results == [None] * WRITERS
    assert_contiguous_batches(store.read_stream_forward(stream_uuid), 2)


def test_writers_on_different_streams_and_readers_of_all(
    store: EventStore, start_gate: Gate
) -> None:
    writers, readers, batches, size = 8, 3, 10, 3
    total = writers * batches * size
    streams = [new_stream() for _ in range(writers)]
    finished = threading.Event()
    done_writers: list[int] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        try:
            for b in range(batches):
                store.append_to_stream(streams[i], b * size, tagged(i, b, size))
        finally:
            with lock:
                done_writers.append(i)
                if len(done_writers) == writers:
                    finished.set()

    def read() -> list[int]:
        # Poll $all the way a catch-up subscription does: from the next
        # expected position. Seeing n+1 before n was committed would skip n.
        seen: list[int] = []
        position = 1
        while position <= total:
            was_finished = finished.is_set()
            events = store.read_all_streams_forward(position, 25)
            numbers = [e.event_number for e in events]
            assert numbers == list(range(position, position + len(numbers))), (position, numbers)
            seen += numbers
            position += len(numbers)
            if not events and was_finished:
                break
        return seen

    results = start_gate(writers + readers, lambda i: write(i) if i < writers else read())

    assert results[:writers] == [None] * writers
    for seen in results[writers:]:
        assert seen == list(range(1, total + 1))
    everything = store.read_all_streams_forward(0, total + 1)
    assert_contiguous_batches(everything, size)
    for i, stream_uuid in enumerate(streams):
        mine = [e for e in everything if e.stream_uuid == stream_uuid]
        assert [e.stream_version for e in mine] == list(range(1, batches * size + 1))
        assert {e.data["w"] for e in mine} == {i}


def test_racing_links_of_the_same_events(store: EventStore, start_gate: Gate) -> None:
    # link_events_test: "link events to same stream concurrently".
    source, existing_target = new_stream(), new_stream()
    store.append_to_stream(source, 0, tagged(0, 0, 3))
    store.append_to_stream(existing_target, 0, tagged(1, 0, 1))
    events = store.read_stream_forward(source)

    for target in (existing_target, new_stream()):
        results = start_gate(5, linker(store, target, events))

        assert_only(results, DuplicateEventError, winners=1)
        linked = [e.event_id for e in store.read_stream_forward(target)]
        assert linked[-3:] == [e.event_id for e in events]
        assert len(linked) == len(set(linked))
    assert store.stream_info(existing_target).stream_version == 4
    assert store.stream_info(ALL_STREAM).stream_version == 4


def test_racing_links_with_an_expected_version(store: EventStore, start_gate: Gate) -> None:
    source, target = new_stream(), new_stream()
    store.append_to_stream(source, 0, tagged(0, 0, 5))
    events = store.read_stream_forward(source)

    results = start_gate(5, lambda i: store.link_to_stream(target, 0, [events[i]]))

    assert_only(results, WrongExpectedVersionError, winners=1)
    [winner] = successes(results)
    [linked] = store.read_stream_forward(target)
    assert linked.event_id == events[winner].event_id


# -- interleavings ------------------------------------------------------------


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], Any]], Future[Any]]]:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="second-writer") as pool:
        yield pool.submit


def wait_until_blocked(admin_engine: Engine, future: Future[Any]) -> None:
    """Return once a session of this database waits on a lock (the second writer)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 30  # a guard against hanging, not a timing check
    while time.monotonic() < deadline:
        assert not future.done(), f"the second writer did not wait: {future.result()!r}"
        with admin_engine.connect() as conn:
            if conn.execute(query).scalar():
                return
        time.sleep(0.005)
    raise AssertionError("the second writer never waited on a lock")


def outcome(future: Future[Any]) -> Any:
    try:
        return future.result(timeout=30)
    except Exception as error:
        return error


@pytest.mark.parametrize(
    ("first_ends", "expected", "result", "versions"),
    [
        ("commit", 3, WrongExpectedVersionError, [1, 2, 3, 4, 5]),
        ("rollback", 3, None, [1, 2, 3, 4, 5]),
        ("commit", ANY_VERSION, None, [1, 2, 3, 4, 5, 6, 7]),
        ("commit", STREAM_EXISTS, None, [1, 2, 3, 4, 5, 6, 7]),
        ("commit", NO_STREAM, StreamExistsError, [1, 2, 3, 4, 5]),
    ],
)
def test_second_writer_waits_for_the_first_on_an_existing_stream(
    store: EventStore,
    admin_engine: Engine,
    background: Callable[[Callable[[], Any]], Future[Any]],
    first_ends: str,
    expected: Any,
    result: Any,
    versions: list[int],
) -> None:
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, tagged(0, 0, 3))

    with store.engine.connect() as conn:
        tx = conn.begin()
        store.append_to_stream(stream_uuid, 3, tagged(1, 0, 2), conn=conn)
        second = background(lambda: store.append_to_stream(stream_uuid, expected, tagged(2, 0, 2)))
        wait_until_blocked(admin_engine, second)
        tx.commit() if first_ends == "commit" else tx.rollback()
        got = outcome(second)

    if result is None:
        assert got is None
    else:
        assert type(got) is result
    events = store.read_stream_forward(stream_uuid)
    assert [e.stream_version for e in events] == versions
    assert [e.event_number for e in store.read_all_streams_forward()] == versions


@pytest.mark.parametrize(
    ("first_ends", "expected", "result", "writers"),
    [
        ("commit", 0, WrongExpectedVersionError, [1, 1]),
        ("commit", NO_STREAM, StreamExistsError, [1, 1]),
        ("commit", ANY_VERSION, None, [1, 1, 2, 2]),
        ("rollback", 0, None, [2, 2]),
        ("rollback", NO_STREAM, None, [2, 2]),
        ("rollback", ANY_VERSION, None, [2, 2]),
    ],
)
def test_second_writer_waits_for_the_first_creating_a_stream(
    store: EventStore,
    admin_engine: Engine,
    background: Callable[[Callable[[], Any]], Future[Any]],
    first_ends: str,
    expected: Any,
    result: Any,
    writers: list[int],
) -> None:
    stream_uuid = new_stream()

    with store.engine.connect() as conn:
        tx = conn.begin()
        store.append_to_stream(stream_uuid, 0, tagged(1, 0, 2), conn=conn)
        second = background(lambda: store.append_to_stream(stream_uuid, expected, tagged(2, 0, 2)))
        wait_until_blocked(admin_engine, second)
        tx.commit() if first_ends == "commit" else tx.rollback()
        got = outcome(second)

    if result is None:
        assert got is None
    else:
        assert type(got) is result
    events = store.read_stream_forward(stream_uuid)
    assert [e.data["w"] for e in events] == writers
    assert [e.stream_version for e in events] == list(range(1, len(writers) + 1))
    assert [e.event_number for e in store.read_all_streams_forward()] == list(
        range(1, len(writers) + 1)
    )


def test_append_waiting_on_a_soft_delete(
    store: EventStore,
    admin_engine: Engine,
    background: Callable[[Callable[[], Any]], Future[Any]],
) -> None:
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, tagged(0, 0, 2))

    with store.engine.connect() as conn:
        tx = conn.begin()
        store.delete_stream(stream_uuid, conn=conn)
        second = background(
            lambda: store.append_to_stream(stream_uuid, ANY_VERSION, tagged(1, 0, 1))
        )
        wait_until_blocked(admin_engine, second)
        tx.commit()
        got = outcome(second)

    assert type(got) is StreamDeletedError
    assert store.stream_info(ALL_STREAM).stream_version == 2


def test_all_positions_follow_commit_order(
    store: EventStore,
    admin_engine: Engine,
    background: Callable[[Callable[[], Any]], Future[Any]],
) -> None:
    first_stream, second_stream = new_stream(), new_stream()
    store.append_to_stream(new_stream(), 0, tagged(0, 0, 1))

    with store.engine.connect() as conn:
        tx = conn.begin()
        store.append_to_stream(first_stream, 0, tagged(1, 0, 2), conn=conn)
        if store.global_order == "lock":
            # A writer to another stream waits for $all, so it cannot commit
            # position 4 while positions 2 and 3 are still uncommitted.
            second = background(lambda: store.append_to_stream(second_stream, 0, tagged(2, 0, 2)))
            wait_until_blocked(admin_engine, second)
            assert [e.event_number for e in store.read_all_streams_forward()] == [1]
        else:
            # Sequencer: the other writer does not wait; it commits first and
            # is numbered first.
            store.append_to_stream(second_stream, 0, tagged(2, 0, 2))
            assert [e.data["w"] for e in store.read_all_streams_forward()] == [0, 2, 2]
        tx.commit()
        if store.global_order == "lock":
            assert outcome(second) is None

    events = store.read_all_streams_forward()
    later, earlier = (2, 1) if store.global_order == "lock" else (1, 2)
    assert [(e.event_number, e.data["w"]) for e in events] == [
        (1, 0),
        (2, earlier),
        (3, earlier),
        (4, later),
        (5, later),
    ]


@pytest.mark.parametrize("target_exists", [True, False])
@pytest.mark.parametrize(
    ("first_ends", "result"), [("commit", DuplicateEventError), ("rollback", None)]
)
def test_second_linker_waits_for_the_first(
    store: EventStore,
    admin_engine: Engine,
    background: Callable[[Callable[[], Any]], Future[Any]],
    target_exists: bool,
    first_ends: str,
    result: Any,
) -> None:
    source, target = new_stream(), new_stream()
    store.append_to_stream(source, 0, tagged(0, 0, 3))
    events = store.read_stream_forward(source)
    if target_exists:
        store.append_to_stream(target, 0, tagged(1, 0, 1))
    offset = 1 if target_exists else 0

    with store.engine.connect() as conn:
        tx = conn.begin()
        store.link_to_stream(target, ANY_VERSION, events, conn=conn)
        second = background(lambda: store.link_to_stream(target, ANY_VERSION, events[1:]))
        wait_until_blocked(admin_engine, second)
        tx.commit() if first_ends == "commit" else tx.rollback()
        got = outcome(second)

    if result is None:
        assert got is None
        expected_ids = [e.event_id for e in events[1:]]
    else:
        assert type(got) is result
        expected_ids = [e.event_id for e in events]
    linked = store.read_stream_forward(target)[offset:]
    assert [e.event_id for e in linked] == expected_ids
    assert [e.event_number for e in linked] == list(range(1 + offset, 1 + offset + len(linked)))
    assert store.stream_info(target).stream_version == offset + len(expected_ids)
