"""Reading streams and ``$all``: pages, lazy iterators, missing and deleted streams.

Ports the reference's storage/read_events_test.exs and the read/stream parts of
streams/single_stream_test.exs.
"""

from __future__ import annotations

import uuid
from datetime import timezone

import pytest
from sqlalchemy import event

from sqlalchemy_eventstore import ANY_VERSION, EventData, RecordedEvent
from sqlalchemy_eventstore.errors import StreamDeletedError, StreamNotFoundError
from sqlalchemy_eventstore.storage.sql import Statements
from sqlalchemy_eventstore.storage.steps import numeric_dollar


def make_events(count: int, first: int = 1) -> list[EventData]:
    return [
        EventData(
            "TestEvent",
            {"n": n, "text": f"event {n}"},
            metadata={"user": "someuser@example.com", "n": n},
            causation_id=str(uuid.uuid4()),
            correlation_id=str(uuid.uuid4()),
        )
        for n in range(first, first + count)
    ]


def numbers(events: list[RecordedEvent]) -> list[int]:
    return [e.event_number for e in events]


@pytest.fixture
def db_clock(admin_engine):
    """The server's wall clock, to bracket ``created_at`` without timing anything."""

    def now():
        with admin_engine.connect() as conn:
            return conn.exec_driver_sql("SELECT clock_timestamp()").scalar()

    return now


# The parameters of a page read in the order they first appear in its statement.
_READ_NAMES = numeric_dollar(Statements("s", "bytea").read_forward).names


class StatementLog:
    """SQL statements an engine runs, recorded by a ``before_cursor_execute`` listener."""

    def __init__(self, engine):
        self.engine = engine
        self.statements: list[tuple[str, object]] = []

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if isinstance(parameters, tuple) and len(parameters) == len(_READ_NAMES):
            # asyncpg's $1 style: a page read's parameters, named again.
            parameters = dict(zip(_READ_NAMES, parameters, strict=True))
        self.statements.append((statement, parameters))

    def reads(self) -> list[object]:
        """Parameters of the event-reading statements (one per round trip).

        On psycopg2 a page read runs as ``EXECUTE`` of a statement prepared
        once per connection (a ``PREPARE`` without parameters, not counted).
        """
        return [
            params
            for sql, params in self.statements
            if params and ("stream_events" in sql or sql.startswith("EXECUTE eventstore_"))
        ]

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self)


# -- read_stream_forward ------------------------------------------------------


def test_read_unknown_stream_raises_stream_not_found(store):
    with pytest.raises(StreamNotFoundError) as info:
        store.read_stream_forward(str(uuid.uuid4()), 0, 1)
    assert info.value.reason == "stream_not_found"
    with pytest.raises(StreamNotFoundError):
        store.read_stream_backward(str(uuid.uuid4()))


def test_read_single_event_round_trips_every_field(store, db_clock):
    event_id = str(uuid.uuid4())
    causation_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    before = db_clock()
    store.append_to_stream(
        "stream-1",
        0,
        [
            EventData(
                "OrderPlaced",
                {"order": 42, "lines": [{"sku": "a", "qty": 2}], "note": "ünïcode ✓"},
                metadata={"user": "alice"},
                event_id=event_id,
                causation_id=causation_id,
                correlation_id=correlation_id,
            )
        ],
    )
    after = db_clock()

    [read] = store.read_stream_forward("stream-1", 0, 1_000)

    assert isinstance(read, RecordedEvent)
    assert read.event_id == event_id
    assert read.event_number == 1
    assert read.stream_uuid == "stream-1"
    assert read.stream_version == 1
    assert read.event_type == "OrderPlaced"
    assert read.data == {"order": 42, "lines": [{"sku": "a", "qty": 2}], "note": "ünïcode ✓"}
    assert read.metadata == {"user": "alice"}
    assert read.causation_id == causation_id
    assert read.correlation_id == correlation_id
    assert read.created_at.utcoffset() is not None
    assert read.created_at.tzinfo == timezone.utc
    assert before <= read.created_at <= after


