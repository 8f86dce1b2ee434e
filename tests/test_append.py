"""Appending events to a stream.

Ports the reference's append tests (test/append_to_stream_test.exs,
test/storage/append_events_test.exs, the append parts of
test/event_store_test.exs and test/streams/single_stream_test.exs), with
``{:error, reason}`` translated to the exceptions of ``sqlalchemy_eventstore.errors``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event
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
    EventStoreError,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

from .event_factory import create_events, new_stream
from .sequencer_helpers import calls_own

EVENT_TYPE = "tests.EventFactory.Event"


@contextmanager
def recorded_statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs (no mocks)."""
    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # A statement prepared once per connection (psycopg2) is not an append's.
        if not statement.startswith("PREPARE eventstore_"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def all_numbers(store: EventStore) -> list[int]:
    return [e.event_number for e in store.stream_all_forward()]


def snapshot_state(store: EventStore, stream_uuid: str) -> tuple[Any, ...]:
    """What a failed write must leave untouched: the stream and $all."""
    try:
        stream: Any = store.read_stream_forward(stream_uuid)
    except StreamNotFoundError:
        stream = "not found"
    return (
        stream,
        store.read_all_streams_forward(),
        store.stream_info(ALL_STREAM).stream_version,
    )


def assert_recorded(
    stream_uuid: str,
    versions: list[int],
    expected: list[EventData],
    actual: list[RecordedEvent],
) -> None:
    """The reference's assert_recorded_events."""
    assert len(actual) == len(expected) == len(versions)
    for source, recorded, version in zip(expected, actual, versions, strict=True):
        assert str(uuid.UUID(recorded.event_id)) == recorded.event_id
        assert recorded.stream_uuid == stream_uuid
        assert recorded.stream_version == version
        assert recorded.event_type == source.event_type
        assert recorded.data == source.data
        assert recorded.metadata == source.metadata
        assert recorded.causation_id == source.causation_id
        assert recorded.correlation_id == source.correlation_id
        assert isinstance(recorded.created_at, datetime)


@pytest.fixture
def existing(store: EventStore) -> str:
    """A stream holding three events (the reference's append_events_to_stream)."""
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, create_events(3))
    return stream_uuid


# -- appending ---------------------------------------------------------------


def test_append_single_event_to_new_stream(store: EventStore) -> None:
    stream_uuid = new_stream()
    events = create_events(1)

    store.append_to_stream(stream_uuid, 0, events)

    recorded = store.read_stream_forward(stream_uuid)
    assert_recorded(stream_uuid, [1], events, recorded)
    assert recorded[0].event_number == 1
    assert store.stream_info(stream_uuid).stream_version == 1


def test_append_multiple_events_to_new_stream(store: EventStore) -> None:
    stream_uuid = new_stream()
    events = create_events(3)

    store.append_to_stream(stream_uuid, 0, events)

    recorded = store.read_stream_forward(stream_uuid)
    assert_recorded(stream_uuid, [1, 2, 3], events, recorded)
    assert [e.event_number for e in recorded] == [1, 2, 3]


def test_append_single_events_in_separate_writes(store: EventStore) -> None:
    stream_uuid = new_stream()
    first, second = create_events(1), create_events(1, 2)

    store.append_to_stream(stream_uuid, 0, first)
    store.append_to_stream(stream_uuid, 1, second)

    assert_recorded(stream_uuid, [1, 2], first + second, store.read_stream_forward(stream_uuid))


def test_append_multiple_events_in_separate_writes(store: EventStore) -> None:
    stream_uuid = new_stream()
    first, second = create_events(3), create_events(3, 4)

    store.append_to_stream(stream_uuid, 0, first)
    store.append_to_stream(stream_uuid, 3, second)

    recorded = store.read_stream_forward(stream_uuid)
    assert_recorded(stream_uuid, [1, 2, 3, 4, 5, 6], first + second, recorded)
    assert store.stream_info(stream_uuid).stream_version == 6


