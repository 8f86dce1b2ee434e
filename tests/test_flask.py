"""FlaskEventStore on a real Flask app, Flask-SQLAlchemy and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, current_app, has_app_context, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_eventstore import ALL_STREAM, NO_STREAM, EventData, EventStore, JsonbSerializer
from sqlalchemy_eventstore.errors import StreamDeletedError, StreamNotFoundError
from sqlalchemy_eventstore.flask import FlaskEventStore

from .conftest import unique_schema
from .parked_helpers import park_numbers


@dataclass
class App:
    app: Flask
    db: SQLAlchemy
    events: FlaskEventStore
    schema: str
    order: Any  # the Order model


class Boom(Exception):
    pass


@pytest.fixture
def make_app(database_url: URL, admin_engine: Engine) -> Iterator[Callable[..., App]]:
    """Apps with an ``orders`` table and an event store in a fresh schema each."""
    made: list[App] = []

    def factory(*, config: dict[str, Any] | None = None, **store_options: Any) -> App:
        # The table lives in the store's schema (created by EVENTSTORE_INIT).
        schema = store_options.get("schema") or unique_schema()

        class Base(DeclarativeBase):
            pass

        db = SQLAlchemy(model_class=Base)

        class Order(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "orders"
            __table_args__ = {"schema": schema}  # noqa: RUF012

            id: Mapped[int] = mapped_column(primary_key=True)
            reference: Mapped[str]

        app = Flask(f"test_app_{schema}")
        app.config.update(
            SQLALCHEMY_DATABASE_URI=database_url.render_as_string(hide_password=False),
            EVENTSTORE_SCHEMA=unique_schema() if "schema" in store_options else schema,
            EVENTSTORE_INIT=True,
            **(config or {}),
        )
        db.init_app(app)
        events = FlaskEventStore(app, db, **store_options)
        made.append(App(app, db, events, schema, Order))
        with app.app_context():
            db.create_all()

        @app.post("/orders/<reference>")
        def place(reference: str) -> tuple[str, int]:
            db.session.add(Order(reference=reference))
            events.append_to_stream(
                f"order-{reference}",
                NO_STREAM,
                [EventData("OrderPlaced", {"reference": reference}), EventData("Paid", {})],
            )
            if request.args.get("fail"):
                raise Boom("after the append, before the commit")
            db.session.commit()
            return reference, 201

        return made[-1]

    yield factory
    for made_app in made:
        made_app.events.close()
        with made_app.app.app_context():
            made_app.db.engine.dispose()
    with admin_engine.connect() as conn:
        for made_app in made:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{made_app.schema}" CASCADE'))


def orders(t: App) -> list[str]:
    with t.app.app_context():
        return list(t.db.session.scalars(t.db.select(t.order.reference)))


def test_a_view_commits_its_row_and_its_events_together(make_app: Callable[..., App]) -> None:
    t = make_app()
    response = t.app.test_client().post("/orders/A-1")
    assert response.status_code == 201
    assert orders(t) == ["A-1"]
    with t.app.app_context():
        stream = t.events.read_stream_forward("order-A-1")
        assert [e.event_type for e in stream] == ["OrderPlaced", "Paid"]
        assert stream[0].data == {"reference": "A-1"}
        # Flask-SQLAlchemy's engine, not a second one: one pool for rows and events.
        assert t.events.store.engine is t.db.engine


def test_a_failing_view_rolls_back_its_row_and_its_events(make_app: Callable[..., App]) -> None:
    t = make_app()
    client = t.app.test_client()
    assert client.post("/orders/A-1").status_code == 201
    response = client.post("/orders/B-2?fail=1")
    assert response.status_code == 500
    assert orders(t) == ["A-1"]
    with t.app.app_context():
        with pytest.raises(StreamNotFoundError):
            t.events.read_stream_forward("order-B-2")
        assert [e.stream_uuid for e in t.events.read_all_streams_forward()] == ["order-A-1"] * 2


def test_link_and_delete_join_the_session_and_roll_back_with_it(
    make_app: Callable[..., App],
) -> None:
    t = make_app()
    assert t.app.test_client().post("/orders/A-1").status_code == 201
    with t.app.test_request_context():
        placed = t.events.read_stream_forward("order-A-1")
        t.events.link_to_stream("linked", NO_STREAM, placed)
        t.events.delete_stream("order-A-1")
        t.db.session.rollback()
        with pytest.raises(StreamNotFoundError):
            t.events.read_stream_forward("linked")
        assert len(t.events.read_stream_forward("order-A-1")) == 2

        t.events.link_to_stream("linked", NO_STREAM, placed)
        t.events.delete_stream("order-A-1")
        t.db.session.commit()
        assert len(t.events.read_stream_forward("linked")) == 2
        with pytest.raises(StreamDeletedError):
            t.events.read_stream_forward("order-A-1")


def test_reads_join_the_session_and_see_what_the_view_appended(
    make_app: Callable[..., App],
) -> None:
    """A view reads back its own uncommitted events; other sessions do not see them."""
    t = make_app()
    seen: dict[str, Any] = {}

    @t.app.post("/echo/<reference>")
    def echo(reference: str) -> tuple[str, int]:
        stream = f"echo-{reference}"
        t.events.append_to_stream(stream, NO_STREAM, [EventData("Echoed", {"r": reference})])
        seen["read"] = [e.data for e in t.events.read_stream_forward(stream)]
        seen["lazy"] = [e.event_type for e in t.events.stream_all_forward()]
        seen["info"] = t.events.stream_info(stream).stream_version
        seen["page"] = [i.stream_uuid for i in t.events.paginate_streams(search="echo").entries]
        # The store's own connections (outside db.session) see nothing yet.
        with pytest.raises(StreamNotFoundError):
            t.events.store.read_stream_forward(stream)
        if request.args.get("fail"):
            raise Boom("rolled back")
        t.db.session.commit()
        return reference, 201

    client = t.app.test_client()
    assert client.post("/echo/one").status_code == 201
    assert seen == {"read": [{"r": "one"}], "lazy": ["Echoed"], "info": 1, "page": ["echo-one"]}
    assert client.post("/echo/two?fail=1").status_code == 500
    assert seen["read"] == [{"r": "two"}]
    with t.app.app_context():
        with pytest.raises(StreamNotFoundError):
            t.events.read_stream_forward("echo-two")
        assert len(t.events.read_stream_forward("echo-one")) == 1


def test_an_explicit_conn_wins_over_the_session(make_app: Callable[..., App]) -> None:
    t = make_app()
    with t.app.app_context():
        with t.db.engine.begin() as conn:
            t.events.append_to_stream("own", NO_STREAM, [EventData("E", {})], conn=conn)
        t.db.session.rollback()
        assert len(t.events.read_stream_forward("own")) == 1


def test_parked_events_run_on_the_apps_store(make_app: Callable[..., App]) -> None:
    t = make_app()
    assert t.app.test_client().post("/orders/A-1").status_code == 201
    with t.app.app_context():
        park_numbers(t.events.store, "projector", [2])
        assert [p.event.event_type for p in t.events.parked_events("projector")] == ["Paid"]
        assert t.events.replay_parked("projector") == 1
        assert t.events.discard_parked("projector", ALL_STREAM, [2]) == 1
        assert t.events.parked_events("projector") == []


def test_init_app_twice_raises(make_app: Callable[..., App]) -> None:
    t = make_app()
    with pytest.raises(RuntimeError, match=r"already been registered.*use that instance"):
        t.events.init_app(t.app)
    with pytest.raises(RuntimeError, match="already been registered"):
        FlaskEventStore(t.app, t.db)
    assert t.app.extensions["eventstore"] is t.events


def test_init_app_needs_flask_sqlalchemy() -> None:
    with pytest.raises(RuntimeError, match=r"db\.init_app\(app\)"):
        FlaskEventStore(Flask("no_db"))


def test_config_keys_are_applied(make_app: Callable[..., App], admin_engine: Engine) -> None:
    t = make_app(
        config={
            "EVENTSTORE_COLUMN_DATA_TYPE": "jsonb",
            "EVENTSTORE_ENABLE_HARD_DELETES": True,
            "EVENTSTORE_SUBSCRIPTION_RETRY_INTERVAL": 0.25,
        }
    )
    with t.app.app_context():
        store = t.events.store
        assert store.schema == t.schema
        assert store.column_data_type == "jsonb"
        assert isinstance(store.serializer, JsonbSerializer)
        assert store.subscription_retry_interval == 0.25
        assert store.enable_hard_deletes is True
    with admin_engine.connect() as conn:
        data_type = conn.scalar(
            text(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_schema = :s AND table_name = 'events' AND column_name = 'data'"
            ),
            {"s": t.schema},
        )
    assert data_type == "jsonb"
    assert t.app.test_client().post("/orders/A-1").status_code == 201
    with t.app.app_context():
        t.events.delete_stream("order-A-1", hard=True)
        t.db.session.commit()
        with pytest.raises(StreamNotFoundError):
            t.events.stream_info("order-A-1")


def test_keyword_options_override_config(make_app: Callable[..., App]) -> None:
    schema = unique_schema()
    t = make_app(config={"EVENTSTORE_SUBSCRIPTION_RETRY_INTERVAL": 9.0}, schema=schema)
    with t.app.app_context():
        assert t.events.store.schema == schema != t.app.config["EVENTSTORE_SCHEMA"]
        assert t.events.store.subscription_retry_interval == 9.0
        assert t.events.stream_info(ALL_STREAM).stream_version == 0  # initialised


def test_init_is_off_unless_configured(database_url: URL, admin_engine: Engine) -> None:
    schema = unique_schema()
    app = Flask("no_init")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url.render_as_string(hide_password=False),
        EVENTSTORE_SCHEMA=schema,
    )
    db = SQLAlchemy(app)
    events = FlaskEventStore(app)  # db found in app.extensions
    try:
        with admin_engine.connect() as conn:
            assert not conn.scalar(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}
            )
        with app.app_context():
            assert events.init() is True
            assert events.stream_info(ALL_STREAM).stream_version == 0
    finally:
        events.close()
        with app.app_context():
            db.engine.dispose()
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_store_needs_an_app_context(make_app: Callable[..., App]) -> None:
    t = make_app()
    with pytest.raises(RuntimeError, match="outside of application context"):
        _ = t.events.store
    with pytest.raises(RuntimeError, match="outside of application context"):
        t.events.append_to_stream("s", NO_STREAM, [EventData("E", {})])
    with Flask("other").app_context(), pytest.raises(RuntimeError, match="init_app"):
        _ = t.events.store
    with t.app.app_context():
        assert isinstance(t.events.store, EventStore)


def test_each_app_gets_its_own_store(make_app: Callable[..., App]) -> None:
    first = make_app()
    second = make_app()
    shared = FlaskEventStore()
    shared_apps = []
    for t in (first, second):
        t.app.extensions.pop("eventstore")
        t.app.config["EVENTSTORE_SCHEMA"] = t.schema
        shared.init_app(t.app)
        shared_apps.append(t.app)
    try:
        with first.app.app_context():
            shared.append_to_stream("s", NO_STREAM, [EventData("E", {})])
            first.db.session.commit()
            assert shared.store.schema == first.schema
        with second.app.app_context():
            assert shared.store.schema == second.schema
            with pytest.raises(StreamNotFoundError):
                shared.read_stream_forward("s")
    finally:
        shared.close()


def eventstore_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("eventstore-")}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_subscriptions_start_once_run_in_an_app_context_and_stop_at_close(
    make_app: Callable[..., App],
    start_gate: Callable[[int, Callable[[int], Any]], list[Any]],
) -> None:
    before = eventstore_threads()
    t = make_app()
    seen: list[tuple[str, bool, str, int | None]] = []

    @t.events.handler("placed-orders", stream=ALL_STREAM, buffer_size=10)
    def on_events(batch: list[Any]) -> None:
        # An app context is pushed, so db.session works in handlers.
        count = t.db.session.scalar(t.db.select(t.db.func.count()).select_from(t.order))
        for event in batch:
            seen.append((event.stream_uuid, has_app_context(), current_app.name, count))

    assert not (eventstore_threads() - before), "nothing starts before the first request"

    # The first requests race: exactly one of them starts the subscription.
    def first_request(i: int) -> int:
        return t.app.test_client().post(f"/orders/R-{i}").status_code

    assert start_gate(8, first_request) == [201] * 8
    started = eventstore_threads() - before
    handler_threads = [th for th in started if th.name == "eventstore-handler-placed-orders"]
    assert len(handler_threads) == 1
    assert any(th.name == f"eventstore-runner-{t.schema}" for th in started)
    with t.app.app_context():
        handles = t.events.start_subscriptions()
        assert len(handles) == 1 and handles[0].subscription_name == "placed-orders"
        assert t.events.start_subscriptions() == handles
    assert eventstore_threads() - before == started

    assert wait_until(lambda: len(seen) == 16), seen
    assert {stream for stream, *_ in seen} == {f"order-R-{i}" for i in range(8)}
    assert all(in_context and name == t.app.name for _, in_context, name, _ in seen)
    assert all(count is not None and count >= 1 for *_, count in seen)

    t.events.close()
    assert wait_until(lambda: not (eventstore_threads() - before), 5), eventstore_threads()
    t.events.close()  # idempotent
    assert t.app.test_client().post("/orders/late").status_code == 201
    assert not (eventstore_threads() - before), "closed: the next request starts nothing"
    with t.app.app_context(), pytest.raises(RuntimeError, match="closed"):
        t.events.start_subscriptions()


def test_a_handler_registered_after_start_is_subscribed_at_once(
    make_app: Callable[..., App],
) -> None:
    t = make_app()
    with t.app.app_context():
        assert t.events.start_subscriptions() == []
    got: list[str] = []
    t.events.handler("late")(lambda batch: got.extend(e.stream_uuid for e in batch))
    assert t.app.test_client().post("/orders/A-1").status_code == 201
    assert wait_until(lambda: got == ["order-A-1", "order-A-1"]), got
    with t.app.app_context():
        assert [h.subscription_name for h in t.events.start_subscriptions()] == ["late"]


def test_the_package_imports_without_flask() -> None:
    code = (
        "import sys\n"
        "sys.modules['flask'] = None\n"
        "sys.modules['flask_sqlalchemy'] = None\n"
        "import sqlalchemy_eventstore\n"
        "assert 'sqlalchemy_eventstore.flask' not in sys.modules\n"
        "try:\n"
        "    import sqlalchemy_eventstore.flask\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'sqlalchemy-eventstore[flask]'" in result.stdout


def test_the_admin_page_mounts_in_the_app(make_app: Callable[..., App]) -> None:
    """As docs/admin.md shows: DispatcherMiddleware in front of the Flask app."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from sqlalchemy_eventstore.admin import make_admin_app

    t = make_app()
    with t.app.app_context():
        admin = make_admin_app(
            t.events.store, authorize=lambda environ: environ.get("HTTP_X_ROLE") == "admin"
        )
    t.app.wsgi_app = DispatcherMiddleware(t.app.wsgi_app, {"/admin/events": admin})  # type: ignore[method-assign]
    client = t.app.test_client()
    assert client.post("/orders/A-1").status_code == 201  # the app still answers
    assert client.get("/admin/events/").status_code == 403
    page = client.get("/admin/events/stream?id=order-A-1", headers={"X-Role": "admin"})
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "OrderPlaced" in body
    assert 'href="/admin/events/event?stream=order-A-1&amp;n=1"' in body