def test_read_event_without_causation_or_correlation_id(store):
    store.append_to_stream("s", 0, [EventData("E", {"a": 1}), EventData("E", {"a": 2})])

    events = store.read_stream_forward("s")

    assert [(e.causation_id, e.correlation_id, e.metadata) for e in events] == [
        (None, None, None),
        (None, None, None),
    ]
    assert all(isinstance(e.event_id, str) and uuid.UUID(e.event_id) for e in events)
    assert len({e.event_id for e in events}) == 2


def test_event_ids_given_as_uuid_objects_read_back_as_str(store):
    event_id = uuid.uuid4()
    store.append_to_stream("s", 0, [EventData("E", {}, event_id=event_id)])  # type: ignore[arg-type]
    [read] = store.read_stream_forward("s")
    assert read.event_id == str(event_id)


def test_read_forward_from_origin_limited_by_count(store):
    store.append_to_stream("s", 0, make_events(10))

    assert numbers(store.read_stream_forward("s", 0, 5)) == [1, 2, 3, 4, 5]
    # Versions start at 1: start_version 0 and 1 both mean "from the first event".
    assert numbers(store.read_stream_forward("s", 1, 5)) == [1, 2, 3, 4, 5]
    assert [e.data["n"] for e in store.read_stream_forward("s", 0, 5)] == [1, 2, 3, 4, 5]


def test_read_forward_from_stream_version_limited_by_count(store):
    store.append_to_stream("s", 0, make_events(10))

    assert numbers(store.read_stream_forward("s", 6, 5)) == [6, 7, 8, 9, 10]
    assert numbers(store.read_stream_forward("s", 6, 2)) == [6, 7]
    assert numbers(store.read_stream_forward("s", 9, 100)) == [9, 10]


def test_read_forward_past_the_end_or_with_count_zero_is_empty(store):
    store.append_to_stream("s", 0, make_events(3))

    assert store.read_stream_forward("s", 4, 10) == []
    assert store.read_stream_forward("s", 1_000, 10) == []
    assert store.read_stream_forward("s", 0, 0) == []


def test_read_forward_defaults_read_the_whole_stream(store):
    store.append_to_stream("s", 0, make_events(3))
    store.append_to_stream("s", 3, make_events(2, first=4))

    events = store.read_stream_forward("s")

    assert numbers(events) == [1, 2, 3, 4, 5]
    assert [e.stream_version for e in events] == [1, 2, 3, 4, 5]
    assert [e.data["n"] for e in events] == [1, 2, 3, 4, 5]


def test_read_forward_default_count_is_1000(store):
    store.append_to_stream("s", 0, [EventData("E", {"i": i}) for i in range(1_005)])

    events = store.read_stream_forward("s")

    assert numbers(events) == list(range(1, 1_001))


def test_event_numbers_are_per_stream_not_global(store):
    store.append_to_stream("other", 0, make_events(3))
    store.append_to_stream("s", 0, make_events(3))

    events = store.read_stream_forward("s")

    assert numbers(events) == [1, 2, 3]
    assert [e.stream_version for e in events] == [1, 2, 3]


# -- read_stream_backward -----------------------------------------------------


def test_read_backward_from_the_end(store):
    store.append_to_stream("s", 0, make_events(10))

    assert numbers(store.read_stream_backward("s")) == list(range(10, 0, -1))
    assert numbers(store.read_stream_backward("s", -1, 3)) == [10, 9, 8]
    assert [e.data["n"] for e in store.read_stream_backward("s", -1, 3)] == [10, 9, 8]


def test_read_backward_from_a_stream_version(store):
    store.append_to_stream("s", 0, make_events(10))

    assert numbers(store.read_stream_backward("s", 5, 3)) == [5, 4, 3]
    assert numbers(store.read_stream_backward("s", 2, 100)) == [2, 1]
    # A start past the end reads from the end.
    assert numbers(store.read_stream_backward("s", 50, 2)) == [10, 9]
    assert store.read_stream_backward("s", 5, 0) == []


# -- $all ---------------------------------------------------------------------


def test_read_all_streams_when_no_stream_exists_is_empty(store):
    assert store.read_all_streams_forward() == []
    assert store.read_all_streams_backward() == []
    assert list(store.stream_all_forward()) == []
    assert list(store.stream_all_backward()) == []