def test_append_to_different_new_streams(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    e1, e2 = create_events(2), create_events(2, 3)

    store.append_to_stream(s1, 0, e1)
    store.append_to_stream(s2, 0, e2)

    assert_recorded(s1, [1, 2], e1, store.read_stream_forward(s1))
    assert_recorded(s2, [1, 2], e2, store.read_stream_forward(s2))
    assert all_numbers(store) == [1, 2, 3, 4]


def test_append_to_different_existing_streams(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    e1, e2, e3, e4 = (create_events(2, start) for start in (1, 3, 5, 7))

    store.append_to_stream(s1, 0, e1)
    store.append_to_stream(s2, 0, e2)
    store.append_to_stream(s1, 2, e3)
    store.append_to_stream(s2, 2, e4)

    assert_recorded(s1, [1, 2, 3, 4], e1 + e3, store.read_stream_forward(s1))
    assert_recorded(s2, [1, 2, 3, 4], e2 + e4, store.read_stream_forward(s2))
    everything = store.read_all_streams_forward()
    assert [e.event_number for e in everything] == list(range(1, 9))
    assert [e.stream_uuid for e in everything] == [s1, s1, s2, s2, s1, s1, s2, s2]
    assert [e.stream_version for e in everything] == [1, 2, 1, 2, 3, 4, 3, 4]


def test_stream_version_is_per_stream(store: EventStore) -> None:
    # The reference appends to another stream first so that event_number and
    # stream_version cannot match by accident.
    store.append_to_stream(new_stream(), 0, create_events(3))
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, create_events(3))

    assert store.stream_info(stream_uuid).stream_version == 3
    assert [e.stream_version for e in store.read_stream_forward(stream_uuid)] == [1, 2, 3]
    assert [e.event_number for e in store.read_all_streams_forward(4)] == [4, 5, 6]


# -- expected versions -------------------------------------------------------


def test_expected_version_zero_on_existing_stream_is_wrong(
    store: EventStore, existing: str
) -> None:
    before = snapshot_state(store, existing)

    with pytest.raises(WrongExpectedVersionError) as raised:
        store.append_to_stream(existing, 0, create_events(1))

    assert raised.value.reason == "wrong_expected_version"
    assert snapshot_state(store, existing) == before


def test_append_same_events_twice_with_same_expected_version(store: EventStore) -> None:
    # append_events_test: "append to new stream, but stream already exists".
    stream_uuid = new_stream()
    events = create_events(2)

    store.append_to_stream(stream_uuid, 0, events)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(stream_uuid, 0, events)

    assert store.stream_info(stream_uuid).stream_version == 2


@pytest.mark.parametrize("expected", [1, 2, 4, 100])
def test_wrong_expected_version_on_existing_stream(
    store: EventStore, existing: str, expected: int
) -> None:
    before = snapshot_state(store, existing)

    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(existing, expected, create_events(1))

    assert snapshot_state(store, existing) == before


def test_correct_expected_version_on_existing_stream(store: EventStore, existing: str) -> None:
    events = create_events(2, 4)

    store.append_to_stream(existing, 3, events)

    recorded = store.read_stream_forward(existing, 4)
    assert_recorded(existing, [4, 5], events, recorded)
    assert store.stream_info(existing).stream_version == 5


@pytest.mark.parametrize("expected", [1, 3])
def test_positive_expected_version_on_missing_stream(store: EventStore, expected: int) -> None:
    stream_uuid = new_stream()

    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(stream_uuid, expected, create_events(1))

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream_uuid)
    assert store.read_all_streams_forward() == []


def test_any_version_on_new_stream(store: EventStore) -> None:
    stream_uuid = new_stream()

    store.append_to_stream(stream_uuid, ANY_VERSION, create_events(3))

    assert len(store.read_stream_forward(stream_uuid)) == 3
    assert store.stream_info(stream_uuid).stream_version == 3


def test_any_version_on_existing_stream(store: EventStore, existing: str) -> None:
    store.append_to_stream(existing, ANY_VERSION, create_events(1, 4))

    recorded = store.read_stream_forward(existing)
    assert len(recorded) == 4
    assert recorded[-1].data == {"event": 4}
    assert recorded[-1].stream_version == 4


