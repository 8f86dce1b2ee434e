"""The subscription half of :class:`~.store.AsyncEventStore` (a base of it).

Subscriptions run on the sync API's runner -- its scheduler thread, state
machine, failure policy, parking, advisory locks and takeover, unchanged --
whose I/O goes through :class:`~.bridge.LoopIO` onto the event loop that made
the store's first subscription, with the async driver's own LISTEN. So a
sync and an async store on one schema deliver the same events and exclude
each other through the same advisory locks.

Every call here that may wait on the runner (subscribe, ack, unsubscribe,
close) runs on one of the store's threads (``eventstore-async-*``) while the
loop goes on serving the runner's I/O: the loop never waits for the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from .. import _validation as check
from .._counters import StoreCounters
from .._operations import Call
from .._options import connect_args
from .._types import ALL_STREAM, ORIGIN, RecordedEvent, StreamInfo
from ..errors import StreamDeletedError, StreamNotFoundError
from ..serializers import Serializer
from ..stats import StoreStats
from ..storage.sql import Statements
from ..storage.subscriptions import delete_subscription_op
from ..subscriptions.handle import Subscription
from ..subscriptions.locking import session_needed
from ..subscriptions.options import FROM_CURRENT, persistent_options
from ..subscriptions.reading import Backend
from ..subscriptions.runner import Runner
from .bridge import LoopIO
from .connection import AsyncConnLike, AsyncRunner
from .sequencer import AsyncSequencer
from .subscription import AsyncSubscription, LoopHandle

__all__ = ["AsyncSubscriptions"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
T = TypeVar("T")

# Threads of a store for the calls that wait on the runner (acks mostly):
# bounded, but enough that many subscribers acking at once do not queue.
_OFFLOAD_THREADS = 32


class AsyncSubscriptions:
    """Subscriptions for :class:`~.store.AsyncEventStore` (set up on the first one)."""

    # The store's; see AsyncEventStore.
    _engine: AsyncEngine
    _owns_engine: bool
    _runner: AsyncRunner
    _sql: Statements
    _closed: bool
    schema: str
    serializer: Serializer
    session_mode_url: URL | None
    subscription_retry_interval: float
    name: str | None
    timeout: float | None
    poll_interval: float
    transaction_pooling: bool
    listen: bool
    _sequencer: AsyncSequencer | None
    _counters: StoreCounters

    # Made on the first subscription.
    _subscriptions: Runner | None = None
    _subscriptions_loop: asyncio.AbstractEventLoop | None = None
    _offload_pool: ThreadPoolExecutor | None = None
    _session_engine: AsyncEngine | None = None
    # The runner's latest request to number waiting appends (sequencer mode).
    _sequencing: asyncio.Task[None] | None = None

    if TYPE_CHECKING:  # AsyncEventStore's

        async def _call(self, conn: AsyncConnLike | None, call: Call[T]) -> T: ...

        async def stream_info(self, stream_uuid: str) -> StreamInfo: ...

    # -- plumbing ------------------------------------------------------------------

    def _subscription_runner(self) -> Runner:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("the event store is closed")
        if self._subscriptions is None:
            session = self._make_session_engine()
            io = LoopIO(loop, self._engine, self._runner, session)
            session_url = self.session_mode_url or self._engine.url
            backend = Backend(
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
            self._session_engine = session
            self._subscriptions_loop = loop
            self._offload_pool = ThreadPoolExecutor(
                _OFFLOAD_THREADS, thread_name_prefix=f"eventstore-async-{self.schema}"
            )
            self._subscriptions = Runner(backend, handle_factory=partial(LoopHandle, loop=loop))
        elif self._subscriptions_loop is not loop:
            raise RuntimeError(
                "the async event store's subscriptions run on the event loop of its first "
                "subscription; subscribe from that loop"
            )
        return self._subscriptions

    def _polling_reason(self) -> str | None:
        """Why subscriptions poll from the start (None: they LISTEN), as EventStore."""
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

    def _sequence_soon(self) -> None:
        """Number waiting appends into ``$all`` (sequencer mode), from the
        runner's thread: a task on the store's loop, one at a time, so the
        runner never waits for it (see Runner._sequence_for_all_subscribers)."""
        loop = self._subscriptions_loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._start_sequencing)

    def _start_sequencing(self) -> None:
        sequencer = self._sequencer
        running = self._sequencing
        if sequencer is None or self._closed or (running is not None and not running.done()):
            return
        self._sequencing = sequencer._spawn(sequencer.help_quietly())

    async def stats(self) -> StoreStats:
        """This process's figures of the store now (as EventStore.stats): appends,
        events appended, notifications, listener reconnects, notification lag,
        notification mode and each persistent subscription's figures.

        No database round trip; a coroutine only because the subscriptions'
        figures are read on a store thread (the event loop never waits for
        the scheduler's lock).
        """
        runner = self._subscriptions
        counters = self._counters
        notifications, reconnects, lag, mode = 0, 0, None, None
        subscriptions: tuple[Any, ...] = ()
        if runner is not None:
            notifications, reconnects, lag, mode = runner.store_stats()
            subscriptions = await self._offload(runner.subscription_stats)
        return StoreStats(
            appends=counters.appends,
            events_appended=counters.events_appended,
            notifications=notifications,
            listener_reconnects=reconnects,
            notification_lag=lag,
            notification_mode=mode,
            subscriptions=subscriptions,
        )

    def _make_session_engine(self) -> AsyncEngine:
        """A NullPool engine for LISTEN and the advisory locks (see ``bridge``)."""
        options: dict[str, Any] = {"poolclass": NullPool, "isolation_level": "AUTOCOMMIT"}
        if self.session_mode_url is not None:
            url = make_url(self.session_mode_url)
            if url.drivername in ("postgres", "postgresql"):
                url = url.set(drivername=self._engine.url.drivername)
            return create_async_engine(
                url, connect_args=connect_args(url, self.name, pooler=False), **options
            )
        if self._owns_engine:
            url = self._engine.url
            return create_async_engine(
                url, connect_args=connect_args(url, self.name, pooler=False), **options
            )
        # The caller's engine makes the connections, with its connect_args
        # (SSL options, say); each is detached from its pool at once.
        engine = self._engine

        async def creator() -> Any:
            pooled = await engine.raw_connection()
            driver = pooled.driver_connection  # read first: detached, it has no record
            pooled.detach()  # the caller's pool forgets it: the session engine owns it
            return driver

        return create_async_engine(engine.url, async_creator=creator, **options)

    async def _offload(self, work: Callable[[], T]) -> T:
        """Run ``work`` (which may wait on the runner) on one of the store's threads."""
        pool = self._offload_pool
        if pool is None:
            return work()  # nothing subscribed yet: nothing to wait on
        return await asyncio.get_running_loop().run_in_executor(pool, work)

    async def _subscribe(self, make: Callable[[], Subscription]) -> AsyncSubscription:
        """Run ``make`` on a store thread; should the caller be cancelled
        meanwhile, the subscriber it makes is unsubscribed (nobody holds it)."""
        pool = self._offload_pool
        assert pool is not None
        future = asyncio.get_running_loop().run_in_executor(pool, make)
        try:
            handle = await asyncio.shield(future)
        except asyncio.CancelledError:

            def undo(done: asyncio.Future[Subscription]) -> None:
                if done.cancelled() or done.exception() is not None:
                    return
                with contextlib.suppress(RuntimeError):  # closed: its subscribers stopped
                    pool.submit(done.result().unsubscribe)

            future.add_done_callback(undo)
            raise
        assert isinstance(handle, LoopHandle)  # the runner's handle_factory
        return AsyncSubscription(handle, self._offload)

    async def _close_subscriptions(self) -> None:
        """Persist checkpoints and stop the runner, its threads and connections."""
        runner, self._subscriptions = self._subscriptions, None
        pool, self._offload_pool = self._offload_pool, None
        session, self._session_engine = self._session_engine, None
        if runner is None or pool is None:
            return
        loop = asyncio.get_running_loop()
        try:
            # On a thread: the runner's last checkpoint writes need this loop.
            await asyncio.shield(loop.run_in_executor(pool, runner.stop))
        finally:
            await asyncio.shield(loop.run_in_executor(None, pool.shutdown))
            if session is not None:
                await session.dispose()

    # -- subscribing -----------------------------------------------------------------

    async def subscribe(
        self,
        stream_uuid: str,
        *,
        handler: Callable[[list[Any]], Any] | None = None,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
    ) -> AsyncSubscription:
        """A transient subscription to a stream or ``$all`` (as EventStore.subscribe):
        every event committed after this returns is delivered; nothing is acked or kept.

        ``handler`` may be an async function (awaited on this loop) or a plain
        one (called on a worker thread); without one, ``await sub.receive()``.
        """
        stream_uuid = check.check_stream_uuid(stream_uuid)
        for name, value in (("handler", handler), ("selector", selector), ("mapper", mapper)):
            check.check_callable(value, name)
        runner = self._subscription_runner()
        return await self._subscribe(
            lambda: runner.subscribe_transient(stream_uuid, handler, selector, mapper)
        )

    async def subscribe_to_stream(
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
    ) -> AsyncSubscription:
        """A persistent subscription (as EventStore.subscribe_to_stream, same options
        and errors): at-least-once delivery from the last acknowledged event, one
        instance across all processes, sync and async stores alike.

        ``handler`` may be an async function (awaited on this loop) or a plain
        one (called on a worker thread); the failure policy (``max_retries``,
        parking) applies to both. Without one, ``await sub.receive()`` and
        ``await sub.ack(events)``.
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
        runner = self._subscription_runner()
        if options.start_from == FROM_CURRENT:
            try:
                current = (await self.stream_info(stream_uuid)).stream_version
            except (StreamNotFoundError, StreamDeletedError):
                current = 0
            options = replace(options, start_from=current)
        return await self._subscribe(
            lambda: runner.subscribe_persistent(stream_uuid, name, handler, options)
        )

    async def subscribe_to_all_streams(
        self, subscription_name: str, **options: Any
    ) -> AsyncSubscription:
        """A persistent subscription to ``$all`` (options as :meth:`subscribe_to_stream`)."""
        return await self.subscribe_to_stream(ALL_STREAM, subscription_name, **options)

    async def unsubscribe_from_stream(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop the subscription's subscribers of this store; the checkpoint is kept."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        runner = self._subscriptions
        if runner is not None:
            await self._offload(partial(runner.unsubscribe_all, (stream_uuid, name)))

    async def unsubscribe_from_all_streams(self, subscription_name: str) -> None:
        """:meth:`unsubscribe_from_stream` of a subscription to ``$all``."""
        await self.unsubscribe_from_stream(ALL_STREAM, subscription_name)

    async def delete_subscription(self, stream_uuid: str, subscription_name: str) -> None:
        """Stop any subscriber here and delete the subscription's checkpoint (and
        its parked events); no error when it does not exist. A process elsewhere
        running it stops its subscribers within a lock check."""
        await self.unsubscribe_from_stream(stream_uuid, subscription_name)
        op = delete_subscription_op(self.schema, stream_uuid, subscription_name)
        await self._call(None, Call(op, self.timeout, tx=True))

    async def delete_all_streams_subscription(self, subscription_name: str) -> None:
        """:meth:`delete_subscription` of a subscription to ``$all``."""
        await self.delete_subscription(ALL_STREAM, subscription_name)