def test_read_all_streams_forward_interleaves_streams_in_commit_order(store):
    store.append_to_stream("s1", 0, make_events(1, first=1))
    store.append_to_stream("s2", 0, make_events(1, first=2))
    store.append_to_stream("s1", 1, make_events(1, first=3))
    store.append_to_stream("s2", 1, make_events(1, first=4))

    events = store.read_all_streams_forward(0, 1_000)

    assert numbers(events) == [1, 2, 3, 4]
    assert [e.stream_uuid for e in events] == ["s1", "s2", "s1", "s2"]
    assert [e.stream_version for e in events] == [1, 1, 2, 2]
    assert [e.data["n"] for e in events] == [1, 2, 3, 4]


def test_read_all_streams_forward_from_after_last_event_is_empty(store):
    store.append_to_stream("s1", 0, make_events(1))
    store.append_to_stream("s2", 0, make_events(1))

    assert store.read_all_streams_forward(3, 1_000) == []
    assert numbers(store.read_all_streams_forward(2, 1_000)) == [2]


def test_read_all_streams_forward_in_pages(store):
    store.append_to_stream("s1", 0, make_events(5, first=1))
    store.append_to_stream("s2", 0, make_events(5, first=6))
    store.append_to_stream("s1", 5, make_events(5, first=11))
    store.append_to_stream("s2", 5, make_events(5, first=16))

    page1 = store.read_all_streams_forward(0, 10)
    page2 = store.read_all_streams_forward(11, 10)

    assert numbers(page1) == list(range(1, 11))
    assert numbers(page2) == list(range(11, 21))
    assert [e.data["n"] for e in page1 + page2] == list(range(1, 21))
    assert [e.stream_uuid for e in page2] == ["s1"] * 5 + ["s2"] * 5
    assert [e.stream_version for e in page2] == [6, 7, 8, 9, 10] * 2


def test_read_all_streams_backward(store):
    store.append_to_stream("s1", 0, make_events(2, first=1))
    store.append_to_stream("s2", 0, make_events(2, first=3))

    events = store.read_all_streams_backward()

    assert numbers(events) == [4, 3, 2, 1]
    assert [(e.stream_uuid, e.stream_version) for e in events] == [
        ("s2", 2),
        ("s2", 1),
        ("s1", 2),
        ("s1", 1),
    ]
    assert numbers(store.read_all_streams_backward(3, 2)) == [3, 2]
    assert numbers(store.read_all_streams_backward(-1, 1)) == [4]


def test_all_stream_reports_the_original_stream_of_linked_events(store):
    store.append_to_stream("source", 0, make_events(2))
    store.link_to_stream("target", 0, store.read_stream_forward("source"))

    linked = store.read_stream_forward("target")
    everything = store.read_all_streams_forward()

    # Linking adds no event to $all; read through the link, an event keeps its
    # original stream and version but is numbered by the stream read.
    assert numbers(everything) == [1, 2]
    assert numbers(linked) == [1, 2]
    assert [(e.stream_uuid, e.stream_version) for e in linked] == [("source", 1), ("source", 2)]
    assert [e.event_id for e in linked] == [e.event_id for e in everything]


# -- lazy iterators -----------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 3, 1_000])
def test_stream_forward_returns_every_event_in_order(store, batch):
    store.append_to_stream("s", 0, make_events(7))

    events = list(store.stream_forward("s", read_batch_size=batch))

    assert numbers(events) == [1, 2, 3, 4, 5, 6, 7]
    assert [e.stream_version for e in events] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.data["n"] for e in events] == [1, 2, 3, 4, 5, 6, 7]


def test_stream_forward_with_starting_version(store):
    store.append_to_stream("s", 0, make_events(3))

    assert numbers(store.stream_forward("s", 2, read_batch_size=1)) == [2, 3]
    assert list(store.stream_forward("s", 4, read_batch_size=1)) == []


@pytest.mark.parametrize("batch", [1, 3, 1_000])
def test_stream_backward_returns_every_event_newest_first(store, batch):
    store.append_to_stream("s", 0, make_events(7))

    assert numbers(store.stream_backward("s", read_batch_size=batch)) == [7, 6, 5, 4, 3, 2, 1]
    assert numbers(store.stream_backward("s", 4, read_batch_size=batch)) == [4, 3, 2, 1]


