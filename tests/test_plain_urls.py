"""Plain ``postgresql://`` URLs, exactly as the docs print them.

SQLAlchemy picks the driver of such a URL itself (psycopg2 on 2.0, psycopg 3
on 2.1), so a caller's Engine -- Flask-SQLAlchemy's included -- may run on
either. The listener must follow the engine, not the URL's spelling:
subscriptions have to deliver on both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore, RecordedEvent
from sqlalchemy_eventstore.flask import FlaskEventStore

from .conftest import unique_schema
from .subscription_helpers import WAIT


@pytest.fixture
def plain_url(database_url: URL) -> str:
    return database_url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def schemas(admin_engine: Engine) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with admin_engine.connect() as conn:
        for schema in made:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def _expected_driver() -> str:
    """What SQLAlchemy itself picks for ``postgresql://``."""
    return str(make_url("postgresql://x/y").get_dialect().driver)


def test_a_store_on_an_engine_from_a_plain_url_delivers_to_subscriptions(
    plain_url: str, schemas: list[str]
):
    engine = create_engine(plain_url)
    assert engine.dialect.driver == _expected_driver()
    schemas.append(unique_schema())
    store = EventStore(engine, schema=schemas[-1])
    try:
        store.init()
        transient = store.subscribe("$all")
        persistent = store.subscribe_to_all_streams("plain-url")
        assert persistent.wait_subscribed(WAIT)
        store.append_to_stream("s", ANY_VERSION, [EventData("T", {"i": 1})])
        assert [e.event_number for e in transient.receive(timeout=WAIT)] == [1]
        batch = persistent.receive(timeout=WAIT)
        assert [e.event_number for e in batch] == [1]
        persistent.ack(batch)
    finally:
        store.close()
        engine.dispose()


def test_a_store_from_a_plain_url_delivers_to_subscriptions(plain_url: str, schemas: list[str]):
    schemas.append(unique_schema())
    with EventStore(plain_url, schema=schemas[-1]) as store:
        store.init()
        transient = store.subscribe("$all")
        assert transient.wait_subscribed(WAIT)
        store.append_to_stream("s", ANY_VERSION, [EventData("T", {"i": 1})])
        assert [e.event_number for e in transient.receive(timeout=WAIT)] == [1]


def test_flask_sqlalchemy_on_a_plain_url_runs_its_handlers(plain_url: str, schemas: list[str]):
    schemas.append(unique_schema())
    app = Flask("plain_url_app")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=plain_url, EVENTSTORE_SCHEMA=schemas[-1], EVENTSTORE_INIT=True
    )
    db = SQLAlchemy(app)
    events = FlaskEventStore(app, db)
    seen: list[int] = []
    arrived = threading.Event()

    @events.handler("plain-url-handler")
    def handle(batch: list[RecordedEvent]) -> None:
        seen.extend(e.event_number for e in batch)
        arrived.set()

    try:
        with app.app_context():
            assert db.engine.dialect.driver == _expected_driver()
            (subscription,) = events.start_subscriptions()
            assert subscription.wait_subscribed(WAIT)
            # db.session is a scoped_session: accepted as conn= directly.
            events.store.append_to_stream(
                "order-1", ANY_VERSION, [EventData("OrderPlaced", {})], conn=db.session
            )
            db.session.commit()
        assert arrived.wait(WAIT)
        assert seen == [1]
    finally:
        events.close()
        with app.app_context():
            db.engine.dispose()
