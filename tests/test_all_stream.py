"""The global ``$all`` stream as appends build it.

Ports the reference's test/streams/all_stream_test.exs (reading parts) and
the $all parts of test/event_store_test.exs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore.errors import (
    DuplicateEventError,
    StreamDeletedError,
    WrongExpectedVersionError,
)

from .event_factory import create_events, new_stream


@pytest.fixture
def two_streams(store: EventStore) -> tuple[str, str]:
    """The reference's append_events_to_streams: two streams of three events."""
    s1, s2 = new_stream(), new_stream()
    store.append_to_stream(s1, 0, create_events(3))
    store.append_to_stream(s2, 0, create_events(3, 4))
    return s1, s2


def test_empty_all_stream(store: EventStore) -> None:
    assert store.read_all_streams_forward() == []
    assert store.read_all_streams_backward() == []
    assert list(store.stream_all_forward()) == []
    info = store.stream_info(ALL_STREAM)
    assert (info.stream_uuid, info.stream_id, info.stream_version) == (ALL_STREAM, 0, 0)


def test_read_events_from_all_streams(store: EventStore, two_streams: tuple[str, str]) -> None:
    s1, s2 = two_streams

    events = store.read_all_streams_forward(0, 1_000)

    assert len(events) == 6
    assert [e.event_number for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.stream_uuid for e in events] == [s1] * 3 + [s2] * 3
    assert [e.stream_version for e in events] == [1, 2, 3, 1, 2, 3]
    assert [e.data["event"] for e in events] == [1, 2, 3, 4, 5, 6]


def test_all_stream_events_are_the_stream_events(
    store: EventStore, two_streams: tuple[str, str]
) -> None:
    s1, s2 = two_streams
    in_all = store.read_all_streams_forward()
    own = store.read_stream_forward(s1) + store.read_stream_forward(s2)

    for global_event, stream_event in zip(in_all, own, strict=True):
        assert global_event.event_id == stream_event.event_id
        assert global_event.stream_uuid == stream_event.stream_uuid
        assert global_event.stream_version == stream_event.stream_version
        assert global_event.data == stream_event.data
        assert global_event.metadata == stream_event.metadata
        assert global_event.causation_id == stream_event.causation_id
        assert global_event.correlation_id == stream_event.correlation_id
        assert global_event.created_at == stream_event.created_at
    # event_number is the position in the stream read, so it differs for s2.
    assert [e.event_number for e in own] == [1, 2, 3, 1, 2, 3]


def test_read_all_is_read_stream_of_all(store: EventStore, two_streams: tuple[str, str]) -> None:
    assert store.read_stream_forward(ALL_STREAM) == store.read_all_streams_forward()
    assert store.read_stream_backward(ALL_STREAM) == store.read_all_streams_backward()


@pytest.mark.parametrize("batch_size", [1, 2, 5, 6, 1_000])
def test_stream_all_forward_in_batches(
    store: EventStore, two_streams: tuple[str, str], batch_size: int
) -> None:
    events = list(store.stream_all_forward(read_batch_size=batch_size))

    assert [e.event_number for e in events] == [1, 2, 3, 4, 5, 6]
    assert events == store.read_all_streams_forward()


@pytest.mark.parametrize("batch_size", [1, 2, 5, 1_000])
def test_stream_all_backward_in_batches(
    store: EventStore, two_streams: tuple[str, str], batch_size: int
) -> None:
    events = list(store.stream_all_backward(read_batch_size=batch_size))

    assert [e.event_number for e in events] == [6, 5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    ("start", "count", "numbers"),
    [
        (0, 1_000, [1, 2, 3, 4, 5, 6]),
        (1, 1_000, [1, 2, 3, 4, 5, 6]),
        (2, 3, [2, 3, 4]),
        (4, 1, [4]),
        (6, 10, [6]),
        (7, 10, []),
        (100, 10, []),
        (0, 2, [1, 2]),
        (3, 0, []),
    ],
)
def test_read_all_forward_with_start_and_count(
    store: EventStore, two_streams: tuple[str, str], start: int, count: int, numbers: list[int]
) -> None:
    assert [e.event_number for e in store.read_all_streams_forward(start, count)] == numbers


