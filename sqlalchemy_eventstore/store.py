"""The EventStore facade: validate arguments, resolve ``conn=``, delegate to storage."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL, make_url

from . import _validation as check
from ._types import (
    ALL_STREAM,
    ANY_VERSION,
    ORIGIN,
    STREAM_EXISTS,
    Page,
    ParkedEvent,
    RecordedEvent,
    SnapshotData,
    StreamInfo,
)
from .errors import (
    CannotAppendToAllStreamError,
    CannotDeleteAllStreamError,
    HardDeletesNotEnabledError,
    StreamDeletedError,
    StreamNotFoundError,
)
from .serializers import JsonbSerializer, JsonSerializer, Serializer
from .storage import appender, parked, reader, snapshots, streams
from .storage.connection import ConnLike, connection
from .storage.schema import create_schema
from .storage.sequencer import Sequencer
from .storage.sql import SORT_COLUMNS, Statements
from .storage.subscriptions import delete_subscription as delete_subscription_row
from .subscriptions.handle import Subscription
from .subscriptions.options import FROM_CURRENT, persistent_options
from .subscriptions.runner import Runner

__all__ = ["EventStore"]

T = TypeVar("T")

#: The values of the ``global_order`` option.
GLOBAL_ORDERS = ("lock", "sequencer")

_instances: weakref.WeakSet[EventStore] = weakref.WeakSet()
_instances_lock = threading.Lock()


def _engine_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        # psycopg2 is the default driver; "postgres://" is the libpq/Heroku spelling.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


class EventStore:
    """An event store on one PostgreSQL schema.

    ``url_or_engine`` is a database URL, or an existing ``Engine`` whose pool
    the store then shares (and does not dispose of on :meth:`close`). Every
    operation takes ``conn=``: a ``Session`` or ``Connection`` in the caller's
    transaction, which the operation joins without committing.

    ``session_mode_url`` marks ``url`` as a transaction-mode pooler
    (PgBouncer): LISTEN and the advisory locks then connect there instead, and
    an engine the store makes for a psycopg 3 URL turns off psycopg's
    server-side prepared statements. An Engine passed in through such a pooler
    needs ``connect_args={"prepare_threshold": None}`` on psycopg 3.

    ``global_order`` is ``"lock"`` (the reference's way: an append holds the
    ``$all`` row's lock until its transaction ends) or ``"sequencer"`` (an
    append locks only its stream; its events are numbered into ``$all`` after
    its commit). See docs/global-order.md.
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
        global_order: str = "lock",
    ) -> None:
        if column_data_type not in ("bytea", "jsonb"):
            raise ValueError(
                f"column_data_type must be 'bytea' or 'jsonb', got {column_data_type!r}"
            )
        chosen: Serializer
        if serializer is not None:
            chosen = serializer
        elif column_data_type == "jsonb":
            chosen = JsonbSerializer()
        else:
            chosen = JsonSerializer()
        for member in ("serialize", "deserialize"):
            if not callable(getattr(chosen, member, None)):
                raise TypeError(f"serializer must have a {member}() method")
        serializer_type = getattr(chosen, "column_data_type", column_data_type)
        if serializer_type != column_data_type:
            raise ValueError(
                f"serializer {type(chosen).__name__} writes {serializer_type!r} but "
                f"column_data_type is {column_data_type!r}; use a matching serializer"
            )
        if not isinstance(schema, str) or not schema:
            raise ValueError("schema must be a non-empty str")
        if isinstance(subscription_retry_interval, bool) or not isinstance(
            subscription_retry_interval, (int, float)
        ):
            raise TypeError("subscription_retry_interval must be a number of seconds")
        if subscription_retry_interval <= 0:
            raise ValueError("subscription_retry_interval must be > 0")
        if name is not None and not isinstance(name, str):
            raise TypeError("name must be a str or None")
        if global_order not in GLOBAL_ORDERS:
            raise ValueError(f"global_order must be 'lock' or 'sequencer', got {global_order!r}")

        if isinstance(url_or_engine, Engine):
            self._engine = url_or_engine
            self._owns_engine = False
        elif isinstance(url_or_engine, (str, URL)):
            url = _engine_url(url_or_engine)
            # Named in pg_stat_activity unless the URL names it already.
            connect_args: dict[str, Any] = (
                {}
                if "application_name" in url.query
                else {"application_name": name or "sqlalchemy_eventstore"}
            )
            if (
                session_mode_url is not None
                and url.drivername == "postgresql+psycopg"
                and "prepare_threshold" not in url.query
            ):
                # A session_mode_url means ``url`` is a transaction-mode pooler
                # (PgBouncer): psycopg 3's automatic server-side prepared
                # statements would meet server connections that never saw them.
                connect_args["prepare_threshold"] = None
            self._engine = create_engine(url, connect_args=connect_args)
            self._owns_engine = True
        else:
            raise TypeError(
                "url_or_engine must be a database URL or a SQLAlchemy Engine, "
                f"got {type(url_or_engine).__name__}"
            )
        self.schema = schema
        self.serializer = chosen
        self.column_data_type = column_data_type
        self.enable_hard_deletes = enable_hard_deletes
        self.session_mode_url = None if session_mode_url is None else _engine_url(session_mode_url)
        self.subscription_retry_interval = float(subscription_retry_interval)
        self.name = name
        self.global_order = global_order
        self._sql = Statements(schema, column_data_type, global_order)
        # global_order="sequencer": numbers committed appends into $all.
        self._sequencer = Sequencer(self._engine, schema) if global_order == "sequencer" else None
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

        Idempotent, and safe when several processes run it at once. Returns
        True when it created the event store, False when it already existed.
        """
        with self._engine.begin() as conn:
            return create_schema(conn, self.schema, self.column_data_type)

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

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<EventStore {self.name or ''} schema={self.schema!r} "
            f"url={self._engine.url.render_as_string(hide_password=True)!r}>"
        )

    def _run(
        self, conn: ConnLike | None, work: Callable[[Connection], T], *, tx: bool = False
    ) -> T:
        with connection(self._engine, conn, transaction=tx) as c:
            return work(c)

    def advance_all_stream(self) -> int:
        """Number committed appends still waiting into ``$all`` (sequencer mode).

        Reads of ``$all`` call this first, so they see every event committed
        before they started. Returns the new head of ``$all``, or -1 when
        nothing waited (and always in lock mode, where nothing waits). Runs on
        the store's own connection, never in a caller's transaction.
        """
        if self._sequencer is None:
            return -1
        return self._sequencer.advance()

    def _read_for_subscriptions(
        self, stream_uuid: str, start_version: int, count: int
    ) -> list[RecordedEvent]:
        """A forward page for the subscription runner. Unlike the public reads
        it does not wait for the sequencer (a lock-mode writer may hold ``$all``
        for as long as its transaction lasts): the runner asks for numbering
        on the sequencer's worker instead (:meth:`_sequence_soon`), and the
        ``$all`` notification of each numbered batch brings it back here."""
        return self._run(
            None,
            lambda c: reader.read_events(
                c, self._sql, self.serializer, stream_uuid, start_version, count, forward=True
            ),
        )

    def _sequence_soon(self) -> None:
        """Number waiting appends on the sequencer's worker thread (sequencer mode)."""
        if self._sequencer is not None:
            self._sequencer.help_soon()

    # -- writing -----------------------------------------------------------

    def append_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events: Any,
        *,
        conn: ConnLike | None = None,
    ) -> None:
        """Append events atomically, checking the stream's expected version."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(expected_version)
        prepared = check.prepare_events(events, self.serializer)
        if stream_uuid == ALL_STREAM:
            raise CannotAppendToAllStreamError("cannot append to the $all stream")
        self._run(conn, lambda c: appender.append(c, self._sql, stream_uuid, expected, prepared))
        if self._sequencer is not None:
            self._sequencer.appended(conn)

    def link_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events_or_event_ids: Any,
        *,
        conn: ConnLike | None = None,
    ) -> None:
        """Link already stored events (RecordedEvents or event ids) into a stream."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(expected_version)
        event_ids = check.event_ids_to_link(events_or_event_ids)
        if stream_uuid == ALL_STREAM:
            raise CannotAppendToAllStreamError("cannot link events to the $all stream")
        self._run(conn, lambda c: appender.link(c, self._sql, stream_uuid, expected, event_ids))

    def delete_stream(
        self,
        stream_uuid: str,
        expected_version: Any = ANY_VERSION,
        *,
        hard: bool = False,
        conn: ConnLike | None = None,
    ) -> None:
        """Soft delete a stream, or hard delete it with its events."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(
            expected_version, allowed=(ANY_VERSION, STREAM_EXISTS)
        )
        if not isinstance(hard, bool):
            raise TypeError("hard must be a bool")
        if stream_uuid == ALL_STREAM:
            raise CannotDeleteAllStreamError("cannot delete the $all stream")
        if hard and not self.enable_hard_deletes:
            raise HardDeletesNotEnabledError(
                "hard deletes are disabled: create the store with enable_hard_deletes=True"
            )
        self._run(
            conn,
            lambda c: streams.delete_stream(c, self._sql, stream_uuid, expected, hard=hard),
            tx=hard,
        )

    # -- reading -----------------------------------------------------------

    def _read(
        self,
        stream_uuid: str,
        start_version: int,
        count: int,
        forward: bool,
        conn: ConnLike | None,
    ) -> list[RecordedEvent]:
        if stream_uuid == ALL_STREAM:
            self.advance_all_stream()
        return self._run(
            conn,
            lambda c: reader.read_events(
                c, self._sql, self.serializer, stream_uuid, start_version, count, forward=forward
            ),
        )

    def read_stream_forward(
        self,
        stream_uuid: str,
        start_version: int = 0,
        count: int = 1000,
        *,
        conn: ConnLike | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of a stream from ``start_version`` on."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        check.check_int(start_version, "start_version", minimum=0)
        check.check_count(count)
        return self._read(stream_uuid, start_version, count, True, conn)

    def read_stream_backward(
        self,
        stream_uuid: str,
        start_version: int = -1,
        count: int = 1000,
        *,
        conn: ConnLike | None = None,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of a stream, newest first, from ``start_version``
        down (-1: from the end)."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        check.check_int(start_version, "start_version", minimum=-1)
        check.check_count(count)
        return self._read(stream_uuid, start_version, count, False, conn)

    def read_all_streams_forward(
        self, start_version: int = 0, count: int = 1000, *, conn: ConnLike | None = None
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of ``$all`` from global position ``start_version`` on."""
        return self.read_stream_forward(ALL_STREAM, start_version, count, conn=conn)

    def read_all_streams_backward(
        self, start_version: int = -1, count: int = 1000, *, conn: ConnLike | None = None
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of ``$all``, newest first."""
        return self.read_stream_backward(ALL_STREAM, start_version, count, conn=conn)

    def _iterate(
        self,
        stream_uuid: str,
        start_version: int,
        read_batch_size: int,
        forward: bool,
        conn: ConnLike | None,
    ) -> Iterator[RecordedEvent]:
        # The first batch is read now, so a missing or deleted stream raises at
        # the call, not at the first next(); later batches are read on demand.
        batch = self._read(stream_uuid, start_version, read_batch_size, forward, conn)

        def batches() -> Iterator[RecordedEvent]:
            current = batch
            while current:
                yield from current
                if len(current) < read_batch_size:
                    return
                following = current[-1].event_number + (1 if forward else -1)
                if following < 1:
                    return
                current = self._read(stream_uuid, following, read_batch_size, forward, conn)

        return batches()

    def stream_forward(
        self,
        stream_uuid: str,
        start_version: int = 0,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate a stream's events; memory stays bounded by ``read_batch_size``."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        check.check_int(start_version, "start_version", minimum=0)
        check.check_int(read_batch_size, "read_batch_size", minimum=1)
        return self._iterate(stream_uuid, start_version, read_batch_size, True, conn)

    def stream_backward(
        self,
        stream_uuid: str,
        start_version: int = -1,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate a stream's events newest first."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        check.check_int(start_version, "start_version", minimum=-1)
        check.check_int(read_batch_size, "read_batch_size", minimum=1)
        return self._iterate(stream_uuid, start_version, read_batch_size, False, conn)

    def stream_all_forward(
        self,
        start_version: int = 0,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate ``$all`` in global order."""
        return self.stream_forward(
            ALL_STREAM, start_version, read_batch_size=read_batch_size, conn=conn
        )

    def stream_all_backward(
        self,
        start_version: int = -1,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate ``$all`` newest first."""
        return self.stream_backward(
            ALL_STREAM, start_version, read_batch_size=read_batch_size, conn=conn
        )

    def stream_info(self, stream_uuid: str, *, conn: ConnLike | None = None) -> StreamInfo:
        """A stream's id, version, timestamps and status (``$all`` included)."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        if stream_uuid == ALL_STREAM:
            self.advance_all_stream()
        return self._run(conn, lambda c: reader.stream_info(c, self._sql, stream_uuid))

    def paginate_streams(
        self,
        *,
        page_size: int = 50,
        page_number: int = 1,
        search: str | None = None,
        sort_by: str = "stream_id",
        sort_dir: str = "asc",
        conn: ConnLike | None = None,
    ) -> Page[StreamInfo]:
        """One page of all streams (``$all`` and soft-deleted ones included)."""
        check.check_int(page_size, "page_size", minimum=1)
        check.check_int(page_number, "page_number", minimum=1)
        if search is not None and not isinstance(search, str):
            raise TypeError(f"search must be a str or None, got {type(search).__name__}")
        if sort_by not in SORT_COLUMNS:
            raise ValueError(f"sort_by must be one of {', '.join(SORT_COLUMNS)}, got {sort_by!r}")
        if not isinstance(sort_dir, str) or sort_dir.lower() not in ("asc", "desc"):
            raise ValueError(f"sort_dir must be 'asc' or 'desc', got {sort_dir!r}")
        return self._run(
            conn,
            lambda c: reader.paginate_streams(
                c,
                self._sql,
                page_size=page_size,
                page_number=page_number,
                search=search or None,
                sort_by=sort_by,
                sort_dir=sort_dir,
            ),
        )

    # -- snapshots -----------------------------------------------------------

    def record_snapshot(self, snapshot: SnapshotData, *, conn: ConnLike | None = None) -> None:
        """Record a snapshot, replacing any older one of the same source."""
        if not isinstance(snapshot, SnapshotData):
            raise TypeError(f"snapshot must be a SnapshotData, got {type(snapshot).__name__}")
        check.check_stream_uuid(snapshot.source_uuid, "snapshot.source_uuid")
        check.check_int(snapshot.source_version, "snapshot.source_version", minimum=0)
        check.check_stream_uuid(snapshot.source_type, "snapshot.source_type")
        data, metadata = check.serialize_snapshot(snapshot, self.serializer)
        self._run(conn, lambda c: snapshots.record_snapshot(c, self._sql, snapshot, data, metadata))

    def read_snapshot(self, source_uuid: str, *, conn: ConnLike | None = None) -> SnapshotData:
        """The latest snapshot of ``source_uuid`` (SnapshotNotFoundError if none)."""
        source_uuid = check.check_stream_uuid(source_uuid, "source_uuid")
        return self._run(
            conn, lambda c: snapshots.read_snapshot(c, self._sql, self.serializer, source_uuid)
        )

    def delete_snapshot(self, source_uuid: str, *, conn: ConnLike | None = None) -> None:
        """Delete the snapshot of ``source_uuid``; no error when there is none."""
        source_uuid = check.check_stream_uuid(source_uuid, "source_uuid")
        self._run(conn, lambda c: snapshots.delete_snapshot(c, self._sql, source_uuid))

    # -- subscriptions -----------------------------------------------------------

    def _get_runner(self) -> Runner:
        with self._runner_lock:
            if self._closed:
                raise RuntimeError("the event store is closed")
            if self._runner is None:
                self._runner = Runner(self)
            return self._runner

    def subscribe(
        self,
        stream_uuid: str,
        *,
        handler: Callable[[list[Any]], Any] | None = None,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
    ) -> Subscription:
        """A transient subscription to a stream or ``$all``: every event committed
        after this returns is delivered; nothing is acknowledged or persisted."""
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
    ) -> Subscription:
        """A persistent subscription: at-least-once delivery from the last
        acknowledged event, one instance across all processes."""
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
        )
        if options.start_from == FROM_CURRENT:
            try:
                current = self.stream_info(stream_uuid).stream_version
            except (StreamNotFoundError, StreamDeletedError):
                current = 0
            options = replace(options, start_from=current)
        return self._get_runner().subscribe_persistent(stream_uuid, name, handler, options)

    def subscribe_to_all_streams(self, subscription_name: str, **options: Any) -> Subscription:
        """A persistent subscription to ``$all`` (options as :meth:`subscribe_to_stream`)."""
        return self.subscribe_to_stream(ALL_STREAM, subscription_name, **options)

    def unsubscribe_from_stream(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription's subscribers in this process; the checkpoint is kept."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        with self._runner_lock:
            runner = self._runner
        if runner is not None:
            runner.unsubscribe_all((stream_uuid, name))

    def unsubscribe_from_all_streams(self, subscription_name: str) -> None:
        self.unsubscribe_from_stream(ALL_STREAM, subscription_name)

    def delete_subscription(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop any live subscriber here and delete the subscription's checkpoint."""
        self.unsubscribe_from_stream(stream_uuid, subscription_name)
        with self._engine.begin() as conn:
            delete_subscription_row(conn, self.schema, stream_uuid, subscription_name)

    def delete_all_streams_subscription(self, subscription_name: str) -> None:
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
        """The subscription's parked events, in event order ([] for an unknown one)."""
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        stream_uuid = check.check_stream_uuid(stream_uuid)
        return self._run(
            conn,
            lambda c: parked.list_parked(
                c, self.schema, self.column_data_type, self.serializer, stream_uuid, name
            ),
        )

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
        each once acked. Returns how many were queued.
        """
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        stream_uuid = check.check_stream_uuid(stream_uuid)
        numbers = check.check_event_numbers(event_numbers)
        return self._run(
            conn,
            lambda c: parked.request_replay(c, self.schema, stream_uuid, name, numbers),
            tx=True,
        )

    def discard_parked(
        self,
        subscription_name: str,
        stream_uuid: str = ALL_STREAM,
        event_numbers: list[int] | None = None,
        *,
        conn: ConnLike | None = None,
    ) -> int:
        """Remove parked events (all, or those numbered) without delivering them;
        how many were removed."""
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        stream_uuid = check.check_stream_uuid(stream_uuid)
        numbers = check.check_event_numbers(event_numbers)
        return self._run(
            conn,
            lambda c: parked.discard(c, self.schema, stream_uuid, name, numbers),
            tx=True,
        )
