"""Bad arguments: ValueError/TypeError naming the argument, no SQL run, nothing written."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event

from sqlalchemy_eventstore import (
    ANY_VERSION,
    CURRENT,
    NO_STREAM,
    ORIGIN,
    STREAM_EXISTS,
    EventData,
    EventStore,
    JsonSerializer,
    SnapshotData,
)
from sqlalchemy_eventstore.errors import SnapshotNotFoundError

GOOD = [EventData("E", {"n": 1})]


def ev(**overrides: Any) -> EventData:
    fields: dict[str, Any] = {"event_type": "E", "data": {"ok": True}}
    fields.update(overrides)
    return EventData(**fields)


class Unencodable:
    """An object no JSON serializer can encode."""


# (label, call, exception type, text the message must contain)
Case = tuple[str, Callable[[EventStore], Any], type[Exception], str]

CASES: list[Case] = [
    # append_to_stream: stream_uuid
    (
        "append stream_uuid int",
        lambda s: s.append_to_stream(123, 0, GOOD),
        TypeError,
        "stream_uuid",
    ),
    (
        "append stream_uuid None",
        lambda s: s.append_to_stream(None, 0, GOOD),
        TypeError,
        "stream_uuid",
    ),
    (
        "append stream_uuid bytes",
        lambda s: s.append_to_stream(b"s", 0, GOOD),
        TypeError,
        "stream_uuid",
    ),
    (
        "append stream_uuid empty",
        lambda s: s.append_to_stream("", 0, GOOD),
        ValueError,
        "stream_uuid",
    ),
    # append_to_stream: expected_version
    (
        "append expected -1",
        lambda s: s.append_to_stream("s", -1, GOOD),
        ValueError,
        "expected_version",
    ),
    (
        "append expected str",
        lambda s: s.append_to_stream("s", "0", GOOD),
        TypeError,
        "expected_version",
    ),
    (
        "append expected float",
        lambda s: s.append_to_stream("s", 1.0, GOOD),
        TypeError,
        "expected_version",
    ),
    (
        "append expected bool",
        lambda s: s.append_to_stream("s", True, GOOD),
        TypeError,
        "expected_version",
    ),
    (
        "append expected None",
        lambda s: s.append_to_stream("s", None, GOOD),
        TypeError,
        "expected_version",
    ),
    (
        "append expected ORIGIN",
        lambda s: s.append_to_stream("s", ORIGIN, GOOD),
        TypeError,
        "expected_version",
    ),
    (
        "append expected CURRENT",
        lambda s: s.append_to_stream("s", CURRENT, GOOD),
        TypeError,
        "expected_version",
    ),
    (
        "append expected marker str",
        lambda s: s.append_to_stream("s", "any_version", GOOD),
        TypeError,
        "expected_version",
    ),
    (
        "append expected object",
        lambda s: s.append_to_stream("s", object(), GOOD),
        TypeError,
        "expected_version",
    ),
    # append_to_stream: events
    ("append events empty", lambda s: s.append_to_stream("s", 0, []), ValueError, "events"),
    ("append events empty tuple", lambda s: s.append_to_stream("s", 0, ()), ValueError, "events"),
    ("append events None", lambda s: s.append_to_stream("s", 0, None), TypeError, "events"),
    ("append events single", lambda s: s.append_to_stream("s", 0, GOOD[0]), TypeError, "events"),
    ("append events str", lambda s: s.append_to_stream("s", 0, "events"), TypeError, "events"),
    (
        "append events dict item",
        lambda s: s.append_to_stream("s", 0, [{"event_type": "E", "data": {}}]),
        TypeError,
        "events[0]",
    ),
    (
        "append events 2nd item",
        lambda s: s.append_to_stream("s", 0, [ev(), "E"]),
        TypeError,
        "events[1]",
    ),
    (
        "append events None item",
        lambda s: s.append_to_stream("s", 0, [ev(), ev(), None]),
        TypeError,
        "events[2]",
    ),
    # append_to_stream: fields of an event
    (
        "append event_type empty",
        lambda s: s.append_to_stream("s", 0, [ev(event_type="")]),
        TypeError,
        "event_type",
    ),
    (
        "append event_type int",
        lambda s: s.append_to_stream("s", 0, [ev(event_type=5)]),
        TypeError,
        "event_type",
    ),
    (
        "append event_type None for dict",
        lambda s: s.append_to_stream("s", 0, [ev(event_type=None)]),
        ValueError,
        "event_type",
    ),
    (
        "append event_id not uuid",
        lambda s: s.append_to_stream("s", 0, [ev(event_id="not-a-uuid")]),
        ValueError,
        "event_id",
    ),
    (
        "append event_id int",
        lambda s: s.append_to_stream("s", 0, [ev(event_id=123)]),
        TypeError,
        "event_id",
    ),
    (
        "append event_id empty",
        lambda s: s.append_to_stream("s", 0, [ev(event_id="")]),
        ValueError,
        "event_id",
    ),
    (
        "append causation_id",
        lambda s: s.append_to_stream("s", 0, [ev(causation_id="zzz")]),
        ValueError,
        "causation_id",
    ),
    (
        "append correlation_id",
        lambda s: s.append_to_stream("s", 0, [ev(correlation_id=[1])]),
        TypeError,
        "correlation_id",
    ),
    (
        "append 2nd event_id",
        lambda s: s.append_to_stream("s", 0, [ev(), ev(event_id="x")]),
        ValueError,
        "events[1].event_id",
    ),
    # append_to_stream: data the serializer cannot encode
    (
        "append data object",
        lambda s: s.append_to_stream("s", 0, [ev(data=object())]),
        TypeError,
        "data",
    ),
    (
        "append data nested object",
        lambda s: s.append_to_stream("s", 0, [ev(data={"x": [Unencodable()]})]),
        TypeError,
        "events[0].data",
    ),
    (
        "append data inferred type",
        lambda s: s.append_to_stream("s", 0, [ev(event_type=None, data=Unencodable())]),
        TypeError,
        "data",
    ),
    (
        "append data bad key",
        lambda s: s.append_to_stream("s", 0, [ev(data={(1, 2): "x"})]),
        TypeError,
        "data",
    ),
    (
        "append metadata object",
        lambda s: s.append_to_stream("s", 0, [ev(metadata={"x": object()})]),
        TypeError,
        "metadata",
    ),
    # link_to_stream
    (
        "link stream_uuid",
        lambda s: s.link_to_stream("", 0, [str(uuid.uuid4())]),
        ValueError,
        "stream_uuid",
    ),
    (
        "link expected",
        lambda s: s.link_to_stream("t", -2, [str(uuid.uuid4())]),
        ValueError,
        "expected_version",
    ),
    ("link empty", lambda s: s.link_to_stream("t", 0, []), ValueError, "events_or_event_ids"),
    (
        "link not uuid",
        lambda s: s.link_to_stream("t", 0, ["nope"]),
        ValueError,
        "events_or_event_ids[0]",
    ),
    (
        "link int",
        lambda s: s.link_to_stream("t", 0, [str(uuid.uuid4()), 7]),
        TypeError,
        "events_or_event_ids[1]",
    ),
    (
        "link EventData",
        lambda s: s.link_to_stream("t", 0, [ev()]),
        TypeError,
        "events_or_event_ids[0]",
    ),
    # delete_stream
    ("delete stream_uuid", lambda s: s.delete_stream(None), TypeError, "stream_uuid"),
    ("delete expected -1", lambda s: s.delete_stream("s", -1), ValueError, "expected_version"),
    (
        "delete expected NO_STREAM",
        lambda s: s.delete_stream("s", NO_STREAM),
        TypeError,
        "expected_version",
    ),
    ("delete hard str", lambda s: s.delete_stream("s", hard="yes"), TypeError, "hard"),
    # reads
    ("read stream_uuid", lambda s: s.read_stream_forward(""), ValueError, "stream_uuid"),
    ("read stream_uuid int", lambda s: s.read_stream_forward(1), TypeError, "stream_uuid"),
    ("read count -1", lambda s: s.read_stream_forward("s", 0, -1), ValueError, "count"),
    ("read count str", lambda s: s.read_stream_forward("s", 0, "10"), TypeError, "count"),
    ("read count None", lambda s: s.read_stream_forward("s", 0, None), TypeError, "count"),
    ("read start -1", lambda s: s.read_stream_forward("s", -1), ValueError, "start_version"),
    ("read start float", lambda s: s.read_stream_forward("s", 1.0), TypeError, "start_version"),
    (
        "read backward start -2",
        lambda s: s.read_stream_backward("s", -2),
        ValueError,
        "start_version",
    ),
    ("read backward count", lambda s: s.read_stream_backward("s", -1, -5), ValueError, "count"),
    ("read all count", lambda s: s.read_all_streams_forward(0, -1), ValueError, "count"),
    ("read all start", lambda s: s.read_all_streams_forward(-3), ValueError, "start_version"),
    (
        "read all backward start",
        lambda s: s.read_all_streams_backward(-2),
        ValueError,
        "start_version",
    ),
    (
        "stream batch 0",
        lambda s: s.stream_forward("s", read_batch_size=0),
        ValueError,
        "read_batch_size",
    ),
    (
        "stream batch str",
        lambda s: s.stream_forward("s", read_batch_size="3"),
        TypeError,
        "read_batch_size",
    ),
    ("stream start -1", lambda s: s.stream_forward("s", -1), ValueError, "start_version"),
    (
        "stream backward batch",
        lambda s: s.stream_backward("s", read_batch_size=-1),
        ValueError,
        "read_batch_size",
    ),
    ("stream backward start", lambda s: s.stream_backward("s", -7), ValueError, "start_version"),
    (
        "stream all batch",
        lambda s: s.stream_all_forward(read_batch_size=0),
        ValueError,
        "read_batch_size",
    ),
    (
        "stream all backward batch",
        lambda s: s.stream_all_backward(read_batch_size=0),
        ValueError,
        "read_batch_size",
    ),
    ("stream stream_uuid", lambda s: s.stream_forward(None), TypeError, "stream_uuid"),
    ("stream_info empty", lambda s: s.stream_info(""), ValueError, "stream_uuid"),
    ("stream_info None", lambda s: s.stream_info(None), TypeError, "stream_uuid"),
    # paginate_streams
    ("paginate sort_by", lambda s: s.paginate_streams(sort_by="bogus"), ValueError, "sort_by"),
    (
        "paginate sort_by injection",
        lambda s: s.paginate_streams(sort_by="stream_id; DROP TABLE streams"),
        ValueError,
        "sort_by",
    ),
    ("paginate sort_by None", lambda s: s.paginate_streams(sort_by=None), ValueError, "sort_by"),
    (
        "paginate sort_dir",
        lambda s: s.paginate_streams(sort_dir="sideways"),
        ValueError,
        "sort_dir",
    ),
    ("paginate sort_dir None", lambda s: s.paginate_streams(sort_dir=None), ValueError, "sort_dir"),
    ("paginate page_size 0", lambda s: s.paginate_streams(page_size=0), ValueError, "page_size"),
    (
        "paginate page_number 0",
        lambda s: s.paginate_streams(page_number=0),
        ValueError,
        "page_number",
    ),
    ("paginate page_size str", lambda s: s.paginate_streams(page_size="5"), TypeError, "page_size"),
    ("paginate search int", lambda s: s.paginate_streams(search=5), TypeError, "search"),
    # snapshots
    ("snapshot type", lambda s: s.record_snapshot({"source_uuid": "x"}), TypeError, "snapshot"),
    (
        "snapshot source_uuid",
        lambda s: s.record_snapshot(SnapshotData("", 1, "T", {})),
        ValueError,
        "source_uuid",
    ),
    (
        "snapshot source_version",
        lambda s: s.record_snapshot(SnapshotData("x", -1, "T", {})),
        ValueError,
        "source_version",
    ),
    (
        "snapshot source_type",
        lambda s: s.record_snapshot(SnapshotData("x", 1, None, {})),
        TypeError,
        "source_type",
    ),
    (
        "snapshot data",
        lambda s: s.record_snapshot(SnapshotData("x", 1, "T", object())),
        TypeError,
        "data",
    ),
    (
        "snapshot metadata",
        lambda s: s.record_snapshot(SnapshotData("x", 1, "T", {}, {"m": object()})),
        TypeError,
        "metadata",
    ),
    ("read_snapshot", lambda s: s.read_snapshot(""), ValueError, "source_uuid"),
    ("delete_snapshot", lambda s: s.delete_snapshot(None), TypeError, "source_uuid"),
    # conn
    ("conn append", lambda s: s.append_to_stream("s", 0, GOOD, conn="db"), TypeError, "conn"),
    (
        "conn link",
        lambda s: s.link_to_stream("s", 0, [str(uuid.uuid4())], conn=object()),
        TypeError,
        "conn",
    ),
    ("conn delete", lambda s: s.delete_stream("existing", conn=1), TypeError, "conn"),
    ("conn read", lambda s: s.read_stream_forward("existing", conn="db"), TypeError, "conn"),
    ("conn stream", lambda s: s.stream_forward("existing", conn="db"), TypeError, "conn"),
    ("conn stream_info", lambda s: s.stream_info("existing", conn=s.engine), TypeError, "conn"),
    (
        "conn paginate",
        lambda s: s.paginate_streams(conn=s.engine.raw_connection),
        TypeError,
        "conn",
    ),
    (
        "conn snapshot",
        lambda s: s.record_snapshot(SnapshotData("x", 1, "T", {}), conn="db"),
        TypeError,
        "conn",
    ),
    ("conn read_snapshot", lambda s: s.read_snapshot("x", conn="db"), TypeError, "conn"),
]


def state(store: EventStore) -> tuple:
    """Everything a bad call could have written, as seen by the store."""
    try:
        snapshot = store.read_snapshot("x")
    except SnapshotNotFoundError:
        snapshot = None
    return (
        [(e.event_id, e.stream_uuid, e.event_number) for e in store.read_all_streams_forward()],
        [
            (s.stream_uuid, s.stream_version, s.status)
            for s in store.paginate_streams(page_size=1_000).entries
        ],
        snapshot,
    )


class SqlCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)


@pytest.fixture
def seeded(store):
    store.append_to_stream("existing", 0, [EventData("E", {"n": n}) for n in range(3)])
    return store


@pytest.mark.parametrize(
    ("call", "error", "names"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_argument_raises_naming_it_and_writes_nothing(seeded, call, error, names):
    before = state(seeded)
    counter = SqlCounter()
    event.listen(seeded.engine, "before_cursor_execute", counter)
    try:
        with pytest.raises(error) as info:
            result = call(seeded)
            if hasattr(result, "__next__"):
                next(result)
    finally:
        event.remove(seeded.engine, "before_cursor_execute", counter)

    assert names in str(info.value)
    assert counter.statements == []  # raised before any SQL ran
    assert state(seeded) == before


def test_event_type_inferred_from_a_plain_value_is_refused(store):
    with pytest.raises(ValueError, match="event_type"):
        store.append_to_stream("s", 0, [EventData(None, {"plain": "dict"})])
    with pytest.raises(ValueError, match="event_type"):
        store.append_to_stream("s", 0, [EventData(None, [1, 2])])


@pytest.mark.parametrize("position", [0, 2, 4])
def test_serializer_failure_on_one_event_writes_none(store, position):
    events = [EventData("E", {"n": n}) for n in range(5)]
    events[position] = EventData("E", {"n": position, "bad": object()})

    with pytest.raises(TypeError, match=rf"events\[{position}\]\.data"):
        store.append_to_stream("s", 0, events)

    assert store.read_all_streams_forward() == []
    assert [s.stream_uuid for s in store.paginate_streams().entries] == ["$all"]
    store.append_to_stream("s", 0, [EventData("E", {"n": n}) for n in range(5)])
    assert [e.event_number for e in store.read_stream_forward("s")] == [1, 2, 3, 4, 5]


class FailingSerializer(JsonSerializer):
    """Fails on one event with an error no serializer documents."""

    def serialize(self, term: Any, type: str | None = None) -> bytes:
        if isinstance(term, dict) and term.get("n") == 2:
            raise RuntimeError("cannot encode this one")
        return super().serialize(term, type)


def test_custom_serializer_failure_on_third_of_five_writes_nothing(make_store, driver):
    store = make_store(driver=driver, serializer=FailingSerializer())
    store.append_to_stream("existing", 0, [EventData("E", {"n": 0})])
    before = state(store)

    with pytest.raises(ValueError, match=r"events\[2\]\.data") as info:
        store.append_to_stream("existing", 1, [EventData("E", {"n": n}) for n in range(5)])

    assert isinstance(info.value.__cause__, RuntimeError)
    assert state(store) == before
    assert store.stream_info("existing").stream_version == 1


def test_jsonb_refuses_nan_before_sql(make_store, driver):
    store = make_store(driver=driver, column_data_type="jsonb")

    with pytest.raises(ValueError, match=r"events\[1\]\.data"):
        store.append_to_stream(
            "s", 0, [EventData("E", {"x": 1.0}), EventData("E", {"x": float("nan")})]
        )
    with pytest.raises(ValueError, match="data"):
        store.record_snapshot(SnapshotData("x", 1, "T", {"x": float("inf")}))

    assert store.read_all_streams_forward() == []
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot("x")


def test_append_accepts_uuid_objects_and_tuples(store):
    """Controls for the cases above: these are valid."""
    event_id = uuid.uuid4()
    store.append_to_stream(
        "s",
        0,
        (EventData("E", {}, event_id=event_id, causation_id=uuid.uuid4()),),  # type: ignore[arg-type]
    )
    assert store.read_stream_forward("s")[0].event_id == str(event_id)
    store.append_to_stream("s", 1, [EventData("E", {})])
    store.append_to_stream("s", STREAM_EXISTS, [EventData("E", {})])
    store.append_to_stream("s", ANY_VERSION, [EventData("E", {})])
    assert store.stream_info("s").stream_version == 4


def test_store_options_are_checked(database_url):
    with pytest.raises(ValueError, match="schema"):
        EventStore(database_url, schema="")
    with pytest.raises(TypeError, match="url_or_engine"):
        EventStore(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="subscription_retry_interval"):
        EventStore(database_url, subscription_retry_interval=0)
    with pytest.raises(TypeError, match="name"):
        EventStore(database_url, name=3)  # type: ignore[arg-type]
