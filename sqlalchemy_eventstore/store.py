"""The EventStore facade: construction, lifecycle, subscriptions and parked events.

The storage calls (append, link, delete, reads, stream info, snapshots) are
inherited from :class:`~._calls.StorageCalls`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url

from . import _validation as check
from ._calls import StorageCalls
from ._counters import StoreCounters
from ._options import StoreOptions, connect_args
from ._types import (
    ALL_STREAM,
    ORIGIN,
    ParkedEvent,
    RecordedEvent,
)
from .errors import (
    StreamDeletedError,
    StreamNotFoundError,
)
from .serializers import Serializer
from .stats import StoreStats
from .storage.connection import Connector, ConnLike
from .storage.schema import create_schema
from .storage.sequencer import Sequencer
from .storage.sql import Statements
from .storage.subscriptions import delete_subscription as delete_subscription_row
from .subscriptions.handle import Subscription
from .subscriptions.io import EngineIO
from .subscriptions.locking import session_needed
from .subscriptions.options import FROM_CURRENT, persistent_options
from .subscriptions.reading import Backend
from .subscriptions.runner import Runner

__all__ = ["EventStore"]

#: The values of the ``global_order`` option.
GLOBAL_ORDERS = ("lock", "sequencer")

_instances: weakref.WeakSet[EventStore] = weakref.WeakSet()
_instances_lock = threading.Lock()


def _engine_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        # psycopg2 is the driver the package always installs; "postgres://" is
        # the libpq/Heroku spelling. (An Engine passed in keeps the driver
        # SQLAlchemy chose for it: psycopg 3 for "postgresql://" on 2.1.)
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


class EventStore(StorageCalls):
    """An event store on one PostgreSQL schema.

    ``url_or_engine`` is a database URL, or an existing ``Engine`` whose pool
    the store then shares (and does not dispose of on :meth:`close`). Every
    operation takes ``conn=``: a ``Session``, ``scoped_session`` or
    ``Connection`` in the caller's transaction, which the operation joins
    without committing.

    ``schema`` is the Postgres schema holding the store's tables: any name
    whose UTF-8 is at most 56 bytes (its NOTIFY channel ``"<schema>.events"``
    must fit PostgreSQL's 63), without ``%`` and not starting with ``pg_``;
    ValueError otherwise.

    ``timeout`` (seconds; None: no limit) bounds how long each storage call
    waits on the database -- as PostgreSQL's ``statement_timeout`` on the
    call's statements, and, for an engine the store makes from a URL, as its
    pool's wait for a free connection. Each call can override it with its own
    ``timeout=``. Running out raises :class:`~.errors.StoreTimeoutError` with
    nothing written.

    ``session_mode_url`` marks ``url`` as a transaction-mode pooler
    (PgBouncer): LISTEN and the advisory locks then connect there instead, and
    an engine the store makes for a psycopg 3 URL turns off psycopg's
    server-side prepared statements. An Engine passed in through such a pooler
    needs ``connect_args={"prepare_threshold": None}`` on psycopg 3.
    ``transaction_pooling=True`` says the same of ``url`` when there is no
    such URL: the store then does without server-side state there,
    subscriptions poll for new events every ``poll_interval`` seconds instead
    of LISTENing, and persistent subscriptions -- which need a session to hold
    their advisory lock -- raise RuntimeError. Wherever LISTEN turns out not to
    work (the server refuses it, or it does not hold), subscriptions switch to
    polling by themselves, logging why once; ``listen=False`` makes them poll
    from the start (advisory locks still go to the session URL). See
    docs/polling.md.

    ``foreign_keys=False`` makes :meth:`init` create ``stream_events`` without
    its three foreign keys: appends get much faster, and the append and link
    statements still guarantee what the keys check. It only matters to
    ``init``; a store works on either variant whatever this says.

    ``global_order`` is ``"lock"`` (the reference's way: an append holds the
    ``$all`` row's lock until its transaction ends) or ``"sequencer"`` (an
    append locks only its stream; its events are numbered into ``$all`` after
    its commit). See docs/global-order.md.

    Args:
        url_or_engine: A ``postgresql://`` URL (``postgresql+psycopg://`` for
            psycopg 3) or a SQLAlchemy ``Engine``.
        schema: The PostgreSQL schema holding the event store's tables.
        serializer: Turns event data and metadata into column values and back;
            by default :class:`JsonSerializer` (bytea) or
            :class:`JsonbSerializer` (jsonb).
        column_data_type: ``"bytea"`` or ``"jsonb"``: the type of the data and
            metadata columns, as created by :meth:`init`.
        enable_hard_deletes: Allow ``delete_stream(..., hard=True)``.
        session_mode_url: A URL for LISTEN and advisory locks when ``url`` goes
            through a transaction-mode pooler.
        subscription_retry_interval: Seconds between attempts to take a
            persistent subscription that another process holds.
        name: A name for logs and ``pg_stat_activity``'s ``application_name``.
        timeout: Seconds each storage call may wait on the database (None: no
            limit); each call can pass its own ``timeout=``.
        poll_interval: Seconds between polls for new events, in polling mode
            only (where LISTEN cannot work).
        transaction_pooling: ``url`` goes through a transaction-mode pooler and
            no ``session_mode_url`` is given: poll, and refuse persistent
            subscriptions.
        listen: False to poll for new events instead of LISTENing (where
            LISTEN is known not to work, to skip finding it out).
        foreign_keys: Whether :meth:`init` creates ``stream_events``' foreign
            keys.
        global_order: ``"lock"`` or ``"sequencer"``: how appends get their
            ``$all`` positions.

    Raises:
        TypeError: An argument of the wrong type (``url_or_engine``,
            ``serializer``, ``subscription_retry_interval``, ``name``,
            ``timeout``, ``poll_interval``, ``transaction_pooling``,
            ``listen``).
        ValueError: A bad ``column_data_type`` or ``global_order``, a schema
            name the store cannot use, a serializer writing another column
            type, a non-positive retry interval, timeout or poll interval.
    """

    def __init__(
        self,
        url_or_engine: str | URL | Engine,
        *,
        schema: str = "public",
        serializer: Serializer | None = None,
        column_data_type: str = "bytea",
        enable_hard_deletes: bool = False,
        session_mode_url: str | URL | None = None,
        subscription_retry_interval: float = 60.0,
        name: str | None = None,
        timeout: float | None = 15.0,
        foreign_keys: bool = True,
        global_order: str = "lock",
        poll_interval: float = 1.0,
        transaction_pooling: bool = False,
        listen: bool = True,
    ) -> None:
        options = StoreOptions(
            schema=schema,
            serializer=serializer,
            column_data_type=column_data_type,
            subscription_retry_interval=subscription_retry_interval,
            name=name,
            timeout=timeout,
            foreign_keys=foreign_keys,
            poll_interval=poll_interval,
            transaction_pooling=transaction_pooling,
            listen=listen,
        )
        # Through a transaction-mode pooler: no server-side session state on url.
        pooled = session_mode_url is not None or options.transaction_pooling
        self.timeout = options.timeout
        if global_order not in GLOBAL_ORDERS:
            raise ValueError(f"global_order must be 'lock' or 'sequencer', got {global_order!r}")
        if isinstance(url_or_engine, Engine):
            self._engine = url_or_engine
            self._owns_engine = False
        elif isinstance(url_or_engine, (str, URL)):
            url = _engine_url(url_or_engine)
            args = connect_args(url, name, pooler=pooled)
            # Waiting for a free pooled connection counts as waiting on the
            # database: as long as the store's timeout (None: no limit).
            self._engine = create_engine(url, connect_args=args, pool_timeout=self.timeout)
            self._owns_engine = True
        else:
            raise TypeError(
                "url_or_engine must be a database URL or a SQLAlchemy Engine, "
                f"got {type(url_or_engine).__name__}"
            )
        self.schema = options.schema
        self.serializer = options.serializer
        self.column_data_type = options.column_data_type
        self.enable_hard_deletes = enable_hard_deletes
        self.session_mode_url = None if session_mode_url is None else _engine_url(session_mode_url)
        self.subscription_retry_interval = options.subscription_retry_interval
        self.poll_interval = options.poll_interval
        self.transaction_pooling = options.transaction_pooling
        self.listen = options.listen
        self.name = name
        self.foreign_keys = foreign_keys
        # Prepared statements cannot cross a transaction-mode pooler.
        self.global_order = global_order
        self._sql = Statements(
            self.schema,
            self.column_data_type,
            prepare=not pooled,
            global_order=global_order,
        )
        # global_order="sequencer": numbers committed appends into $all.
        self._sequencer = (
            Sequencer(self._engine, self._sql) if global_order == "sequencer" else None
        )
        # How a call's timeout reaches PostgreSQL (see storage.connection):
        # kept on the store's own connections, set per transaction through a
        # transaction-mode pooler, set and put back on a caller's Engine.
        self._connector = Connector(
            self._engine,
            "local" if pooled else ("session" if self._owns_engine else "restore"),
        )
        self._counters = StoreCounters()
        self._closed = False
        self._runner: Runner | None = None
        self._runner_lock = threading.Lock()
        with _instances_lock:
            _instances.add(self)

    # -- lifecycle ---------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine the store runs its operations on."""
        return self._engine

    @property
    def owns_engine(self) -> bool:
        """True when the store made its engine from a URL (and disposes of it)."""
        return self._owns_engine

    @classmethod
    def all_instances(cls) -> list[EventStore]:
        """The stores of this process that are not closed."""
        with _instances_lock:
            return [store for store in _instances if not store._closed]

    def init(self) -> bool:
        """Create the schema and its tables, functions, triggers and ``$all`` row.

        Idempotent, and safe when several processes run it at once.

        Returns:
            True when it created the event store, False when it already existed.

        Raises:
            sqlalchemy.exc.DBAPIError: The database refused (no such database,
                no permission to create the schema).
        """
        with self._engine.begin() as conn:
            return create_schema(
                conn, self.schema, self.column_data_type, foreign_keys=self.foreign_keys
            )

    def close(self) -> None:
        """Stop everything the store runs; dispose of its engine if it made it."""
        if self._closed:
            return
        self._closed = True
        with _instances_lock:
            _instances.discard(self)
        with self._runner_lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop()
        if self._sequencer is not None:
            self._sequencer.close()
        if self._owns_engine:
            self._engine.dispose()

    def stats(self) -> StoreStats:
        """This process's figures of the store now: appends, events appended,
        notifications, listener reconnects, notification lag, and each
        persistent subscription's lag, checkpoint age, events in flight,
        parked events, retries and status.

        A snapshot (a frozen :class:`StoreStats`); cheap enough to call from a
        health check or a metrics exporter (no database round trip).

        Returns:
            The :class:`StoreStats`.
        """
        with self._runner_lock:
            runner = self._runner
        counters = self._counters
        if runner is None:
            notifications, reconnects, lag, mode = 0, 0, None, None
            subscriptions: tuple[Any, ...] = ()
        else:
            notifications, reconnects, lag, mode = runner.store_stats()
            subscriptions = runner.subscription_stats()
        return StoreStats(
            appends=counters.appends,
            events_appended=counters.events_appended,
            notifications=notifications,
            listener_reconnects=reconnects,
            notification_lag=lag,
            notification_mode=mode,
            subscriptions=subscriptions,
        )

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<EventStore {self.name or ''} schema={self.schema!r} "
            f"url={self._engine.url.render_as_string(hide_password=True)!r}>"
        )

    # -- subscriptions -----------------------------------------------------------

    def _get_runner(self) -> Runner:
        with self._runner_lock:
            if self._closed:
                raise RuntimeError("the event store is closed")
            if self._runner is None:
                self._runner = Runner(self._subscription_backend())
            return self._runner

    def _subscription_backend(self) -> Backend:
        """What the subscriptions need of the store, and nothing more."""
        # LISTEN and the advisory locks need sessions of their own: on the
        # session_mode_url when given (PgBouncer), else like the store's
        # engine -- made by that engine itself when it is the caller's, so its
        # connect_args or creator (SSL options, say) apply to them too.
        creator: Callable[[], Any] | None = None
        if self.session_mode_url is None and not self._owns_engine:
            engine = self._engine

            def creator() -> Any:
                pooled = engine.raw_connection()
                pooled.detach()  # from now on closing it closes the connection itself
                return pooled.dbapi_connection

        session_url = self.session_mode_url or self._engine.url
        io = EngineIO(
            self._engine,
            prepare=self._sql.prepare,
            session_url=session_url,
            session_creator=creator,
        )
        return Backend(
            io=io,
            schema=self.schema,
            statements=self._sql,
            serializer=self.serializer,
            retry_interval=self.subscription_retry_interval,
            sequence_soon=self._sequence_soon if self._sequencer is not None else None,
            poll_interval=self.poll_interval,
            polling_reason=self._polling_reason(),
            session_label=session_url.render_as_string(hide_password=True),
        )

    def _polling_reason(self) -> str | None:
        """Why subscriptions poll from the start (None: they LISTEN)."""
        if self._pooled_without_session:
            return (
                "the store's url goes through a transaction-mode pooler "
                "(transaction_pooling=True) and no session_mode_url was given"
            )
        if not self.listen:
            return "the store was made with listen=False"
        return None

    @property
    def _pooled_without_session(self) -> bool:
        return self.transaction_pooling and self.session_mode_url is None

    def subscribe(
        self,
        stream_uuid: str,
        *,
        handler: Callable[[list[Any]], Any] | None = None,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
    ) -> Subscription:
        """A transient subscription to a stream or ``$all``: every event committed
        after this returns is delivered; nothing is acknowledged or persisted.

        Args:
            stream_uuid: The stream, or ``$all``.
            handler: Called with each batch (a list) on a thread of the store;
                without one, take batches with :meth:`Subscription.receive`.
            selector: Deliver only the events for which it returns true.
            mapper: Deliver ``mapper(event)`` instead of each event.

        Returns:
            The :class:`Subscription`.

        Raises:
            RuntimeError: The store is closed.
            TypeError: A non-callable handler, selector or mapper.
            ValueError: An empty stream name.
        """
        stream_uuid = check.check_stream_uuid(stream_uuid)
        for name, value in (("handler", handler), ("selector", selector), ("mapper", mapper)):
            check.check_callable(value, name)
        return self._get_runner().subscribe_transient(stream_uuid, handler, selector, mapper)

    def subscribe_to_stream(
        self,
        stream_uuid: str,
        subscription_name: str,
        *,
        handler: Callable[[list[Any]], Any] | None = None,
        start_from: Any = ORIGIN,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
        concurrency_limit: int = 1,
        buffer_size: int = 1,
        max_size: int = 1000,
        checkpoint_threshold: int = 1,
        checkpoint_after: float | None = None,
        partition_by: Callable[[RecordedEvent], Any] | None = None,
        transient: bool = False,
        max_retries: int | None = None,
    ) -> Subscription:
        """A persistent subscription: at-least-once delivery from the last
        acknowledged event, one instance across all processes.

        Its checkpoint is stored in the ``subscriptions`` table; an advisory
        lock keeps one process delivering it at a time (the others wait and
        take over when it stops).

        Args:
            stream_uuid: The stream, or ``$all``.
            subscription_name: The subscription's name, unique per stream.
            handler: Called with each batch; the batch is acknowledged when it
                returns. Without one, :meth:`Subscription.receive` and
                :meth:`Subscription.ack`.
            start_from: :data:`ORIGIN`, :data:`CURRENT` or a position, for a
                subscription that does not exist yet (an existing one resumes
                after its checkpoint).
            selector: Deliver only the events for which it returns true.
            mapper: Deliver ``mapper(event)`` instead of each event.
            concurrency_limit: How many subscribers may share the subscription.
            buffer_size: Events in flight per subscriber before it must ack.
            max_size: Events held in memory while catching up.
            checkpoint_threshold: Acks between checkpoint writes.
            checkpoint_after: Seconds after which a pending checkpoint is
                written anyway.
            partition_by: With ``concurrency_limit > 1``: events of one
                partition go to one subscriber, in order.
            transient: Keep no checkpoint (delivery restarts from
                ``start_from`` each time).
            max_retries: After that many retries of an event that user code
                (or the serializer) fails on, the event is parked and the
                subscription carries on (None: retry without end).

        Returns:
            The :class:`Subscription`.

        Raises:
            RuntimeError: The store is closed, or its session URL goes
                through a transaction-mode pooler (``transaction_pooling=True``
                without ``session_mode_url``, or LISTEN found not to hold
                there): the subscription's advisory lock could not hold.
            SubscriptionAlreadyExistsError: The subscription already has its
                one subscriber in this process.
            TooManySubscribersError: It has ``concurrency_limit`` subscribers.
            AlreadySubscribedError: This handler is already subscribed.
            TypeError: An option of the wrong type.
            ValueError: An option out of range.
        """
        stream_uuid = check.check_stream_uuid(stream_uuid)
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        options = persistent_options(
            handler=handler,
            start_from=start_from,
            selector=selector,
            mapper=mapper,
            concurrency_limit=concurrency_limit,
            buffer_size=buffer_size,
            max_size=max_size,
            checkpoint_threshold=checkpoint_threshold,
            checkpoint_after=checkpoint_after,
            partition_by=partition_by,
            transient=transient,
            max_retries=max_retries,
        )
        if self._pooled_without_session:
            raise session_needed(self._engine.url.render_as_string(hide_password=True))
        if options.start_from == FROM_CURRENT:
            try:
                current = self.stream_info(stream_uuid).stream_version
            except (StreamNotFoundError, StreamDeletedError):
                current = 0
            options = replace(options, start_from=current)
        return self._get_runner().subscribe_persistent(stream_uuid, name, handler, options)

    def subscribe_to_all_streams(self, subscription_name: str, **options: Any) -> Subscription:
        """A persistent subscription to ``$all`` (options as :meth:`subscribe_to_stream`).

        Returns:
            The :class:`Subscription`.

        Raises:
            The errors of :meth:`subscribe_to_stream`.
        """
        return self.subscribe_to_stream(ALL_STREAM, subscription_name, **options)

    def unsubscribe_from_stream(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription's subscribers in this process; the checkpoint is kept.

        No error when none runs here.

        Args:
            stream_uuid: The subscribed stream, or ``$all``.
            subscription_name: The subscription's name.

        Raises:
            TypeError: An argument that is not a str.
            ValueError: An empty name.
        """
        stream_uuid = check.check_stream_uuid(stream_uuid)
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        with self._runner_lock:
            runner = self._runner
        if runner is not None:
            runner.unsubscribe_all((stream_uuid, name))

    def unsubscribe_from_all_streams(self, subscription_name: str) -> None:
        """:meth:`unsubscribe_from_stream` of a subscription to ``$all``.

        Args:
            subscription_name: The subscription's name.

        Raises:
            TypeError: The name is not a str.
            ValueError: The name is empty.
        """
        self.unsubscribe_from_stream(ALL_STREAM, subscription_name)

    def delete_subscription(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop any live subscriber here and delete the subscription's checkpoint.

        Its parked events go with it. No error when it does not exist. A
        process elsewhere running it finds its row gone within a lock check
        (half a second) and stops its subscribers too.

        Args:
            stream_uuid: The subscribed stream, or ``$all``.
            subscription_name: The subscription's name.

        Raises:
            TypeError: An argument that is not a str.
            ValueError: An empty name.
        """
        self.unsubscribe_from_stream(stream_uuid, subscription_name)
        with self._engine.begin() as conn:
            delete_subscription_row(conn, self.schema, stream_uuid, subscription_name)

    def delete_all_streams_subscription(self, subscription_name: str) -> None:
        """:meth:`delete_subscription` of a subscription to ``$all``.

        Args:
            subscription_name: The subscription's name.

        Raises:
            TypeError: The name is not a str.
            ValueError: The name is empty.
        """
        self.delete_subscription(ALL_STREAM, subscription_name)

    # -- parked events -------------------------------------------------------------
    # Thin: validate, then one storage call. An unknown subscription has no
    # parked events: [] and 0, not an error (as unsubscribing one is no error).

    def parked_events(
        self,
        subscription_name: str,
        stream_uuid: str = ALL_STREAM,
        *,
        conn: ConnLike | None = None,
    ) -> list[ParkedEvent]:
        """The subscription's parked events, in event order ([] for an unknown one).

        Args:
            subscription_name: The subscription's name.
            stream_uuid: Its stream (``$all`` by default).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.

        Returns:
            A list of :class:`ParkedEvent`.

        Raises:
            TypeError: An argument that is not a str.
            ValueError: An empty name.
        """
        return self._call(conn, self._parked_events_call(subscription_name, stream_uuid))

    def replay_parked(
        self,
        subscription_name: str,
        stream_uuid: str = ALL_STREAM,
        event_numbers: list[int] | None = None,
        *,
        conn: ConnLike | None = None,
    ) -> int:
        """Queue parked events (all, or those numbered) for redelivery, in order.

        Whichever process holds the subscription delivers them -- at once when
        it is live (it is notified), else when it next starts -- and removes
        each once acked.

        Args:
            subscription_name: The subscription's name.
            stream_uuid: Its stream (``$all`` by default).
            event_numbers: Only these (positions in the subscribed stream);
                None for all.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.

        Returns:
            How many were queued.

        Raises:
            TypeError: An argument of the wrong type.
            ValueError: An empty name, an event number below 1.
        """
        call = self._change_parked_call("replay", subscription_name, stream_uuid, event_numbers)
        return self._call(conn, call)

    def discard_parked(
        self,
        subscription_name: str,
        stream_uuid: str = ALL_STREAM,
        event_numbers: list[int] | None = None,
        *,
        conn: ConnLike | None = None,
    ) -> int:
        """Remove parked events (all, or those numbered) without delivering them.

        Args:
            subscription_name: The subscription's name.
            stream_uuid: Its stream (``$all`` by default).
            event_numbers: Only these; None for all.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.

        Returns:
            How many were removed.

        Raises:
            TypeError: An argument of the wrong type.
            ValueError: An empty name, an event number below 1.
        """
        call = self._change_parked_call("discard", subscription_name, stream_uuid, event_numbers)
        return self._call(conn, call)
