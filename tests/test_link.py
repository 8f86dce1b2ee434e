"""Linking existing events into other streams.

Ports the reference's test/storage/link_events_test.exs and the link parts of
test/streams/single_stream_test.exs and test/event_store_test.exs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

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
    CannotAppendToAllStreamError,
    DuplicateEventError,
    EventNotFoundError,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

from .event_factory import create_events, new_stream
from .sequencer_helpers import calls_own


@contextmanager
def recorded_statements(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def same_event(source: RecordedEvent, linked: RecordedEvent) -> None:
    """Everything but event_number is the original event's."""
    assert linked.event_id == source.event_id
    assert linked.stream_uuid == source.stream_uuid
    assert linked.stream_version == source.stream_version
    assert linked.causation_id == source.causation_id
    assert linked.correlation_id == source.correlation_id
    assert linked.event_type == source.event_type
    assert linked.data == source.data
    assert linked.metadata == source.metadata
    assert linked.created_at == source.created_at


def target_state(store: EventStore, stream_uuid: str) -> Any:
    try:
        return store.read_stream_forward(stream_uuid), store.stream_info(stream_uuid)
    except StreamNotFoundError:
        return "not found"


@pytest.fixture
def source(store: EventStore) -> tuple[str, list[RecordedEvent]]:
    """A stream of three events, as read back."""
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, create_events(3))
    return stream_uuid, store.read_stream_forward(stream_uuid)


@pytest.fixture
def other(store: EventStore) -> str:
    """Another stream holding one event (the reference's append_event_to_another_stream)."""
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, create_events(1, 10))
    return stream_uuid


def test_link_single_event_to_new_stream(store: EventStore, source: Any) -> None:
    _, events = source
    target = new_stream()

    store.link_to_stream(target, 0, [events[0].event_id])

    [linked] = store.read_stream_forward(target)
    assert linked.event_number == 1
    same_event(events[0], linked)
    assert store.stream_info(target).stream_version == 1


def test_link_multiple_events_to_new_stream(store: EventStore, source: Any) -> None:
    _, events = source
    target = new_stream()

    store.link_to_stream(target, 0, [e.event_id for e in events])

    assert len(store.read_stream_forward(target)) == 3


def test_read_linked_events_equal_the_source_events(store: EventStore, source: Any) -> None:
    # event_store_test: "should read linked events" -- in a new target stream
    # the positions coincide, so the events are equal field for field.
    source_uuid, events = source
    target = new_stream()

    store.link_to_stream(target, 0, [e.event_id for e in events])

    assert store.read_stream_forward(target) == store.read_stream_forward(source_uuid) == events


def test_link_recorded_events_after_an_existing_event(
    store: EventStore, source: Any, other: str
) -> None:
    source_uuid, events = source

    store.link_to_stream(other, 1, events)

    linked = store.read_stream_forward(other)
    assert [e.event_number for e in linked] == [1, 2, 3, 4]
    assert [e.stream_version for e in linked] == [1, 1, 2, 3]
    assert [e.stream_uuid for e in linked] == [other, source_uuid, source_uuid, source_uuid]
    for original, copy in zip(events, linked[1:], strict=True):
        same_event(original, copy)
    assert store.stream_info(other).stream_version == 4


def test_link_a_mix_of_recorded_events_and_ids(store: EventStore, source: Any) -> None:
    _, events = source
    target = new_stream()

    store.link_to_stream(
        target, NO_STREAM, [events[2], events[0].event_id, uuid.UUID(events[1].event_id)]
    )

    linked = store.read_stream_forward(target)
    assert [e.event_id for e in linked] == [
        events[2].event_id,
        events[0].event_id,
        events[1].event_id,
    ]
    assert [e.event_number for e in linked] == [1, 2, 3]
    assert [e.stream_version for e in linked] == [3, 1, 2]


def test_linked_events_read_backward(store: EventStore, source: Any, other: str) -> None:
    _, events = source
    store.link_to_stream(other, 1, events)

    backward = store.read_stream_backward(other)
    assert [e.event_number for e in backward] == [4, 3, 2, 1]
    assert [e.event_id for e in backward[:3]] == [e.event_id for e in reversed(events)]
    assert [e.event_number for e in store.stream_backward(other, read_batch_size=1)] == [4, 3, 2, 1]


def test_link_events_read_from_a_linked_stream_and_from_all(store: EventStore, source: Any) -> None:
    source_uuid, events = source
    first, second, third = new_stream(), new_stream(), new_stream()
    store.link_to_stream(first, 0, events[1:])

    store.link_to_stream(second, 0, store.read_stream_forward(first))
    store.link_to_stream(third, 0, store.read_all_streams_forward(2, 1))

    twice = store.read_stream_forward(second)
    assert [(e.event_number, e.stream_uuid, e.stream_version) for e in twice] == [
        (1, source_uuid, 2),
        (2, source_uuid, 3),
    ]
    [from_all] = store.read_stream_forward(third)
    assert (from_all.event_number, from_all.stream_uuid, from_all.stream_version) == (
        1,
        source_uuid,
        2,
    )