def test_no_stream_on_new_stream(store: EventStore) -> None:
    stream_uuid = new_stream()

    store.append_to_stream(stream_uuid, NO_STREAM, create_events(3))

    assert len(store.read_stream_forward(stream_uuid)) == 3


def test_no_stream_on_existing_stream(store: EventStore, existing: str) -> None:
    before = snapshot_state(store, existing)

    with pytest.raises(StreamExistsError) as raised:
        store.append_to_stream(existing, NO_STREAM, create_events(1))

    assert raised.value.reason == "stream_exists"
    assert snapshot_state(store, existing) == before


def test_stream_exists_on_existing_stream(store: EventStore, existing: str) -> None:
    store.append_to_stream(existing, STREAM_EXISTS, create_events(1, 4))

    assert len(store.read_stream_forward(existing)) == 4
    assert store.stream_info(existing).stream_version == 4


def test_stream_exists_on_missing_stream(store: EventStore) -> None:
    stream_uuid = new_stream()

    with pytest.raises(StreamNotFoundError) as raised:
        store.append_to_stream(stream_uuid, STREAM_EXISTS, create_events(3))

    assert raised.value.reason == "stream_not_found"
    with pytest.raises(StreamNotFoundError):
        store.stream_info(stream_uuid)
    assert store.read_all_streams_forward() == []


@pytest.mark.parametrize("expected", [0, 3, 1, ANY_VERSION, NO_STREAM, STREAM_EXISTS])
def test_append_to_soft_deleted_stream(store: EventStore, existing: str, expected: Any) -> None:
    store.delete_stream(existing)
    all_before = store.read_all_streams_forward()

    with pytest.raises(StreamDeletedError) as raised:
        store.append_to_stream(existing, expected, create_events(1))

    assert raised.value.reason == "stream_deleted"
    assert store.read_all_streams_forward() == all_before
    assert len(all_before) == 3  # a soft-deleted stream's events stay in $all
    [info] = store.paginate_streams(search=existing).entries
    assert (info.status, info.stream_version) == ("deleted", 3)


@pytest.mark.parametrize("expected", [0, 1, ANY_VERSION, NO_STREAM, STREAM_EXISTS])
def test_append_to_all_stream(store: EventStore, expected: Any) -> None:
    with pytest.raises(CannotAppendToAllStreamError) as raised:
        store.append_to_stream(ALL_STREAM, expected, create_events(1))

    assert raised.value.reason == "cannot_append_to_all_stream"
    assert store.read_all_streams_forward() == []
    assert store.stream_info(ALL_STREAM).stream_version == 0


# -- event ids -----------------------------------------------------------------


def test_uses_the_given_event_id(store: EventStore) -> None:
    event_id = str(uuid.uuid4())
    stream_uuid = new_stream()

    store.append_to_stream(stream_uuid, 0, [EventData("E", {"n": 1}, event_id=event_id)])

    [recorded] = store.read_stream_forward(stream_uuid)
    assert recorded.event_id == event_id
    [in_all] = store.read_all_streams_forward()
    assert in_all.event_id == event_id


def test_generates_event_ids_when_none_given(store: EventStore) -> None:
    stream_uuid = new_stream()

    store.append_to_stream(stream_uuid, 0, [EventData("E", {"n": i}) for i in range(5)])

    ids = [e.event_id for e in store.read_stream_forward(stream_uuid)]
    assert len(set(ids)) == 5
    for event_id in ids:
        assert isinstance(event_id, str)
        assert uuid.UUID(event_id).version == 4


def test_one_event_data_can_be_appended_twice(store: EventStore) -> None:
    stream_uuid, other = new_stream(), new_stream()
    event_data = EventData("E", {"n": 1})

    store.append_to_stream(stream_uuid, 0, [event_data])
    store.append_to_stream(stream_uuid, 1, [event_data])
    store.append_to_stream(other, 0, [event_data, event_data])

    first, second = store.read_stream_forward(stream_uuid)
    third, fourth = store.read_stream_forward(other)
    assert len({first.event_id, second.event_id, third.event_id, fourth.event_id}) == 4
    assert first.data == second.data == third.data == fourth.data == {"n": 1}
    assert event_data.event_id is None  # the frozen EventData is not modified


