"""``eventstore parked {list,replay,discard}``: the real command, as a subprocess.

Events are parked in storage directly (see parked_helpers); the command lists
them, queues them for replay (telling a live runner through NOTIFY) and
discards them, and fails with one line for what an operator may get wrong.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest

from sqlalchemy_eventstore import ALL_STREAM, EventData, commands
from sqlalchemy_eventstore.commands import CommandError

from .catalog_helpers import make_reference_v1_3_2
from .parked_helpers import ChannelListener, park_numbers, parked_rows
from .test_cli import PYTHON_M, assert_failed, assert_ok, run, url_text


class Raw:
    """Writes bytes as they are: events that JSON cannot read back."""

    column_data_type = "bytea"

    def serialize(self, term, type=None):
        return bytes(term)

    def deserialize(self, data, type=None):
        return bytes(data)


def build_parked_store(make_store, driver: str):
    """Five events in two streams; 2, 4 and 5 parked on $all, 1 on acct-1."""
    store = make_store(driver=driver)
    store.append_to_stream(
        "acct-1", 0, [EventData("Opened", {"n": 1}), EventData("Paid", {"n": 2})]
    )
    store.append_to_stream("acct-2", 0, [EventData("Opened", {"n": 3})])
    raw = make_store(driver=driver, schema=store.schema, init=False, serializer=Raw())
    raw.append_to_stream("acct-2", 1, [EventData("Blob", "é".encode()), EventData("Blob", b"\xff")])
    park_numbers(store, "projector", [2, 4, 5], reason="ValueError: bad\namount")
    park_numbers(store, "projector", [1], stream_uuid="acct-1", reason="KeyError: 'n'")
    return store


@pytest.fixture
def parked_store(make_store):
    return build_parked_store(make_store, "psycopg2")


@pytest.fixture
def parked_store_each_driver(make_store, driver):
    """The command on each driver (the URL names it)."""
    return build_parked_store(make_store, driver)


def args(store, *extra: str) -> list[str]:
    return [*extra, "--url", url_text(store.engine.url), "--schema", store.schema]


def test_list(parked_store):
    out = assert_ok(run("parked", "list", "projector", *args(parked_store)))

    lines = out.splitlines()
    assert "3 parked events" in lines[0] and "projector" in lines[0]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["2", "Paid", "acct-1@2"],
        ["4", "Blob", "acct-2@2"],
        ["5", "Blob", "acct-2@3"],
    ]
    assert all(line.endswith("ValueError: bad amount") for line in lines[1:])

    out = assert_ok(run("parked", "list", "projector", *args(parked_store, "--stream", "acct-1")))
    assert "1 parked event" in out and "KeyError: 'n'" in out


def test_list_as_json(parked_store_each_driver):
    store = parked_store_each_driver
    out = assert_ok(run("parked", "list", "projector", "--json", *args(store)))

    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["event_number"] for e in entries] == [2, 4, 5]
    first, text, binary = entries
    assert first["data"] == {"n": 2} and first["data_format"] == "json"
    assert (first["stream_uuid"], first["stream_version"], first["event_type"]) == (
        "acct-1",
        2,
        "Paid",
    )
    assert first["subscription_name"] == "projector"
    assert first["subscription_stream"] == ALL_STREAM
    assert first["reason"] == "ValueError: bad\namount"
    assert datetime.fromisoformat(first["parked_at"]).utcoffset() is not None
    assert first["replay_requested"] is False
    # Unreadable payloads: as text when they are UTF-8, else base64.
    assert (text["data"], text["data_format"]) == ("é", "text")
    assert (binary["data"], binary["data_format"]) == (base64.b64encode(b"\xff").decode(), "base64")


def test_replay_and_discard(parked_store_each_driver, database_url):
    store = parked_store_each_driver
    with ChannelListener(database_url, f"{store.schema}.parked") as listener:
        out = assert_ok(
            run("parked", "replay", "projector", "--event", "2", "5", "--event", "9", *args(store))
        )
        assert "2 parked events" in out and "queued for replay" in out
        assert len(listener.received()) == 1

    assert [(row[1], row[3]) for row in parked_rows(store)] == [
        (2, True),
        (4, False),
        (5, True),
        (1, False),
    ]
    listed = assert_ok(run("parked", "list", "projector", *args(store)))
    assert [line.endswith("[replay requested]") for line in listed.splitlines()[1:]] == [
        True,
        False,
        True,
    ]

    out = assert_ok(run("parked", "discard", "projector", "--stream", "acct-1", *args(store)))
    assert "1 parked event of" in out and "discarded" in out
    out = assert_ok(run("parked", "discard", "projector", "--event", "4", *args(store)))
    assert "1 parked event of" in out
    assert [row[1] for row in parked_rows(store)] == [2, 5]
    assert assert_ok(run("parked", "replay", "projector", "--quiet", *args(store))) == ""
    assert [row[3] for row in parked_rows(store)] == [True, True]


def test_python_dash_m_and_the_environment_url(parked_store):
    env = {"EVENTSTORE_URL": url_text(parked_store.engine.url)}
    out = assert_ok(
        run(
            "parked",
            "list",
            "projector",
            "--schema",
            parked_store.schema,
            command=PYTHON_M,
            env=env,
        )
    )
    assert "3 parked events" in out


def test_failures(parked_store, make_store, admin_engine):
    store = parked_store
    assert_failed(run("parked", "list", "nobody", *args(store)), 'no subscription "nobody" to $all')
    assert_failed(
        run("parked", "replay", "projector", "--stream", "acct-2", *args(store)),
        'no subscription "projector" to acct-2',
    )
    assert_failed(
        run("parked", "discard", "projector", "--event", "0", *args(store)),
        "event numbers must hold event numbers >= 1",
    )
    usage = run("parked", "replay", "projector", "--event", "two", *args(store))
    assert usage.returncode == 2
    assert_failed(usage, "invalid int value")
    assert_failed(run("parked", "list", *args(store)), "NAME")
    assert_failed(
        run("parked", "list", "projector", *args(store)[:2], "--schema", "nowhere"),
        "holds no event store",
    )
    assert [row[1] for row in parked_rows(store)] == [2, 4, 5, 1]  # nothing changed

    reference = make_store()
    with admin_engine.connect() as conn:
        make_reference_v1_3_2(conn, reference.schema)
    assert_failed(run("parked", "list", "x", *args(reference)), "run `eventstore migrate`")


def test_the_functions(parked_store, capsys):
    url = parked_store.engine.url
    schema = parked_store.schema

    found = commands.parked_list(url, "projector", schema, quiet=True)
    assert [p.event.event_number for p in found] == [2, 4, 5]
    assert commands.parked_replay(url, "projector", schema, True, event_numbers=[4]) == 1
    assert commands.parked_discard(url, "projector", schema, True, stream_uuid="acct-1") == 1
    assert capsys.readouterr().out == ""
    with pytest.raises(CommandError, match="event numbers"):
        commands.parked_discard(url, "projector", schema, True, event_numbers=[-1])
    with pytest.raises(CommandError, match="subscription name"):
        commands.parked_list(url, "", schema, True)


def test_list_on_a_jsonb_store(make_store):
    store = make_store(column_data_type="jsonb")
    store.append_to_stream("s", 0, [EventData("Opened", {"owner": "Ada"}, metadata={"by": 1})])
    park_numbers(store, "projector", [1], stream_uuid="s")

    out = assert_ok(run("parked", "list", "projector", "--stream", "s", "--json", *args(store)))

    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert (entry["data"], entry["metadata"]) == ({"owner": "Ada"}, {"by": 1})
    assert entry["data_format"] == entry["metadata_format"] == "json"
    assert entry["subscription_stream"] == "s"
