"""Schema names: any that works is accepted, any that cannot work is refused
at construction (ValueError naming ``schema``), never left to fail later.

A store's NOTIFY channels are ``"<schema>.events"`` and ``"<schema>.parked"``,
and PostgreSQL refuses channel names over 63 bytes: so at most 56 bytes of
UTF-8. ``%`` is refused (the drivers take it for a parameter marker in
statements that embed the name), and so is PostgreSQL's reserved ``pg_``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import URL, Engine

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore.flask import FlaskEventStore

from .sequencer_helpers import all_rows, waiting
from .subscription_helpers import WAIT
from .test_cli import assert_failed, run, url_text

LONGEST = "s" * 56

REFUSED: list[tuple[Any, type[Exception], str]] = [
    ("a%b", ValueError, "'%'"),
    ("%", ValueError, "'%'"),
    ("s" * 57, ValueError, "56 bytes"),
    ("é" * 29, ValueError, "56 bytes"),  # 29 characters, 58 bytes
    ("pg_events", ValueError, "pg_"),
    ("a\x00b", ValueError, "NUL"),
    ("", ValueError, "non-empty"),
    (None, TypeError, "str"),
    (b"bytes", TypeError, "str"),
]


@pytest.mark.parametrize(("schema", "error", "says"), REFUSED)
def test_names_that_cannot_work_are_refused_at_construction(
    database_url: URL, schema: Any, error: type[Exception], says: str
):
    with pytest.raises(error, match="schema") as raised:
        EventStore(database_url, schema=schema)
    assert says in str(raised.value)


NAMES_THAT_WORK = [
    LONGEST,
    "é" * 28,  # 56 bytes
    'with "quotes"',
    "it's",
    "with space",
    "dotted.name",
    "MixedCase",
    "événements_日本",
    "semi;colon--",
    "colon:name",
    "back\\slash",
    "trailing ",
]


@pytest.mark.parametrize("schema", NAMES_THAT_WORK)
def test_names_that_work_work_everywhere(make_store: Callable[..., EventStore], schema: str):
    store = make_store(schema=schema)
    subscription = store.subscribe("$all")
    assert subscription.wait_subscribed(WAIT)
    store.append_to_stream("s", ANY_VERSION, [EventData("T", {"i": 1})])
    assert [e.event_number for e in subscription.receive(timeout=WAIT)] == [1]
    persistent = store.subscribe_to_stream("s", "names")
    batch = persistent.receive(timeout=WAIT)
    assert [e.stream_version for e in batch] == [1]
    persistent.ack(batch)
    assert store.stream_info("s").stream_version == 1
    assert store.paginate_streams(search="s").total_entries == 1
    # Parked events announce themselves on "<schema>.parked": it fits too.
    assert store.replay_parked("names", "s") == 0
    assert store.parked_events("names", "s") == []


@pytest.mark.parametrize("schema", NAMES_THAT_WORK)
def test_names_that_work_are_numbered_by_the_appender_in_sequencer_mode(
    make_store: Callable[..., EventStore], admin_engine: Engine, schema: str
):
    """The append's own call after its commit numbers it (no reader asks)."""
    store = make_store(schema=schema, global_order="sequencer")
    store.append_to_stream("s", ANY_VERSION, [EventData("T", {"i": 1})])
    assert waiting(admin_engine, schema) == 0
    assert all_rows(admin_engine, schema) == [(1, "s", 1)]


def test_the_command_applies_the_same_rule(database_url: URL):
    result = run("init", "--url", url_text(database_url), "--schema", "a%b")
    assert_failed(result, "--schema", "'%'")
    result = run("init", "--url", url_text(database_url), "--schema", "s" * 57)
    assert_failed(result, "--schema", "56 bytes")


def test_flask_event_store_applies_the_same_rule(database_url: URL):
    with pytest.raises(ValueError, match="schema"):
        FlaskEventStore(schema="a%b")
    app = Flask("bad_schema_app")
    app.config.update(SQLALCHEMY_DATABASE_URI=url_text(database_url), EVENTSTORE_SCHEMA="s" * 57)
    db = SQLAlchemy(app)
    try:
        with pytest.raises(ValueError, match="schema"):
            FlaskEventStore(app, db)
    finally:
        with app.app_context():
            db.engine.dispose()