def test_link_to_different_streams(store: EventStore, source: Any) -> None:
    _, events = source
    t1, t2 = new_stream(), new_stream()

    store.link_to_stream(t1, 0, events)
    store.link_to_stream(t2, 0, events)

    assert store.read_stream_forward(t1) == store.read_stream_forward(t2) == events


def test_append_after_linking_continues_the_target_version(store: EventStore, source: Any) -> None:
    source_uuid, events = source
    target = new_stream()
    store.link_to_stream(target, 0, events)

    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(target, 0, create_events(1))
    store.append_to_stream(target, 3, create_events(1, 4))

    read = store.read_stream_forward(target)
    assert [(e.event_number, e.stream_uuid, e.stream_version) for e in read] == [
        (1, source_uuid, 1),
        (2, source_uuid, 2),
        (3, source_uuid, 3),
        (4, target, 4),
    ]
    # Only the appended event joined $all.
    assert [e.event_number for e in store.read_all_streams_forward()] == [1, 2, 3, 4]
    assert store.read_all_streams_forward(4)[0].stream_uuid == target


def test_linking_does_not_add_to_all(store: EventStore, source: Any, other: str) -> None:
    _, events = source
    before = store.read_all_streams_forward()
    assert len(before) == 4

    store.link_to_stream(other, 1, events)
    store.link_to_stream(new_stream(), 0, events)

    assert store.read_all_streams_forward() == before
    assert store.stream_info(ALL_STREAM).stream_version == 4


def test_link_is_one_statement(store: EventStore, source: Any) -> None:
    _, events = source
    target = new_stream()
    with recorded_statements(store.engine) as statements:
        store.link_to_stream(target, 0, events)
    assert len(calls_own(store, statements)) == 1
    assert len(store.read_stream_forward(target)) == 3


def test_link_many_events(store: EventStore) -> None:
    source_uuid, target = new_stream(), new_stream()
    store.append_to_stream(source_uuid, 0, [EventData("E", {"n": i}) for i in range(1, 3_001)])
    events = list(store.stream_forward(source_uuid))

    with recorded_statements(store.engine) as statements:
        store.link_to_stream(target, 0, events)

    assert len(calls_own(store, statements)) == 1
    linked = list(store.stream_forward(target, read_batch_size=700))
    assert [e.event_number for e in linked] == list(range(1, 3_001))
    assert [e.data["n"] for e in linked] == list(range(1, 3_001))


# -- failures ---------------------------------------------------------------


def test_link_unknown_event_to_new_stream(store: EventStore) -> None:
    target = new_stream()

    with pytest.raises(EventNotFoundError) as raised:
        store.link_to_stream(target, 0, [str(uuid.uuid4())])

    assert raised.value.reason == "not_found"
    assert target_state(store, target) == "not found"


@pytest.mark.parametrize("expected", [1, ANY_VERSION, STREAM_EXISTS])
def test_link_unknown_event_among_known_ones_links_nothing(
    store: EventStore, source: Any, other: str, expected: Any
) -> None:
    _, events = source
    before = target_state(store, other)

    with pytest.raises(EventNotFoundError):
        store.link_to_stream(other, expected, [events[0], str(uuid.uuid4()), events[1]])

    assert target_state(store, other) == before
    assert store.stream_info(other).stream_version == 1


def test_expected_version_is_checked_before_the_events(
    store: EventStore, source: Any, other: str
) -> None:
    _, events = source

    with pytest.raises(WrongExpectedVersionError):
        store.link_to_stream(other, 0, [str(uuid.uuid4())])
    with pytest.raises(StreamExistsError):
        store.link_to_stream(other, NO_STREAM, [events[0], str(uuid.uuid4())])

    assert store.stream_info(other).stream_version == 1


def test_link_twice_to_the_same_stream(store: EventStore, source: Any, other: str) -> None:
    _, events = source
    store.link_to_stream(other, 1, events)
    before = target_state(store, other)

    with pytest.raises(DuplicateEventError) as raised:
        store.link_to_stream(other, 4, events)

    assert raised.value.reason == "duplicate_event"
    assert target_state(store, other) == before


@pytest.mark.parametrize("expected", [2, ANY_VERSION, STREAM_EXISTS])
def test_link_partly_linked_events(store: EventStore, source: Any, expected: Any) -> None:
    _, events = source
    target = new_stream()
    store.link_to_stream(target, 0, events[:2])
    before = target_state(store, target)

    with pytest.raises(DuplicateEventError):
        store.link_to_stream(target, expected, [events[2], events[1]])

    assert target_state(store, target) == before


