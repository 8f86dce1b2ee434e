"""AsyncEventStore: the storage API of EventStore as coroutines, on an AsyncEngine.

Each call is built by :class:`~.._operations.Operations` exactly as the sync
store builds it (arguments, errors, statements), then awaited on the call's
connection by :class:`~.connection.AsyncRunner`. Subscriptions are the sync
API's, driven through the store's event loop (see :mod:`.subscribing`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .. import _validation as check
from .._counters import StoreCounters
from .._operations import STORE_TIMEOUT, Call, Operations, ReadPlan, Timeout
from .._options import StoreOptions, connect_args
from .._types import (
    ALL_STREAM,
    ANY_VERSION,
    Page,
    ParkedEvent,
    RecordedEvent,
    SnapshotData,
    StreamInfo,
)
from ..serializers import Serializer
from ..storage.schema import create_schema
from ..storage.sql import Statements
from .connection import AsyncConnector, AsyncConnLike, AsyncRunner
from .reads import AsyncEvents
from .sequencer import AsyncSequencer
from .subscribing import AsyncSubscriptions

__all__ = ["AsyncEventStore", "AsyncEvents"]

T = TypeVar("T")

_ASYNC_DRIVERS = ("postgresql+psycopg", "postgresql+asyncpg")


def _async_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 serves asyncio too
    if parsed.drivername not in _ASYNC_DRIVERS:
        raise ValueError(
            "url_or_engine must be a postgresql+psycopg:// or postgresql+asyncpg:// URL, "
            f"got driver {parsed.drivername!r}"
        )
    return parsed


class AsyncEventStore(AsyncSubscriptions, Operations):
    """An event store on one PostgreSQL schema, for asyncio (see EventStore).

    ``url_or_engine`` is a ``postgresql+psycopg://`` or ``postgresql+asyncpg://``
    URL (plain ``postgresql://`` means psycopg 3), or an ``AsyncEngine`` whose
    pool the store shares and does not dispose of. The options are
    EventStore's, with the same meaning (``global_order="sequencer"``: appends
    are numbered into ``$all`` after their commit, see :mod:`.sequencer`;
    ``listen``, ``transaction_pooling`` and ``poll_interval``: polling mode).
    ``conn=`` takes an ``AsyncSession`` or ``AsyncConnection`` in the caller's
    transaction, joined, never committed.
    """

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine,
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
        if global_order not in ("lock", "sequencer"):
            raise ValueError(f"global_order must be 'lock' or 'sequencer', got {global_order!r}")
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
        if isinstance(url_or_engine, AsyncEngine):
            engine, owns = url_or_engine, False
        elif isinstance(url_or_engine, (str, URL)):
            url = _async_url(url_or_engine)
            args = connect_args(url, name, pooler=pooled)
            engine = create_async_engine(url, connect_args=args, pool_timeout=self.timeout)
            owns = True
        else:
            raise TypeError(
                "url_or_engine must be a database URL or a SQLAlchemy AsyncEngine, "
                f"got {type(url_or_engine).__name__}"
            )
        try:
            runner = AsyncRunner(engine.dialect.paramstyle)
        except ValueError:
            if owns:
                engine.sync_engine.dispose()
            raise
        self._engine, self._owns_engine = engine, owns
        self.schema = options.schema
        self.serializer = options.serializer
        self.column_data_type = options.column_data_type
        self.enable_hard_deletes = enable_hard_deletes
        self.session_mode_url = None if session_mode_url is None else make_url(session_mode_url)
        self.subscription_retry_interval = options.subscription_retry_interval
        self.poll_interval = options.poll_interval
        self.transaction_pooling = options.transaction_pooling
        self.listen = options.listen
        self.name = name
        self.foreign_keys = foreign_keys
        self.global_order = global_order
        # No psycopg2 here: the drivers prepare statements by themselves.
        self._sql = Statements(
            self.schema, self.column_data_type, prepare=False, global_order=global_order
        )
        self._runner = runner
        # global_order="sequencer": numbers committed appends into $all.
        self._sequencer = (
            AsyncSequencer(engine, self._sql, runner) if global_order == "sequencer" else None
        )
        self._connector = AsyncConnector(
            engine,
            "local" if pooled else ("session" if owns else "restore"),
            runner,
        )
        self._counters = StoreCounters()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The async engine the store runs its operations on."""
        return self._engine

    @property
    def owns_engine(self) -> bool:
        """True when the store made its engine from a URL (and disposes of it)."""
        return self._owns_engine

    async def init(self) -> bool:
        """Create the schema and its tables if missing (as EventStore.init); True if created."""
        async with self._engine.begin() as conn:
            created: bool = await conn.run_sync(
                create_schema, self.schema, self.column_data_type, foreign_keys=self.foreign_keys
            )
            return created

    async def close(self) -> None:
        """Stop the subscriptions (checkpoints written, every thread and task the
        store started ended); dispose of the engine if the store made it (a
        shared one is left alone)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._close_subscriptions()
        finally:
            if self._sequencer is not None:
                await self._sequencer.close()
            if self._owns_engine:
                await self._engine.dispose()

    async def __aenter__(self) -> AsyncEventStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (
            f"<AsyncEventStore {self.name or ''} schema={self.schema!r} "
            f"url={self._engine.url.render_as_string(hide_password=True)!r}>"
        )

    async def _call(self, conn: AsyncConnLike | None, call: Call[T]) -> T:
        if self._closed and self._owns_engine:
            call.op.close()
            raise RuntimeError("the event store is closed")
        async with self._connector.connect(conn, transaction=call.tx, timeout=call.seconds) as c:
            return await self._runner.run(c, call.op)

    # -- global order (sequencer mode) ----------------------------------------

    async def advance_all_stream(self) -> int:
        """Number committed appends still waiting into ``$all`` (as EventStore's).

        Returns the new head of ``$all``, or a negative number when nothing
        waited (always in lock mode). Reads of ``$all`` call it first.
        """
        if self._sequencer is None:
            return -1
        return await self._sequencer.advance()

    # -- writing -------------------------------------------------------------

    async def append_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events: Any,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Append events to a stream, all or none (as EventStore.append_to_stream)."""
        await self._call(conn, self._append_call(stream_uuid, expected_version, events, timeout))
        # Plain increments, no lock: see _counters.
        counters = self._counters
        counters.appends += 1
        counters.events_appended += len(events)
        if self._sequencer is not None:
            # global_order="sequencer": number it into $all once committed.
            await self._sequencer.appended(conn)

    async def link_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events_or_event_ids: Any,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Link stored events into a stream (as EventStore.link_to_stream)."""
        call = self._link_call(stream_uuid, expected_version, events_or_event_ids, timeout)
        await self._call(conn, call)

    async def delete_stream(
        self,
        stream_uuid: str,
        expected_version: Any = ANY_VERSION,
        *,
        hard: bool = False,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Soft or hard delete a stream (as EventStore.delete_stream)."""
        await self._call(conn, self._delete_call(stream_uuid, expected_version, hard, timeout))

    # -- reading -------------------------------------------------------------

    async def _read(
        self,
        stream_uuid: str,
        start_version: int,
        count: int,
        forward: bool,
        conn: AsyncConnLike | None,
        timeout: Timeout,
    ) -> list[RecordedEvent]:
        plan = self._read_plan(stream_uuid, start_version, forward=forward, timeout=timeout)
        return await self._read_page(conn, plan, start_version, check.check_count(count))

    async def _read_page(
        self, conn: AsyncConnLike | None, plan: ReadPlan, start: int, count: int
    ) -> list[RecordedEvent]:
        """One page of a read; of ``$all``, after numbering what waits (sequencer mode)."""
        if plan.stream_uuid == ALL_STREAM:
            await self.advance_all_stream()
        return await self._call(conn, self._read_call(plan, start, count))

    def _lazy(
        self,
        stream_uuid: str,
        start_version: int,
        read_batch_size: int,
        forward: bool,
        conn: AsyncConnLike | None,
        timeout: Timeout,
    ) -> AsyncEvents:
        plan = self._read_plan(stream_uuid, start_version, forward=forward, timeout=timeout)
        size = check.check_int(read_batch_size, "read_batch_size", minimum=1)
        return AsyncEvents(self, conn, plan, size)

    async def read_stream_forward(
        self,
        stream_uuid: str,
        start_version: int = 0,
        count: int = 1000,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of a stream from ``start_version`` on."""
        return await self._read(stream_uuid, start_version, count, True, conn, timeout)

    async def read_stream_backward(
        self,
        stream_uuid: str,
        start_version: int = -1,
        count: int = 1000,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of a stream, newest first (-1: from the end)."""
        return await self._read(stream_uuid, start_version, count, False, conn, timeout)

    async def read_all_streams_forward(
        self,
        start_version: int = 0,
        count: int = 1000,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of ``$all`` from global position ``start_version`` on."""
        return await self._read(ALL_STREAM, start_version, count, True, conn, timeout)

    async def read_all_streams_backward(
        self,
        start_version: int = -1,
        count: int = 1000,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of ``$all``, newest first (-1: from the end)."""
        return await self._read(ALL_STREAM, start_version, count, False, conn, timeout)

    def stream_forward(
        self,
        stream_uuid: str,
        start_version: int = 0,
        *,
        read_batch_size: int = 1000,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> AsyncEvents:
        """Lazily iterate a stream's events (``async for``), one batch at a time."""
        return self._lazy(stream_uuid, start_version, read_batch_size, True, conn, timeout)

    def stream_backward(
        self,
        stream_uuid: str,
        start_version: int = -1,
        *,
        read_batch_size: int = 1000,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> AsyncEvents:
        """Lazily iterate a stream's events newest first."""
        return self._lazy(stream_uuid, start_version, read_batch_size, False, conn, timeout)

    def stream_all_forward(
        self,
        start_version: int = 0,
        *,
        read_batch_size: int = 1000,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> AsyncEvents:
        """Lazily iterate ``$all`` in global order."""
        return self._lazy(ALL_STREAM, start_version, read_batch_size, True, conn, timeout)

    def stream_all_backward(
        self,
        start_version: int = -1,
        *,
        read_batch_size: int = 1000,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> AsyncEvents:
        """Lazily iterate ``$all`` newest first."""
        return self._lazy(ALL_STREAM, start_version, read_batch_size, False, conn, timeout)

    async def stream_info(
        self,
        stream_uuid: str,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> StreamInfo:
        """A stream's id, version, timestamps and status (as EventStore.stream_info)."""
        call = self._stream_info_call(stream_uuid, timeout)
        if stream_uuid == ALL_STREAM:
            await self.advance_all_stream()
        return await self._call(conn, call)

    async def paginate_streams(
        self,
        *,
        page_size: int = 50,
        page_number: int = 1,
        search: str | None = None,
        sort_by: str = "stream_id",
        sort_dir: str = "asc",
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> Page[StreamInfo]:
        """One page of all streams (as EventStore.paginate_streams)."""
        call = self._paginate_call(page_size, page_number, search, sort_by, sort_dir, timeout)
        await self.advance_all_stream()  # the $all row's version counts every committed event
        return await self._call(conn, call)

    # -- snapshots -------------------------------------------------------------

    async def record_snapshot(
        self,
        snapshot: SnapshotData,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Record a snapshot, replacing any older one of the same source."""
        await self._call(conn, self._record_snapshot_call(snapshot, timeout))

    async def read_snapshot(
        self,
        source_uuid: str,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> SnapshotData:
        """The latest snapshot of ``source_uuid`` (SnapshotNotFoundError when none)."""
        return await self._call(conn, self._read_snapshot_call(source_uuid, timeout))

    async def delete_snapshot(
        self,
        source_uuid: str,
        *,
        conn: AsyncConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Delete the snapshot of ``source_uuid``; no error when there is none."""
        await self._call(conn, self._delete_snapshot_call(source_uuid, timeout))

    # -- parked events -------------------------------------------------------------

    async def parked_events(
        self,
        subscription_name: str,
        stream_uuid: str = ALL_STREAM,
        *,
        conn: AsyncConnLike | None = None,
    ) -> list[ParkedEvent]:
        """The subscription's parked events, in event order ([] for an unknown one)."""
        return await self._call(conn, self._parked_events_call(subscription_name, stream_uuid))

    async def replay_parked(
        self,
        subscription_name: str,
        stream_uuid: str = ALL_STREAM,
        event_numbers: list[int] | None = None,
        *,
        conn: AsyncConnLike | None = None,
    ) -> int:
        """Queue parked events (all, or those numbered) for redelivery; how many."""
        call = self._change_parked_call("replay", subscription_name, stream_uuid, event_numbers)
        return await self._call(conn, call)

    async def discard_parked(
        self,
        subscription_name: str,
        stream_uuid: str = ALL_STREAM,
        event_numbers: list[int] | None = None,
        *,
        conn: AsyncConnLike | None = None,
    ) -> int:
        """Remove parked events (all, or those numbered) undelivered; how many."""
        call = self._change_parked_call("discard", subscription_name, stream_uuid, event_numbers)
        return await self._call(conn, call)