@pytest.mark.parametrize("batch", [1, 3])
def test_stream_all_forward_and_backward(store, batch):
    for i in range(4):
        store.append_to_stream(f"s{i % 2}", ANY_VERSION, make_events(2, first=2 * i + 1))

    forward = list(store.stream_all_forward(read_batch_size=batch))
    backward = list(store.stream_all_backward(read_batch_size=batch))

    assert numbers(forward) == list(range(1, 9))
    assert [e.data["n"] for e in forward] == list(range(1, 9))
    assert [e.stream_uuid for e in forward] == ["s0", "s0", "s1", "s1"] * 2
    assert numbers(backward) == list(range(8, 0, -1))
    assert [e.event_id for e in backward] == [e.event_id for e in reversed(forward)]
    assert numbers(store.stream_all_forward(6, read_batch_size=batch)) == [6, 7, 8]
    assert numbers(store.stream_all_backward(3, read_batch_size=batch)) == [3, 2, 1]


def test_iterators_skip_the_gaps_hard_deletes_leave_in_all(make_store, driver):
    store = make_store(driver=driver, enable_hard_deletes=True)
    store.append_to_stream("a", 0, make_events(3))
    store.append_to_stream("b", 0, make_events(2))
    store.append_to_stream("c", 0, make_events(2))
    store.delete_stream("b", hard=True)

    assert numbers(store.stream_all_forward(read_batch_size=1)) == [1, 2, 3, 6, 7]
    assert numbers(store.stream_all_forward(read_batch_size=2)) == [1, 2, 3, 6, 7]
    assert numbers(store.stream_all_backward(read_batch_size=1)) == [7, 6, 3, 2, 1]
    assert numbers(store.stream_all_forward(4, read_batch_size=1)) == [6, 7]


def test_stream_forward_is_lazy_and_reads_in_bounded_batches(store):
    store.append_to_stream("s", 0, make_events(10))

    with StatementLog(store.engine) as log:
        iterator = store.stream_forward("s", read_batch_size=3)
        reads_at_call = len(log.reads())
        first_three = [next(iterator) for _ in range(3)]
        reads_after_one_batch = len(log.reads())
        fourth = next(iterator)
        reads_after_fourth = len(log.reads())
        rest = list(iterator)

    # At most one round trip before anything is consumed (a missing stream
    # raises at the call), none more while a batch lasts, one more per batch.
    assert reads_at_call <= 1
    assert reads_after_one_batch == 1
    assert reads_after_fourth == 2
    assert numbers([*first_three, fourth, *rest]) == list(range(1, 11))
    # Ten events in batches of three: four reads, each asking for three rows at most.
    assert len(log.reads()) == 4
    assert all(params["count"] <= 3 for params in log.reads())  # type: ignore[index]


def test_stream_all_backward_is_lazy(store):
    store.append_to_stream("s", 0, make_events(6))

    with StatementLog(store.engine) as log:
        iterator = store.stream_all_backward(read_batch_size=2)
        taken = [next(iterator) for _ in range(2)]
        reads_after_first_batch = len(log.reads())
        taken.append(next(iterator))
        reads_after_third = len(log.reads())

    assert numbers(taken) == [6, 5, 4]
    assert reads_after_first_batch == 1
    assert reads_after_third == 2


def test_abandoned_iterator_reads_no_more(store):
    store.append_to_stream("s", 0, make_events(10))

    with StatementLog(store.engine) as log:
        iterator = store.stream_forward("s", read_batch_size=2)
        next(iterator)
        del iterator

    assert len(log.reads()) == 1


def test_stream_iterators_raise_stream_not_found_at_call_time(store):
    missing = str(uuid.uuid4())
    for call in (
        lambda: store.stream_forward(missing),
        lambda: store.stream_backward(missing),
        lambda: store.stream_forward(missing, 0, read_batch_size=1),
    ):
        with pytest.raises(StreamNotFoundError):
            call()  # no next(): the error comes from the call itself


def test_stream_iterators_raise_stream_deleted_at_call_time(store):
    store.append_to_stream("s", 0, make_events(3))
    store.delete_stream("s")

    with pytest.raises(StreamDeletedError):
        store.stream_forward("s")
    with pytest.raises(StreamDeletedError):
        store.stream_backward("s", read_batch_size=1)
    with pytest.raises(StreamDeletedError):
        store.read_stream_forward("s")
    with pytest.raises(StreamDeletedError):
        store.read_stream_backward("s")