def test_link_the_same_event_twice_in_one_call(store: EventStore, source: Any) -> None:
    _, events = source
    target = new_stream()

    with pytest.raises(DuplicateEventError):
        store.link_to_stream(target, 0, [events[0], events[0].event_id])

    assert target_state(store, target) == "not found"


def test_link_an_event_into_its_own_stream(store: EventStore, source: Any) -> None:
    source_uuid, events = source
    before = target_state(store, source_uuid)

    with pytest.raises(DuplicateEventError):
        store.link_to_stream(source_uuid, 3, [events[0]])

    assert target_state(store, source_uuid) == before


@pytest.mark.parametrize("expected", [0, 1, ANY_VERSION, NO_STREAM, STREAM_EXISTS])
def test_link_into_all_stream(store: EventStore, source: Any, expected: Any) -> None:
    _, events = source

    with pytest.raises(CannotAppendToAllStreamError) as raised:
        store.link_to_stream(ALL_STREAM, expected, [e.event_id for e in events])

    assert raised.value.reason == "cannot_append_to_all_stream"
    assert [e.event_number for e in store.read_all_streams_forward()] == [1, 2, 3]


# -- expected versions ----------------------------------------------------------


@pytest.mark.parametrize("expected", [0, ANY_VERSION, NO_STREAM])
def test_link_into_new_stream_with(store: EventStore, source: Any, expected: Any) -> None:
    _, events = source
    target = new_stream()

    store.link_to_stream(target, expected, events)

    assert store.read_stream_forward(target) == events


@pytest.mark.parametrize("expected", [1, ANY_VERSION, STREAM_EXISTS])
def test_link_into_existing_stream_with(
    store: EventStore, source: Any, other: str, expected: Any
) -> None:
    _, events = source

    store.link_to_stream(other, expected, events)

    assert [e.event_number for e in store.read_stream_forward(other)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("expected", "error"),
    [
        (0, WrongExpectedVersionError),
        (2, WrongExpectedVersionError),
        (NO_STREAM, StreamExistsError),
    ],
)
def test_link_into_existing_stream_fails_with(
    store: EventStore, source: Any, other: str, expected: Any, error: type[Exception]
) -> None:
    _, events = source
    before = target_state(store, other)

    with pytest.raises(error):
        store.link_to_stream(other, expected, events)

    assert target_state(store, other) == before


@pytest.mark.parametrize(
    ("expected", "error"),
    [
        (1, WrongExpectedVersionError),
        (3, WrongExpectedVersionError),
        (STREAM_EXISTS, StreamNotFoundError),
    ],
)
def test_link_into_missing_stream_fails_with(
    store: EventStore, source: Any, expected: Any, error: type[Exception]
) -> None:
    _, events = source
    target = new_stream()

    with pytest.raises(error):
        store.link_to_stream(target, expected, events)

    assert target_state(store, target) == "not found"


@pytest.mark.parametrize("expected", [0, 1, ANY_VERSION, NO_STREAM, STREAM_EXISTS])
def test_link_into_soft_deleted_stream(
    store: EventStore, source: Any, other: str, expected: Any
) -> None:
    _, events = source
    store.delete_stream(other)

    with pytest.raises(StreamDeletedError):
        store.link_to_stream(other, expected, events)

    [info] = store.paginate_streams(search=other).entries
    assert (info.status, info.stream_version) == ("deleted", 1)


# -- arguments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "error"),
    [([], ValueError), (["not-a-uuid"], ValueError), ([42], TypeError), ("abc", TypeError)],
)
def test_bad_link_arguments_run_no_sql(
    store: EventStore, items: Any, error: type[Exception]
) -> None:
    store.stream_info(ALL_STREAM)
    target = new_stream()

    with recorded_statements(store.engine) as statements, pytest.raises(error):
        store.link_to_stream(target, 0, items)

    assert statements == []
    assert target_state(store, target) == "not found"


# -- conn= -----------------------------------------------------------------------


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_link_in_a_rolled_back_transaction(store: EventStore, source: Any) -> None:
    _, events = source
    target = new_stream()

    with store.engine.connect() as conn, conn.begin() as tx:
        store.link_to_stream(target, 0, [e.event_id for e in events], conn=conn)
        assert len(store.read_stream_forward(target, conn=conn)) == 3
        tx.rollback()

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(target)
    # The same events can then be linked for real.
    store.link_to_stream(target, 0, events)
    assert store.read_stream_forward(target) == events


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_append_and_link_in_one_session(store: EventStore) -> None:
    source_uuid, target = new_stream(), new_stream()
    event_id = str(uuid.uuid4())

    with Session(store.engine) as session:
        store.append_to_stream(
            source_uuid, 0, [EventData("E", {"n": 1}, event_id=event_id)], conn=session
        )
        store.link_to_stream(target, NO_STREAM, [event_id], conn=session)
        session.commit()

    [linked] = store.read_stream_forward(target)
    assert (linked.event_id, linked.stream_uuid, linked.event_number) == (event_id, source_uuid, 1)