def test_appending_a_stored_event_id_again_to_the_same_stream(
    store: EventStore,
) -> None:
    stream_uuid = new_stream()
    event_id = str(uuid.uuid4())
    store.append_to_stream(stream_uuid, 0, [EventData("E", {"n": 1}, event_id=event_id)])
    before = snapshot_state(store, stream_uuid)

    with pytest.raises(DuplicateEventError) as raised:
        store.append_to_stream(
            stream_uuid,
            1,
            [EventData("E", {"n": 2}), EventData("E", {"n": 3}, event_id=event_id)],
        )

    assert raised.value.reason == "duplicate_event"
    assert snapshot_state(store, stream_uuid) == before
    assert store.stream_info(stream_uuid).stream_version == 1


def test_appending_a_stored_event_id_to_another_stream(store: EventStore) -> None:
    event_id = str(uuid.uuid4())
    store.append_to_stream(new_stream(), 0, [EventData("E", {"n": 1}, event_id=event_id)])
    other = new_stream()
    before = snapshot_state(store, other)

    with pytest.raises(DuplicateEventError):
        store.append_to_stream(other, ANY_VERSION, [EventData("E", {"n": 2}, event_id=event_id)])

    # Nothing written, not even the new stream's row.
    assert snapshot_state(store, other) == before
    assert before[0] == "not found"
    assert store.paginate_streams(search=other).total_entries == 0


def test_the_same_event_id_twice_in_one_batch(store: EventStore) -> None:
    stream_uuid = new_stream()
    event_id = str(uuid.uuid4())

    with pytest.raises(DuplicateEventError):
        store.append_to_stream(
            stream_uuid,
            0,
            [
                EventData("E", {"n": 1}, event_id=event_id),
                EventData("E", {"n": 2}, event_id=event_id),
            ],
        )

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream_uuid)
    assert store.read_all_streams_forward() == []


