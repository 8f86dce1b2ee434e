"""Parked events: their storage functions and the store API, on a real database.

Events are parked with ``storage.parked.park`` directly (the subscription
runner's part is tested with the subscriptions); listing, replay requests,
discards, the notifications that tell a live runner, and the rows' life with
their subscription are tested here, on both drivers and both column types.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event as sa_event

from sqlalchemy_eventstore import (
    ALL_STREAM,
    EventData,
    JsonbSerializer,
    JsonSerializer,
    ParkedEvent,
    RecordedEvent,
)
from sqlalchemy_eventstore.storage import parked

from .parked_helpers import (
    ChannelListener,
    park_numbers,
    parked_rows,
    subscription_id,
)

DATA_TYPES = ["bytea", "jsonb"]


def make_events(count: int, event_type: str = "Happened") -> list[EventData]:
    return [
        EventData(event_type, {"n": n}, metadata={"m": n}, causation_id=str(uuid.uuid4()))
        for n in range(1, count + 1)
    ]


@pytest.fixture(params=DATA_TYPES)
def data_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def typed_store(make_store, driver, data_type):
    """A store per driver and column data type."""
    return make_store(driver=driver, column_data_type=data_type)


class Statements:
    """The statements an engine sends while recording."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.sent: list[str] = []

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.sent.append(statement)

    def __enter__(self) -> Statements:
        sa_event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        sa_event.remove(self.engine, "before_cursor_execute", self._record)


# -- storage ------------------------------------------------------------------------


def test_park_writes_many_rows_in_one_statement_and_keeps_the_first(typed_store):
    store = typed_store
    store.append_to_stream("s", 0, make_events(5))
    events = store.read_all_streams_forward()
    sub_id = subscription_id(store, "projector")
    rows = [parked.ParkRow(e.event_number, e.event_id, "KeyError: 'x'", "k") for e in events[1:4]]

    with store.engine.begin() as conn, Statements(store.engine) as statements:
        parked.park(conn, store.schema, sub_id, rows)
    assert [s for s in statements.sent if "parked_events" in s and "INSERT" in s]
    assert len(statements.sent) == 1

    # Parked again (a second failure): the first reason stays; nothing new is added.
    with store.engine.begin() as conn:
        parked.park(conn, store.schema, sub_id, [parked.ParkRow(2, events[1].event_id, "x", None)])
    with store.engine.begin() as conn, Statements(store.engine) as statements:
        parked.park(conn, store.schema, sub_id, [])
    assert statements.sent == []

    with store.engine.connect() as conn:
        summary = parked.parked_summary(conn, store.schema, sub_id)
    assert summary == [parked.ParkedRef(n, events[n - 1].event_id, "k", False) for n in (2, 3, 4)]
    assert [row[2] for row in parked_rows(store)] == ["KeyError: 'x'"] * 3


def test_park_for_a_deleted_subscription_writes_nothing(store):
    store.append_to_stream("s", 0, make_events(1))
    (event,) = store.read_all_streams_forward()
    sub_id = subscription_id(store, "gone")
    store.delete_all_streams_subscription("gone")

    with store.engine.begin() as conn:
        parked.park(conn, store.schema, sub_id, [parked.ParkRow(1, event.event_id, "r", None)])

    assert parked_rows(store) == []