@pytest.mark.parametrize(
    ("start", "count", "numbers"),
    [
        (-1, 1_000, [6, 5, 4, 3, 2, 1]),
        (-1, 2, [6, 5]),
        (6, 3, [6, 5, 4]),
        (4, 2, [4, 3]),
        (1, 10, [1]),
        (100, 2, [6, 5]),
        (3, 0, []),
    ],
)
def test_read_all_backward_with_start_and_count(
    store: EventStore, two_streams: tuple[str, str], start: int, count: int, numbers: list[int]
) -> None:
    assert [e.event_number for e in store.read_all_streams_backward(start, count)] == numbers


def test_stream_all_forward_from_a_position(
    store: EventStore, two_streams: tuple[str, str]
) -> None:
    assert [e.event_number for e in store.stream_all_forward(4, read_batch_size=1)] == [4, 5, 6]
    assert [e.event_number for e in store.stream_all_backward(2, read_batch_size=1)] == [2, 1]


def test_global_order_is_append_order_across_streams(store: EventStore) -> None:
    s1, s2, s3 = new_stream(), new_stream(), new_stream()
    appends = [(s1, 0, 2), (s2, 0, 1), (s1, 2, 3), (s3, 0, 2), (s2, 1, 1), (s1, 5, 1)]
    expected: list[tuple[str, int]] = []
    for stream_uuid, version, n in appends:
        store.append_to_stream(stream_uuid, version, create_events(n))
        expected += [(stream_uuid, version + i + 1) for i in range(n)]

    events = store.read_all_streams_forward()

    assert [e.event_number for e in events] == list(range(1, len(expected) + 1))
    assert [(e.stream_uuid, e.stream_version) for e in events] == expected
    assert store.stream_info(ALL_STREAM).stream_version == len(expected) == 10


def test_all_stream_version_is_the_last_event_number(
    store: EventStore, two_streams: tuple[str, str]
) -> None:
    store.append_to_stream(two_streams[0], ANY_VERSION, create_events(4))

    [last] = store.read_all_streams_backward(count=1)
    assert last.event_number == store.stream_info(ALL_STREAM).stream_version == 10


@pytest.mark.sync_only  # a sync Connection: the async twin is in test_asyncio.py
def test_failed_appends_leave_all_gap_free(store: EventStore, two_streams: tuple[str, str]) -> None:
    s1, _ = two_streams
    duplicate = store.read_all_streams_forward(1, 1)[0].event_id

    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(s1, 1, create_events(2))
    with pytest.raises(DuplicateEventError):
        store.append_to_stream(new_stream(), 0, [EventData("E", {}, event_id=duplicate)])
    with store.engine.connect() as conn, conn.begin() as tx:
        store.append_to_stream(new_stream(), 0, create_events(5), conn=conn)
        tx.rollback()
    store.append_to_stream(s1, 3, create_events(2))

    events = store.read_all_streams_forward()
    assert [e.event_number for e in events] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [(e.stream_uuid, e.stream_version) for e in events[6:]] == [(s1, 4), (s1, 5)]


def test_soft_deleted_stream_events_stay_in_all(
    store: EventStore, two_streams: tuple[str, str]
) -> None:
    s1, s2 = two_streams
    before = store.read_all_streams_forward()

    store.delete_stream(s1)

    with pytest.raises(StreamDeletedError):
        store.read_stream_forward(s1)
    assert store.read_all_streams_forward() == before
    store.append_to_stream(s2, 3, create_events(1))
    assert [e.event_number for e in store.read_all_streams_forward()] == list(range(1, 8))


def test_all_streams_of_separate_stores_are_separate(
    make_store: Callable[..., EventStore], driver: str
) -> None:
    a, b = make_store(driver=driver), make_store(driver=driver)

    a.append_to_stream("shared-name", 0, create_events(2))
    b.append_to_stream("shared-name", 0, create_events(3))
    a.append_to_stream("other", 0, create_events(1))

    assert [e.event_number for e in a.read_all_streams_forward()] == [1, 2, 3]
    assert [e.event_number for e in b.read_all_streams_forward()] == [1, 2, 3]
    assert [e.stream_uuid for e in a.read_all_streams_forward()] == ["shared-name"] * 2 + ["other"]
    assert b.stream_info("shared-name").stream_version == 3