def test_a_failed_append_leaves_no_gap(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()
    event_id = str(uuid.uuid4())
    store.append_to_stream(s1, 0, [EventData("E", {"n": 1}, event_id=event_id)])

    with pytest.raises(DuplicateEventError):
        store.append_to_stream(s2, 0, [*create_events(2), EventData("E", {}, event_id=event_id)])
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(s1, 5, create_events(2))
    store.append_to_stream(s2, 0, create_events(2))
    store.append_to_stream(s1, 1, create_events(1))

    assert all_numbers(store) == [1, 2, 3, 4]
    assert [e.stream_version for e in store.read_stream_forward(s2)] == [1, 2]
    assert [e.stream_version for e in store.read_stream_forward(s1)] == [1, 2]


# -- event fields --------------------------------------------------------------


@dataclass
class AccountOpened:
    account_number: str
    balance: int


class Outer:
    @dataclass
    class Nested:
        value: str


def test_causation_and_correlation_ids_round_trip(store: EventStore) -> None:
    stream_uuid = new_stream()
    causation, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    events = [
        EventData("E", {"n": 1}, causation_id=causation, correlation_id=correlation),
        EventData("E", {"n": 2}),
    ]

    store.append_to_stream(stream_uuid, 0, events)

    first, second = store.read_stream_forward(stream_uuid)
    assert (first.causation_id, first.correlation_id) == (causation, correlation)
    assert (second.causation_id, second.correlation_id) == (None, None)
    [in_all, _] = store.read_all_streams_forward()
    assert (in_all.causation_id, in_all.correlation_id) == (causation, correlation)


def test_created_at_is_aware_utc(store: EventStore) -> None:
    stream_uuid = new_stream()
    before = datetime.now(timezone.utc)

    store.append_to_stream(stream_uuid, 0, create_events(2))

    for recorded in store.read_stream_forward(stream_uuid) + store.read_all_streams_forward():
        assert recorded.created_at.tzinfo is not None
        assert recorded.created_at.utcoffset() == timedelta(0)
        # The database's clock, not ours: a generous window, not a timing check.
        assert abs(recorded.created_at - before) < timedelta(minutes=5)


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_created_at_is_utc_whatever_the_session_time_zone(
    make_store: Callable[..., EventStore], driver: str
) -> None:
    store = make_store(driver=driver)
    store.append_to_stream("s", 0, create_events(1))
    engine = create_engine(store.engine.url, connect_args={"options": "-c TimeZone=Asia/Tokyo"})
    tokyo = EventStore(engine, schema=store.schema)
    try:
        tokyo.append_to_stream("s", 1, create_events(1))
        via_tokyo = tokyo.read_stream_forward("s")
    finally:
        tokyo.close()
        engine.dispose()

    via_utc = store.read_stream_forward("s")
    assert [e.created_at for e in via_tokyo] == [e.created_at for e in via_utc]
    for recorded in via_tokyo + via_utc:
        assert recorded.created_at.utcoffset() == timedelta(0)


def test_metadata_may_be_none(store: EventStore) -> None:
    stream_uuid = new_stream()

    store.append_to_stream(stream_uuid, 0, [EventData("E", {"n": 1})])

    [recorded] = store.read_stream_forward(stream_uuid)
    assert recorded.metadata is None


def test_event_type_inferred_from_dataclass(store: EventStore) -> None:
    stream_uuid = new_stream()

    store.append_to_stream(
        stream_uuid,
        0,
        [EventData(None, AccountOpened("ACC123", 10)), EventData(None, Outer.Nested("x"))],
    )

    opened, nested = store.read_stream_forward(stream_uuid)
    assert opened.event_type == f"{AccountOpened.__module__}.{AccountOpened.__qualname__}"
    assert opened.event_type == f"{__name__}.AccountOpened"
    assert nested.event_type == f"{__name__}.Outer.Nested"
    assert opened.data == AccountOpened("ACC123", 10)
    assert nested.data == Outer.Nested("x")


def test_explicit_event_type_wins_over_the_class(store: EventStore) -> None:
    stream_uuid = new_stream()

    store.append_to_stream(stream_uuid, 0, [EventData("Opened", AccountOpened("A", 1))])

    [recorded] = store.read_stream_forward(stream_uuid)
    assert recorded.event_type == "Opened"
    assert recorded.data == {"account_number": "A", "balance": 1}


@pytest.mark.parametrize("column_data_type", ["bytea", "jsonb"])
def test_unicode_round_trip(
    make_store: Callable[..., EventStore], driver: str, column_data_type: str
) -> None:
    store = make_store(driver=driver, column_data_type=column_data_type)
    text = "Unicode characters are supported ✅"
    stream_uuid = new_stream()

    store.append_to_stream(stream_uuid, 0, [EventData("E", {"event": text}, {"who": "ü"})])

    [recorded] = list(store.stream_all_forward())
    assert recorded.data == {"event": text}
    assert recorded.metadata == {"who": "ü"}


# -- large batches ---------------------------------------------------------------


@pytest.mark.parametrize("column_data_type", ["bytea", "jsonb"])
def test_ten_thousand_events_in_one_statement(
    make_store: Callable[..., EventStore], driver: str, column_data_type: str
) -> None:
    store = make_store(driver=driver, column_data_type=column_data_type)
    stream_uuid = new_stream()
    events = [EventData("E", {"n": i}) for i in range(1, 10_001)]
    store.stream_info(ALL_STREAM)  # the pool's connection is made, the dialect initialised

    with recorded_statements(store.engine) as statements:
        store.append_to_stream(stream_uuid, 0, events)

    assert len(statements) == 1, statements
    assert store.stream_info(stream_uuid).stream_version == 10_000
    assert all_numbers(store) == list(range(1, 10_001))
    versions = [(e.stream_version, e.data["n"]) for e in store.stream_forward(stream_uuid)]
    assert versions == [(n, n) for n in range(1, 10_001)]


def test_append_is_one_statement_on_existing_stream(store: EventStore, existing: str) -> None:
    with recorded_statements(store.engine) as statements:
        store.append_to_stream(existing, 3, create_events(5))
    assert len(calls_own(store, statements)) == 1


def test_append_after_a_large_batch(store: EventStore) -> None:
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, [EventData("E", {"n": i}) for i in range(2_500)])

    store.append_to_stream(stream_uuid, 2_500, create_events(1))

    assert store.stream_info(stream_uuid).stream_version == 2_501
    [last] = store.read_stream_backward(stream_uuid, count=1)
    assert (last.event_number, last.data) == (2_501, {"event": 1})


