"""Flask integration: one event store per app, on the app's Flask-SQLAlchemy engine.

.. code-block:: python

    db = SQLAlchemy(app)
    events = FlaskEventStore(app, db)

    @app.post("/orders")
    def place_order():
        db.session.add(Order(...))
        events.append_to_stream("order-1", NO_STREAM, [EventData("OrderPlaced", {...})])
        db.session.commit()  # the row and the event, or neither

Writes (``append_to_stream``, ``link_to_stream``, ``delete_stream``,
``record_snapshot``, ``delete_snapshot``) and reads (``read_*``, ``stream_*``,
``stream_info``, ``paginate_streams``, ``read_snapshot``, ``parked_events``)
join ``db.session`` unless given ``conn=``: a view reads back what it has
appended before committing it. Subscriptions and the parked-event actions run
on the store. Handlers registered with :meth:`FlaskEventStore.handler` become
persistent subscriptions, started once per process (at the first request or
by :meth:`FlaskEventStore.start_subscriptions`) and stopped at exit.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar
from weakref import WeakKeyDictionary

try:
    from flask import Flask, current_app, has_app_context
    from flask_sqlalchemy import SQLAlchemy
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sqlalchemy_eventstore.flask needs Flask and Flask-SQLAlchemy: "
        "pip install 'sqlalchemy-eventstore[flask]'"
    ) from error

from . import _validation as check
from ._calls import STORE_TIMEOUT, Timeout
from ._types import ALL_STREAM, ANY_VERSION
from .storage.connection import ConnLike
from .store import EventStore
from .subscriptions.handle import Subscription

__all__ = ["FlaskEventStore"]

P = ParamSpec("P")
R = TypeVar("R")
H = TypeVar("H", bound=Callable[[list[Any]], Any])

#: Config keys read once by ``init_app``, and the store option each sets.
CONFIG_KEYS = {
    "EVENTSTORE_SCHEMA": "schema",
    "EVENTSTORE_COLUMN_DATA_TYPE": "column_data_type",
    "EVENTSTORE_ENABLE_HARD_DELETES": "enable_hard_deletes",
    "EVENTSTORE_SESSION_MODE_URL": "session_mode_url",
    "EVENTSTORE_SUBSCRIPTION_RETRY_INTERVAL": "subscription_retry_interval",
    "EVENTSTORE_TIMEOUT": "timeout",
    "EVENTSTORE_INIT": "init",
}


@dataclass
class _HandlerSpec:
    name: str
    stream: str
    handler: Callable[[list[Any]], Any]
    options: dict[str, Any]


@dataclass(eq=False)
class _AppState:
    """What the extension keeps per app: its store, session and subscriptions."""

    store: EventStore
    db: SQLAlchemy
    started: bool = False
    closed: bool = False
    subscriptions: list[Subscription] = field(default_factory=list)


def _delegate(
    method: Callable[Concatenate[EventStore, P], R],
) -> Callable[Concatenate[FlaskEventStore, P], R]:
    """A method running ``method`` on the current app's store."""
    name = method.__name__

    def call(self: FlaskEventStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        bound: Callable[P, R] = getattr(self.store, name)
        return bound(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


def _delegate_in_session(
    method: Callable[Concatenate[EventStore, P], R],
) -> Callable[Concatenate[FlaskEventStore, P], R]:
    """A method running ``method`` on the current app's store in ``db.session``
    (unless the caller passes ``conn=``)."""
    name = method.__name__

    def call(self: FlaskEventStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        state = self._state()
        if kwargs.get("conn") is None:
            kwargs["conn"] = state.db.session()
        bound: Callable[P, R] = getattr(state.store, name)
        return bound(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = (
        f":meth:`EventStore.{name}` on the current app's store, in ``db.session`` "
        "unless given ``conn=``."
    )
    return call


class FlaskEventStore:
    """The event store of a Flask app, sharing its Flask-SQLAlchemy engine and session.

    ``db`` defaults to the app's registered ``SQLAlchemy`` extension; keyword
    ``store_options`` (those of :class:`EventStore`, plus ``init``) override
    the app's ``EVENTSTORE_*`` config.
    """

    def __init__(
        self, app: Flask | None = None, db: SQLAlchemy | None = None, **store_options: Any
    ) -> None:
        # The options EventStore would refuse at init_app, refused here already.
        if "schema" in store_options:
            check.check_schema(store_options["schema"])
        if "timeout" in store_options:
            check.check_timeout(store_options["timeout"])
        self.db = db
        self.store_options = store_options
        self._handlers: list[_HandlerSpec] = []
        self._states: WeakKeyDictionary[Flask, _AppState] = WeakKeyDictionary()
        # Guards the handler list and every app's started/closed flags, so a
        # registration racing a start subscribes its handler exactly once.
        self._lock = threading.Lock()
        self._atexit_registered = False
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the app's store on its Flask-SQLAlchemy engine and register the extension."""
        if "eventstore" in app.extensions:
            raise RuntimeError(
                "A 'FlaskEventStore' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        db = self.db if self.db is not None else app.extensions.get("sqlalchemy")
        if not isinstance(db, SQLAlchemy):
            raise RuntimeError(
                "FlaskEventStore needs Flask-SQLAlchemy: call db.init_app(app) before"
                " events.init_app(app), or pass FlaskEventStore(app, db)."
            )
        options = {
            option: app.config[key] for key, option in CONFIG_KEYS.items() if key in app.config
        }
        options.update(self.store_options)
        init = bool(options.pop("init", False))
        options.setdefault("name", app.name)
        with app.app_context():
            engine = db.engine  # the app's default engine: one pool for rows and events
        store = EventStore(engine, **options)
        if init:
            store.init()
        self._states[app] = _AppState(store=store, db=db)
        app.extensions["eventstore"] = self
        app.before_request(self._start_before_request)
        if not self._atexit_registered:
            atexit.register(self.close)
            self._atexit_registered = True

    # -- the current app's store -------------------------------------------------

    def _current(self) -> tuple[Flask, _AppState]:
        if not has_app_context():
            raise RuntimeError(
                "Working outside of application context: FlaskEventStore finds the store of"
                " the current app. Push one with `with app.app_context():`."
            )
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._states.get(app)
        if state is None:
            raise RuntimeError(
                f"The current Flask app {app.name!r} is not registered with this"
                " FlaskEventStore. Call events.init_app(app) first."
            )
        return app, state

    def _state(self) -> _AppState:
        return self._current()[1]

    @property
    def store(self) -> EventStore:
        """The current app's :class:`EventStore` (needs an app context)."""
        return self._state().store

    def _session_or(self, conn: ConnLike | None) -> ConnLike:
        return conn if conn is not None else self._state().db.session()

    # -- writes join db.session ------------------------------------------------------

    def append_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events: Any,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """:meth:`EventStore.append_to_stream` in ``db.session``'s transaction by default."""
        self.store.append_to_stream(
            stream_uuid, expected_version, events, conn=self._session_or(conn), timeout=timeout
        )

    def link_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events_or_event_ids: Any,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """:meth:`EventStore.link_to_stream` in ``db.session``'s transaction by default."""
        self.store.link_to_stream(
            stream_uuid,
            expected_version,
            events_or_event_ids,
            conn=self._session_or(conn),
            timeout=timeout,
        )

    def delete_stream(
        self,
        stream_uuid: str,
        expected_version: Any = ANY_VERSION,
        *,
        hard: bool = False,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """:meth:`EventStore.delete_stream` in ``db.session``'s transaction by default."""
        self.store.delete_stream(
            stream_uuid, expected_version, hard=hard, conn=self._session_or(conn), timeout=timeout
        )

    # -- reads and snapshots join db.session too ------------------------------------------

    read_stream_forward = _delegate_in_session(EventStore.read_stream_forward)
    read_stream_backward = _delegate_in_session(EventStore.read_stream_backward)
    read_all_streams_forward = _delegate_in_session(EventStore.read_all_streams_forward)
    read_all_streams_backward = _delegate_in_session(EventStore.read_all_streams_backward)
    stream_forward = _delegate_in_session(EventStore.stream_forward)
    stream_backward = _delegate_in_session(EventStore.stream_backward)
    stream_all_forward = _delegate_in_session(EventStore.stream_all_forward)
    stream_all_backward = _delegate_in_session(EventStore.stream_all_backward)
    stream_info = _delegate_in_session(EventStore.stream_info)
    paginate_streams = _delegate_in_session(EventStore.paginate_streams)
    record_snapshot = _delegate_in_session(EventStore.record_snapshot)
    read_snapshot = _delegate_in_session(EventStore.read_snapshot)
    delete_snapshot = _delegate_in_session(EventStore.delete_snapshot)
    parked_events = _delegate_in_session(EventStore.parked_events)

    # -- everything else runs on the store ---------------------------------------------

    init = _delegate(EventStore.init)
    subscribe = _delegate(EventStore.subscribe)
    subscribe_to_stream = _delegate(EventStore.subscribe_to_stream)
    unsubscribe_from_stream = _delegate(EventStore.unsubscribe_from_stream)
    unsubscribe_from_all_streams = _delegate(EventStore.unsubscribe_from_all_streams)
    delete_subscription = _delegate(EventStore.delete_subscription)
    delete_all_streams_subscription = _delegate(EventStore.delete_all_streams_subscription)
    replay_parked = _delegate(EventStore.replay_parked)
    discard_parked = _delegate(EventStore.discard_parked)

    def subscribe_to_all_streams(self, subscription_name: str, **options: Any) -> Subscription:
        """:meth:`EventStore.subscribe_to_all_streams` on the current app's store."""
        return self.store.subscribe_to_all_streams(subscription_name, **options)

    # -- registered subscriptions ---------------------------------------------------------

    def handler(
        self, subscription_name: str, *, stream: str = ALL_STREAM, **options: Any
    ) -> Callable[[H], H]:
        """Register ``handler(events)`` as the persistent subscription ``subscription_name``
        to ``stream`` (options as :meth:`EventStore.subscribe_to_stream`).

        It runs inside an app context, so ``db.session`` works (and is removed
        after each batch); the batch is acknowledged when it returns.
        """
        if "handler" in options:
            raise TypeError("handler() registers the decorated function; pass no handler=")

        def register(function: H) -> H:
            spec = _HandlerSpec(subscription_name, stream, function, options)
            with self._lock:
                self._handlers.append(spec)
                for app, state in list(self._states.items()):
                    if state.started and not state.closed:
                        state.subscriptions.append(self._subscribe(app, state.store, spec))
            return function

        return register

    def _subscribe(self, app: Flask, store: EventStore, spec: _HandlerSpec) -> Subscription:
        function = spec.handler

        def in_app_context(events: list[Any]) -> Any:
            with app.app_context():
                return function(events)

        return store.subscribe_to_stream(
            spec.stream, spec.name, handler=in_app_context, **spec.options
        )

    def start_subscriptions(self) -> list[Subscription]:
        """Start the current app's registered subscriptions, once per process."""
        app, state = self._current()
        with self._lock:
            if state.closed:
                raise RuntimeError("this FlaskEventStore is closed; its subscriptions are stopped")
            if not state.started:
                state.started = True
                for spec in self._handlers:
                    state.subscriptions.append(self._subscribe(app, state.store, spec))
            return list(state.subscriptions)

    def _start_before_request(self) -> None:
        state = self._state()
        if not state.started and not state.closed and self._handlers:
            self.start_subscriptions()

    def close(self) -> None:
        """Stop every app's subscriptions (persisting their checkpoints); idempotent.

        Runs at interpreter exit too. The engines stay Flask-SQLAlchemy's.
        """
        with self._lock:
            closing = [state for state in self._states.values() if not state.closed]
            for state in closing:
                state.closed = True
        for state in closing:
            state.store.close()