def test_replay_requests_mark_rows_and_notify_after_commit(store, database_url):
    store.append_to_stream("s", 0, make_events(5))
    sub_id = park_numbers(store, "projector", [1, 3, 5])
    other = park_numbers(store, "other", [3])

    with ChannelListener(database_url, f"{store.schema}.parked") as listener:
        with store.engine.begin() as conn:
            count = parked.request_replay(conn, store.schema, ALL_STREAM, "projector", [3, 5, 4])
            assert listener.received(0.3) == []  # not before the commit
        assert count == 2
        assert listener.received() == [str(sub_id)]

        with store.engine.begin() as conn:
            assert parked.request_replay(conn, store.schema, ALL_STREAM, "missing", None) == 0
            assert parked.request_replay(conn, store.schema, ALL_STREAM, "projector", [2]) == 0
            assert parked.request_replay(conn, store.schema, "s", "projector", None) == 0
        assert listener.received(0.5) == []  # nothing changed, nothing announced

    with store.engine.connect() as conn:
        requested = parked.replay_requested(conn, store.schema, sub_id)
        untouched = parked.replay_requested(conn, store.schema, other)
        summary = parked.parked_summary(conn, store.schema, sub_id)
    assert [ref.event_number for ref in requested] == [3, 5]
    assert all(ref.replay_requested for ref in requested)
    assert untouched == []
    assert [(ref.event_number, ref.replay_requested) for ref in summary] == [
        (1, False),
        (3, True),
        (5, True),
    ]

    with store.engine.begin() as conn:
        assert parked.request_replay(conn, store.schema, ALL_STREAM, "projector", None) == 3


def test_discard_and_remove(store, database_url):
    store.append_to_stream("s", 0, make_events(6))
    sub_id = park_numbers(store, "projector", [1, 2, 3, 4, 5])
    other = park_numbers(store, "other", [1, 2])

    with store.engine.begin() as conn:
        assert parked.remove_parked(conn, store.schema, sub_id, [1, 6]) == 1
        assert parked.remove_parked(conn, store.schema, sub_id, []) == 0
    with ChannelListener(database_url, f"{store.schema}.parked") as listener:
        with store.engine.begin() as conn:
            assert parked.discard(conn, store.schema, ALL_STREAM, "projector", [2, 3]) == 2
        assert listener.received() == [str(sub_id)]
        with store.engine.begin() as conn:
            assert parked.discard(conn, store.schema, ALL_STREAM, "projector", None) == 2
            assert parked.discard(conn, store.schema, ALL_STREAM, "projector", None) == 0
        assert listener.received() == [str(sub_id)]

    assert [row[:2] for row in parked_rows(store)] == [(other, 1), (other, 2)]


def test_list_parked_builds_each_event_at_its_position(typed_store):
    store = typed_store
    store.append_to_stream("a", 0, make_events(3))
    store.append_to_stream("b", 0, make_events(2))
    # A stream of links: positions 1..3 hold events of b and a.
    store.link_to_stream(
        "links", 0, store.read_stream_forward("b") + store.read_stream_forward("a", 2, 1)
    )
    park_numbers(store, "all", [5, 2], reason="RuntimeError: first")
    park_numbers(store, "on-links", [3], stream_uuid="links")

    with store.engine.connect() as conn:
        found = parked.list_parked(
            conn, store.schema, store.column_data_type, store.serializer, ALL_STREAM, "all"
        )
        linked = parked.list_parked(
            conn, store.schema, store.column_data_type, store.serializer, "links", "on-links"
        )
        nothing = parked.list_parked(
            conn, store.schema, store.column_data_type, store.serializer, "links", "all"
        )

    all_events = {e.event_number: e for e in store.read_all_streams_forward()}
    assert [p.event for p in found] == [all_events[2], all_events[5]]
    assert [(p.subscription_name, p.stream_uuid, p.reason) for p in found] == [
        ("all", ALL_STREAM, "RuntimeError: first")
    ] * 2
    (entry,) = linked
    assert entry.event == store.read_stream_forward("links")[2]
    assert (entry.event.event_number, entry.event.stream_uuid, entry.event.stream_version) == (
        3,
        "a",
        2,
    )
    assert entry.stream_uuid == "links"
    assert nothing == []


