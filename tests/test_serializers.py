"""Serializers: JSON in bytea, JSONB, marshmallow schemas and custom ones.

Ports the reference's jsonb_serializer_test.exs and checks every serializer
through a real store.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

import pytest
from marshmallow import Schema, fields, post_load

from sqlalchemy_eventstore import (
    EventData,
    EventStore,
    JsonbSerializer,
    JsonSerializer,
    MarshmallowSerializer,
    Serializer,
    SnapshotData,
)
from sqlalchemy_eventstore.serializers import type_name

# -- event types ------------------------------------------------------------------


@dataclass
class AccountOpened:
    account_id: str
    balance: int = 0
    tags: list[str] = field(default_factory=list)


@dataclass
class Address:
    street: str
    city: str


@dataclass
class CustomerMoved:
    customer_id: str
    address: Address


class Outer:
    @dataclass
    class Inner:
        value: int


class NotADataclass:
    def __init__(self, value: int) -> None:
        self.value = value


def select_rows(admin_engine, query: str) -> list[tuple]:
    with admin_engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql(query).all()]


# -- JsonSerializer (bytea) ---------------------------------------------------------


@pytest.fixture(params=["bytea", "jsonb"])
def json_store(request, make_store, driver):
    """A store with the JSON serializer of each column type."""
    return make_store(driver=driver, column_data_type=request.param)


def test_default_serializers_follow_column_data_type(make_store):
    assert isinstance(make_store().serializer, JsonSerializer)
    assert isinstance(make_store(column_data_type="jsonb").serializer, JsonbSerializer)


def test_dataclass_event_reads_back_as_the_dataclass(json_store):
    opened = AccountOpened("acc-1", 100, ["vip"])

    json_store.append_to_stream("acc-1", 0, [EventData(None, opened)])

    [event] = json_store.read_stream_forward("acc-1")
    assert event.event_type == "tests.test_serializers.AccountOpened"
    assert event.event_type == type_name(AccountOpened)
    assert isinstance(event.data, AccountOpened)
    assert event.data == opened


def test_dataclass_with_explicit_event_type(json_store):
    json_store.append_to_stream(
        "s", 0, [EventData(type_name(AccountOpened), AccountOpened("a", 1))]
    )

    [event] = json_store.read_stream_forward("s")
    assert event.data == AccountOpened("a", 1)


def test_only_the_top_level_becomes_a_dataclass(json_store):
    moved = CustomerMoved("c-1", Address("1 Main St", "Springfield"))

    json_store.append_to_stream("c-1", 0, [EventData(None, moved)])

    [event] = json_store.read_stream_forward("c-1")
    assert isinstance(event.data, CustomerMoved)
    assert event.data.address == {"street": "1 Main St", "city": "Springfield"}


def test_nested_class_event_type(json_store):
    json_store.append_to_stream("s", 0, [EventData(None, Outer.Inner(7))])

    [event] = json_store.read_stream_forward("s")
    assert event.event_type == "tests.test_serializers.Outer.Inner"
    assert event.data == Outer.Inner(7)


@pytest.mark.parametrize(
    "event_type",
    [
        "AccountOpened",  # no module
        "tests.test_serializers.NoSuchClass",
        "tests.test_serializers.NotADataclass",  # a class, not a dataclass
        "module_never_imported_xyz.AccountOpened",
        "json.JSONDecoder",
        "builtins.dict",
    ],
)
def test_other_event_types_read_back_as_plain_json(json_store, event_type):
    json_store.append_to_stream("s", 0, [EventData(event_type, {"account_id": "a", "balance": 1})])

    [event] = json_store.read_stream_forward("s")
    assert event.data == {"account_id": "a", "balance": 1}
    assert type(event.data) is dict
    assert "module_never_imported_xyz" not in sys.modules


def test_json_not_matching_the_dataclass_stays_a_dict(json_store):
    # Missing a required field: the dataclass cannot be built, the dict is returned.
    json_store.append_to_stream("s", 0, [EventData(type_name(AccountOpened), {"balance": 5})])

    [event] = json_store.read_stream_forward("s")
    assert event.data == {"balance": 5}


def test_unknown_keys_are_dropped_when_building_the_dataclass(json_store):
    data = {"account_id": "a", "balance": 2, "added_later": True}
    json_store.append_to_stream("s", 0, [EventData(type_name(AccountOpened), data)])

    [event] = json_store.read_stream_forward("s")
    assert event.data == AccountOpened("a", 2)


@pytest.mark.parametrize(
    "value",
    [
        {"nested": {"list": [1, 2.5, None, True], "text": "ünïcode ✓"}},
        [1, "two", {"three": 3}],
        "plain string",
        "123",
        "null",
        "",
        0,
        -7.25,
        False,
        None,
    ],
    ids=repr,
)
def test_any_json_value_round_trips(json_store, value):
    json_store.append_to_stream("s", 0, [EventData("Value", value, metadata=value)])

    [event] = json_store.read_stream_forward("s")
    assert event.data == value
    assert type(event.data) is type(value)
    if value is not None:
        assert event.metadata == value


def test_common_python_types_are_written_as_json(json_store):
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    json_store.append_to_stream(
        "s", 0, [EventData("Typed", {"when": when, "ids": (1, 2), "set": frozenset([3])})]
    )

    [event] = json_store.read_stream_forward("s")
    assert event.data == {"when": "2024-05-06T07:08:09+00:00", "ids": [1, 2], "set": [3]}


def test_jsonb_data_is_queryable_with_plain_sql(make_store, admin_engine, driver):
    store = make_store(driver=driver, column_data_type="jsonb")
    store.append_to_stream(
        "acc-1",
        0,
        [
            EventData(None, AccountOpened("acc-1", 250, ["vip"]), metadata={"user": "alice"}),
            EventData("Deposited", {"amount": 10, "account": {"id": "acc-1"}}),
        ],
    )

    rows = select_rows(
        admin_engine,
        f"SELECT data->>'account_id', data->>'balance', data->'tags'->>0, metadata->>'user', "
        f"data->'account'->>'id', jsonb_typeof(data) "
        f'FROM "{store.schema}".events ORDER BY created_at, event_type',
    )

    assert sorted(rows, key=repr) == sorted(
        [
            ("acc-1", "250", "vip", "alice", None, "object"),
            (None, None, None, None, "acc-1", "object"),
        ],
        key=repr,
    )
    [(column_type,)] = select_rows(
        admin_engine,
        "SELECT data_type FROM information_schema.columns "
        f"WHERE table_schema = '{store.schema}' AND table_name = 'events' "
        "AND column_name = 'data'",
    )
    assert column_type == "jsonb"


def test_bytea_data_is_utf8_json(make_store, admin_engine):
    store = make_store()
    store.append_to_stream("s", 0, [EventData("E", {"a": "é"}, metadata={"m": 1})])

    [(data, metadata)] = select_rows(
        admin_engine, f'SELECT data, metadata FROM "{store.schema}".events'
    )

    assert json.loads(bytes(data).decode("utf-8")) == {"a": "é"}
    assert json.loads(bytes(metadata)) == {"m": 1}


def test_jsonb_serializer_unit():
    """jsonb_serializer_test.exs: first level to JSON keys, back into the dataclass."""
    serializer = JsonbSerializer()
    moved = CustomerMoved("c", Address("s", "t"))

    text = serializer.serialize(moved)

    assert json.loads(text) == {"customer_id": "c", "address": {"street": "s", "city": "t"}}
    value = serializer.deserialize(
        {"customer_id": "c", "address": {"street": "s", "city": [{"five": 5}]}},
        type_name(CustomerMoved),
    )
    assert value == CustomerMoved("c", {"street": "s", "city": [{"five": 5}]})  # type: ignore[arg-type]
    assert serializer.deserialize(b'{"a": 1}') == {"a": 1}
    assert serializer.deserialize("a string value") == "a string value"


def test_json_serializer_unit():
    serializer = JsonSerializer()

    data = serializer.serialize(AccountOpened("a", 1), type_name(AccountOpened))

    assert isinstance(data, bytes)
    assert serializer.deserialize(data, type_name(AccountOpened)) == AccountOpened("a", 1)
    assert serializer.deserialize(memoryview(data), None) == {
        "account_id": "a",
        "balance": 1,
        "tags": [],
    }


@pytest.mark.parametrize(
    "stored, expected",
    [
        (b'{"a":1}', {"a": 1}),
        (b' {"a": 1}\n', {"a": 1}),  # whitespace around the document (hand-written rows)
        ('{"é":"ü"}'.encode(), {"é": "ü"}),
        ('{"a":1}'.encode("utf-16"), {"a": 1}),  # another UTF encoding, as json.loads reads it
        (b'"abc"', "abc"),
        (b"null", None),
    ],
)
def test_json_serializer_reads_what_json_loads_reads(stored, expected):
    serializer = JsonSerializer()

    assert serializer.deserialize(stored, None) == expected
    assert serializer.deserialize(memoryview(stored), None) == expected


@pytest.mark.parametrize("stored", [b'{"a":1} trailing', b'{"a":', b"\xff\xfe\x00", b""])
def test_json_serializer_refuses_what_json_loads_refuses(stored):
    with pytest.raises(ValueError):
        JsonSerializer().deserialize(stored, None)


# -- MarshmallowSerializer ----------------------------------------------------------


@dataclass
class Payment:
    payment_id: str
    amount_cents: int
    paid_at: datetime


class PaymentSchema(Schema):
    payment_id = fields.Str(required=True)
    amount_cents = fields.Int(required=True)
    paid_at = fields.AwareDateTime(required=True)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Payment:
        return Payment(**data)


@dataclass
class Refund:
    payment_id: str


class RefundSchema(Schema):
    payment_id = fields.Str(required=True)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Refund:
        return Refund(**data)


@pytest.fixture(params=["bytea", "jsonb"])
def marshmallow_store(request, make_store, driver):
    serializer = MarshmallowSerializer(
        {"PaymentMade": PaymentSchema, Refund: RefundSchema()},
        column_data_type=request.param,
    )
    return make_store(driver=driver, column_data_type=request.param, serializer=serializer)


def test_marshmallow_schemas_build_typed_events(marshmallow_store):
    paid_at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    marshmallow_store.append_to_stream(
        "payments",
        0,
        [
            EventData("PaymentMade", Payment("p-1", 1_999, paid_at), metadata={"by": "bob"}),
            EventData(None, Refund("p-1")),
            EventData("Untyped", {"free": "form"}),
        ],
    )

    made, refund, untyped = marshmallow_store.read_stream_forward("payments")

    assert made.data == Payment("p-1", 1_999, paid_at)
    assert isinstance(made.data.paid_at, datetime)
    assert made.metadata == {"by": "bob"}
    assert refund.event_type == type_name(Refund)
    assert refund.data == Refund("p-1")
    assert untyped.data == {"free": "form"}


def test_marshmallow_snapshots(marshmallow_store):
    paid_at = datetime(2024, 1, 2, tzinfo=timezone.utc)
    marshmallow_store.record_snapshot(
        SnapshotData("p-1", 3, "PaymentMade", Payment("p-1", 5, paid_at))
    )

    assert marshmallow_store.read_snapshot("p-1").data == Payment("p-1", 5, paid_at)


def test_marshmallow_stores_plain_json(marshmallow_store, admin_engine):
    paid_at = datetime(2024, 1, 2, tzinfo=timezone.utc)
    marshmallow_store.append_to_stream("p", 0, [EventData("PaymentMade", Payment("p", 5, paid_at))])

    [(data,)] = select_rows(admin_engine, f'SELECT data FROM "{marshmallow_store.schema}".events')
    if isinstance(data, memoryview):
        data = json.loads(bytes(data))
    assert data == {"payment_id": "p", "amount_cents": 5, "paid_at": "2024-01-02T00:00:00+00:00"}


# -- a custom serializer ------------------------------------------------------------


class PrefixedSerializer:
    """A serializer of our own: versioned JSON in bytea, recording what it is asked."""

    column_data_type: ClassVar[str] = "bytea"

    def __init__(self) -> None:
        self.serialized: list[str | None] = []
        self.deserialized: list[str | None] = []

    def serialize(self, term: Any, type: str | None = None) -> bytes:
        self.serialized.append(type)
        return b"v1:" + json.dumps({"type": type, "value": term}).encode()

    def deserialize(self, data: Any, type: str | None = None) -> Any:
        self.deserialized.append(type)
        raw = bytes(data)
        assert raw.startswith(b"v1:")
        envelope = json.loads(raw[3:])
        return ("decoded", envelope["type"], envelope["value"])


def test_custom_serializer(make_store, admin_engine, driver):
    serializer = PrefixedSerializer()
    assert isinstance(serializer, Serializer)
    store = make_store(driver=driver, serializer=serializer)

    store.append_to_stream("s", 0, [EventData("Happened", {"x": 1}, metadata={"m": 2})])
    store.record_snapshot(SnapshotData("s", 1, "State", [1, 2]))

    [event] = store.read_stream_forward("s")
    snapshot = store.read_snapshot("s")
    assert event.data == ("decoded", "Happened", {"x": 1})
    assert event.metadata == ("decoded", None, {"m": 2})
    assert snapshot.data == ("decoded", "State", [1, 2])
    assert serializer.serialized == ["Happened", None, "State"]
    assert serializer.deserialized == ["Happened", None, "State"]
    [(raw,)] = select_rows(admin_engine, f'SELECT data FROM "{store.schema}".events')
    assert bytes(raw).startswith(b"v1:")


def test_custom_jsonb_serializer(make_store, admin_engine):
    class UpperJsonb:
        column_data_type = "jsonb"

        def serialize(self, term: Any, type: str | None = None) -> str:
            return json.dumps({k.upper(): v for k, v in term.items()})

        def deserialize(self, data: Any, type: str | None = None) -> Any:
            return {k.lower(): v for k, v in data.items()}

    store = make_store(column_data_type="jsonb", serializer=UpperJsonb())
    store.append_to_stream("s", 0, [EventData("E", {"name": "x"})])

    assert store.read_stream_forward("s")[0].data == {"name": "x"}
    assert select_rows(admin_engine, f"""SELECT data->>'NAME' FROM "{store.schema}".events""") == [
        ("x",)
    ]


# -- mismatches ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serializer", "column_data_type"),
    [
        (JsonbSerializer(), "bytea"),
        (JsonSerializer(), "jsonb"),
        (MarshmallowSerializer({}, column_data_type="jsonb"), "bytea"),
        (MarshmallowSerializer({}), "jsonb"),
        (PrefixedSerializer(), "jsonb"),
    ],
    ids=[
        "jsonb-on-bytea",
        "json-on-jsonb",
        "marshmallow-jsonb-on-bytea",
        "marshmallow-on-jsonb",
        "custom",
    ],
)
def test_mismatched_serializer_and_column_type(database_url, serializer, column_data_type):
    with pytest.raises(ValueError, match="column_data_type"):
        EventStore(database_url, serializer=serializer, column_data_type=column_data_type)


def test_serializer_without_the_protocol_is_refused(database_url):
    class Half:
        column_data_type = "bytea"

        def serialize(self, term: Any, type: str | None = None) -> bytes:
            return b""

    with pytest.raises(TypeError, match="deserialize"):
        EventStore(database_url, serializer=Half())  # type: ignore[arg-type]


def test_unknown_column_data_type(database_url):
    with pytest.raises(ValueError, match="column_data_type"):
        EventStore(database_url, column_data_type="json")
    with pytest.raises(ValueError, match="column_data_type"):
        MarshmallowSerializer({}, column_data_type="text")