# -- arguments are checked before any SQL --------------------------------------


@pytest.mark.parametrize(
    ("stream_uuid", "expected", "events", "error"),
    [
        ("s", 0, [], ValueError),
        ("s", -1, create_events(1), ValueError),
        ("s", "any", create_events(1), TypeError),
        ("", 0, create_events(1), ValueError),
        (123, 0, create_events(1), TypeError),
        ("s", 0, [EventData("E", {}, event_id="not-a-uuid")], ValueError),
        ("s", 0, [{"event_type": "E", "data": {}}], TypeError),
        ("s", 0, [EventData(None, {"plain": "dict"})], ValueError),
        ("s", 0, [*create_events(2), EventData("E", object())], TypeError),
    ],
)
def test_bad_arguments_run_no_sql(
    store: EventStore, stream_uuid: Any, expected: Any, events: Any, error: type[Exception]
) -> None:
    store.stream_info(ALL_STREAM)

    with recorded_statements(store.engine) as statements, pytest.raises(error):
        store.append_to_stream(stream_uuid, expected, events)

    assert statements == []
    assert store.read_all_streams_forward() == []


def test_errors_are_event_store_errors(store: EventStore, existing: str) -> None:
    with pytest.raises(EventStoreError):
        store.append_to_stream(existing, 7, create_events(1))


# -- conn= ------------------------------------------------------------------------


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_append_in_a_rolled_back_transaction(store: EventStore) -> None:
    stream_uuid = new_stream()

    with store.engine.connect() as conn, conn.begin() as tx:
        store.append_to_stream(stream_uuid, 0, create_events(1), conn=conn)
        # Visible inside the transaction...
        assert len(store.read_stream_forward(stream_uuid, conn=conn)) == 1
        # ...not outside it.
        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward(stream_uuid)
        tx.rollback()

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(stream_uuid)
    # The rolled-back append left no gap in $all.
    store.append_to_stream(new_stream(), 0, create_events(2))
    assert all_numbers(store) == [1, 2]


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_append_in_a_committed_session(store: EventStore) -> None:
    s1, s2 = new_stream(), new_stream()

    with Session(store.engine) as session:
        store.append_to_stream(s1, 0, create_events(2), conn=session)
        store.append_to_stream(s2, NO_STREAM, create_events(1), conn=session)
        store.append_to_stream(s1, 2, create_events(1, 3), conn=session)
        session.commit()

    assert [e.data["event"] for e in store.read_stream_forward(s1)] == [1, 2, 3]
    assert [(e.stream_uuid, e.event_number) for e in store.read_all_streams_forward()] == [
        (s1, 1),
        (s1, 2),
        (s2, 3),
        (s1, 4),
    ]


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_failed_append_in_a_transaction_raises_the_domain_error(store: EventStore) -> None:
    stream_uuid = new_stream()
    store.append_to_stream(stream_uuid, 0, create_events(1))

    with store.engine.connect() as conn, conn.begin():
        store.append_to_stream(stream_uuid, 1, create_events(1), conn=conn)
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream(stream_uuid, 1, create_events(1), conn=conn)
        with pytest.raises(StreamExistsError):
            store.append_to_stream(stream_uuid, NO_STREAM, create_events(1), conn=conn)

    assert store.stream_info(stream_uuid).stream_version == 2