class RefusingSerializer:
    """Reads every event except those of type "Unreadable" (like a schema that changed)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.column_data_type = inner.column_data_type

    def serialize(self, term: Any, type: str | None = None) -> Any:
        return self.inner.serialize(term, type)

    def deserialize(self, data: Any, type: str | None = None) -> Any:
        if type == "Unreadable":
            raise ValueError("cannot read this")
        return self.inner.deserialize(data, type)


def test_an_unreadable_event_is_listed_with_what_is_stored(make_store, driver, data_type):
    inner = JsonbSerializer() if data_type == "jsonb" else JsonSerializer()
    store = make_store(
        driver=driver, column_data_type=data_type, serializer=RefusingSerializer(inner)
    )
    store.append_to_stream(
        "s",
        0,
        [
            EventData("Fine", {"n": 1}),
            EventData("Unreadable", {"n": 2, "text": "é"}, metadata={"m": [1, 2]}),
        ],
    )
    park_numbers(store, "projector", [1, 2])

    fine, unreadable = store.parked_events("projector")

    assert fine.event.data == {"n": 1}
    if data_type == "bytea":
        assert isinstance(unreadable.event.data, bytes)
        assert json.loads(unreadable.event.data) == {"n": 2, "text": "é"}
        # Metadata reads (the serializer refuses only the event's own type).
        assert unreadable.event.metadata == {"m": [1, 2]}
    else:
        assert isinstance(unreadable.event.data, str)
        assert unreadable.event.data == '{"n": 2, "text": "é"}'  # the jsonb text
        assert unreadable.event.metadata == {"m": [1, 2]}


def test_unreadable_bytes_come_back_as_bytes(make_store, driver):
    """Bytes that are not even JSON (written by another serializer)."""

    class Raw:
        column_data_type = "bytea"

        def serialize(self, term: Any, type: str | None = None) -> bytes:
            return bytes(term)

        def deserialize(self, data: Any, type: str | None = None) -> Any:
            return bytes(data)

    writer = make_store(driver=driver, serializer=Raw())
    writer.append_to_stream("s", 0, [EventData("Blob", b"\xff\x00\xfe", metadata=b"\x80")])
    park_numbers(writer, "projector", [1])
    reader = make_store(driver=driver, schema=writer.schema, init=False)

    (entry,) = reader.parked_events("projector")

    assert entry.event.data == b"\xff\x00\xfe"
    assert entry.event.metadata == b"\x80"


def test_a_hard_deleted_event_is_left_out_of_the_list(make_store):
    store = make_store(enable_hard_deletes=True)
    store.append_to_stream("doomed", 0, make_events(1))
    store.append_to_stream("kept", 0, make_events(1))
    park_numbers(store, "projector", [1, 2])
    store.delete_stream("doomed", hard=True)

    assert [p.event.stream_uuid for p in store.parked_events("projector")] == ["kept"]
    assert store.discard_parked("projector") == 2


# -- the store API --------------------------------------------------------------------


def test_parked_event_is_a_public_value_type():
    import sqlalchemy_eventstore

    assert "ParkedEvent" in sqlalchemy_eventstore.__all__
    assert ParkedEvent.__module__ == "sqlalchemy_eventstore"
    assert [f.name for f in dataclasses.fields(ParkedEvent)] == [
        "event",
        "subscription_name",
        "stream_uuid",
        "reason",
        "parked_at",
    ]
    assert ParkedEvent.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_store_lists_replays_and_discards(typed_store):
    store = typed_store
    store.append_to_stream("acct-1", 0, make_events(4))
    store.append_to_stream("acct-2", 0, make_events(2))
    park_numbers(store, "projector", [2, 5, 6], reason="ValueError: bad amount")
    park_numbers(store, "projector", [3], stream_uuid="acct-1")

    listed = store.parked_events("projector")
    on_stream = store.parked_events("projector", "acct-1")

    assert [p.event.event_number for p in listed] == [2, 5, 6]
    assert all(isinstance(p.event, RecordedEvent) for p in listed)
    assert [(p.event.stream_uuid, p.event.stream_version) for p in listed] == [
        ("acct-1", 2),
        ("acct-2", 1),
        ("acct-2", 2),
    ]
    assert listed[1].event.data == {"n": 1}
    assert listed[0].reason == "ValueError: bad amount"
    assert listed[0].stream_uuid == ALL_STREAM and listed[0].subscription_name == "projector"
    assert listed[0].parked_at.utcoffset() == timedelta(0)
    assert [(p.event.event_number, p.stream_uuid) for p in on_stream] == [(3, "acct-1")]

    assert store.replay_parked("projector", event_numbers=[5]) == 1
    assert store.replay_parked("projector") == 3
    assert store.replay_parked("projector", "acct-1", [3, 4]) == 1
    assert [row[3] for row in parked_rows(store)] == [True] * 4

    assert store.discard_parked("projector", event_numbers=[2, 6]) == 2
    assert [p.event.event_number for p in store.parked_events("projector")] == [5]
    assert store.discard_parked("projector", "acct-1") == 1
    assert store.parked_events("projector", "acct-1") == []


def test_unknown_subscriptions_have_nothing_parked(store):
    assert store.parked_events("nobody") == []
    assert store.parked_events("nobody", "some-stream") == []
    assert store.replay_parked("nobody") == 0
    assert store.discard_parked("nobody", "some-stream", [1]) == 0


def test_calls_join_the_callers_transaction(store):
    store.append_to_stream("s", 0, make_events(3))
    park_numbers(store, "projector", [1, 2, 3])

    with store.engine.connect() as conn:
        tx = conn.begin()
        assert store.discard_parked("projector", event_numbers=[1], conn=conn) == 1
        assert store.replay_parked("projector", conn=conn) == 2
        assert [p.event.event_number for p in store.parked_events("projector", conn=conn)] == [
            2,
            3,
        ]
        tx.rollback()

    assert [(row[1], row[3]) for row in parked_rows(store)] == [
        (1, False),
        (2, False),
        (3, False),
    ]


@pytest.mark.parametrize(
    ("call", "arguments", "error", "named"),
    [
        ("parked_events", ("",), ValueError, "subscription_name"),
        ("parked_events", (5,), TypeError, "subscription_name"),
        ("parked_events", ("p", None), TypeError, "stream_uuid"),
        ("replay_parked", ("p", ""), ValueError, "stream_uuid"),
        ("replay_parked", ("p", ALL_STREAM, "1"), TypeError, "event_numbers"),
        ("replay_parked", ("p", ALL_STREAM, {1}), TypeError, "event_numbers"),
        ("replay_parked", ("p", ALL_STREAM, [0]), ValueError, "event_numbers"),
        ("replay_parked", ("p", ALL_STREAM, [True]), TypeError, "event_numbers"),
        ("discard_parked", ("p", ALL_STREAM, [1.0]), TypeError, "event_numbers"),
        ("discard_parked", ("p", ALL_STREAM, [-3]), ValueError, "event_numbers"),
        ("discard_parked", (None,), TypeError, "subscription_name"),
    ],
)
def test_bad_arguments_name_themselves_and_change_nothing(
    make_store, call, arguments, error, named
):
    store = make_store()
    store.append_to_stream("s", 0, make_events(1))
    park_numbers(store, "p", [1])

    with Statements(store.engine) as statements, pytest.raises(error, match=named):
        getattr(store, call)(*arguments)
    assert statements.sent == []
    assert [row[1:] for row in parked_rows(store)] == [(1, "ValueError: boom", False)]


def test_deleting_the_subscription_removes_its_parked_events(store, admin_engine):
    store.append_to_stream("s", 0, make_events(3))
    park_numbers(store, "projector", [1, 2])
    other = park_numbers(store, "other", [3])
    park_numbers(store, "on-s", [1], stream_uuid="s")

    store.delete_all_streams_subscription("projector")
    assert store.parked_events("projector") == []
    # The reference library deletes a subscription with this very statement;
    # the cascade keeps it working with parked rows present.
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(
            f'DELETE FROM "{store.schema}".subscriptions '
            "WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(name)s",
            {"stream_uuid": "s", "name": "on-s"},
        )

    assert [row[:2] for row in parked_rows(store)] == [(other, 3)]
    # A new subscription of the same name starts with nothing parked.
    subscription_id(store, "projector")
    assert store.parked_events("projector") == []
