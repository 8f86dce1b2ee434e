"""The scheduler: one thread per store driving every subscription of the process.

It owns all subscription state, so nothing here needs a lock but the inbox:
the listener, the subscribers' acks and the public API all post commands to
it and (where they need an answer) wait for it. Each pass it catches
subscriptions up from storage, dispatches queued events, writes due
checkpoints and retries subscriptions that do not hold their advisory lock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Hashable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine

from .._types import ALL_STREAM, RecordedEvent
from ..errors import (
    AlreadySubscribedError,
    StreamDeletedError,
    StreamNotFoundError,
    SubscriptionAlreadyExistsError,
    TooManySubscribersError,
)
from ..notifications.listener import Listener
from ..notifications.publisher import Publisher
from ..storage import subscriptions as rows
from ..storage.connection import connection
from ..storage.locks import AdvisoryLocks
from .handle import Handler, Subscription
from .options import PersistentOptions
from .state import DISCONNECTED, UNSUBSCRIBED, SubscriptionState

if TYPE_CHECKING:
    from ..store import EventStore

__all__ = ["Runner"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
T = TypeVar("T")
Key = tuple[str, str]

# How often the advisory-lock session is checked (a round trip) while
# persistent subscriptions run: the longest a process keeps delivering after
# its lock session died.
LOCK_CHECK_INTERVAL = 0.5

# How often a runner with $all subscribers numbers waiting appends itself
# (global_order="sequencer"): the longest the events of a writer that died
# between its commit and its numbering wait for a live subscriber.
SEQUENCE_INTERVAL = 0.5


@dataclass(eq=False)
class _Persistent:
    """A named subscription in this process: its options, subscribers and state."""

    stream_uuid: str
    name: str
    options: PersistentOptions
    handles: list[Subscription] = field(default_factory=list)
    # Each subscriber's own buffer_size (its subscribe call's), by id(handle).
    buffer_sizes: dict[int, int] = field(default_factory=dict)
    subscription_id: int | None = None
    state: SubscriptionState | None = None
    lock_generation: int = -1
    next_attempt: float = 0.0
    last_ack_at: float = 0.0


def _detached_connections(engine: Engine) -> Callable[[], Any]:
    """New DBAPI connections made by ``engine`` (its connect_args, creator and
    connect events apply), detached from its pool so they neither count
    against it nor ever return to it."""

    def create() -> Any:
        pooled = engine.raw_connection()
        pooled.detach()  # from now on closing it closes the connection itself
        return pooled.dbapi_connection

    return create


def _transient_lock_id(sub: _Persistent) -> int:
    return -(zlib.crc32(f"{sub.stream_uuid}\x00{sub.name}".encode()) & 0x7FFFFFFF) - 1


class Runner:
    """Drives the subscriptions of one store (started on the first subscribe)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._inbox: queue.Queue[tuple[Callable[[], Any], Future[Any] | None]] = queue.Queue()
        self._persistent: dict[Key, _Persistent] = {}
        self._publisher = Publisher(self._read, self._current_version, self)
        # LISTEN and the advisory locks need sessions of their own: on the
        # session_mode_url when given (PgBouncer), else like the store's
        # engine -- made by that engine itself when it is the caller's, so its
        # connect_args or creator (SSL options, say) apply to them too.
        session_url = store.session_mode_url or store.engine.url
        creator = (
            _detached_connections(store.engine)
            if store.session_mode_url is None and not store.owns_engine
            else None
        )
        self._listener = Listener(
            session_url,
            store.schema,
            on_notification=lambda n: self._post(lambda: self._publisher.on_notification(n)),
            on_reconnect=lambda: self._post(self._publisher.on_reconnect),
            name=f"eventstore-listener-{store.schema}",
            creator=creator,
        )
        self._locks = AdvisoryLocks(
            session_url,
            store.schema,
            application_name=f"eventstore-locks-{store.schema}",
            creator=creator,
        )
        self._stopping = False
        self._next_lock_check = 0.0
        self._next_sequence = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"eventstore-runner-{store.schema}", daemon=True
        )
        self._listener.start()
        self._thread.start()

    # -- plumbing ------------------------------------------------------------------

    def _post(self, work: Callable[[], Any]) -> None:
        self._inbox.put((work, None))

    def call(self, work: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``work`` on the runner thread and return its result (or raise)."""
        if threading.current_thread() is self._thread:
            return work()
        if not self._thread.is_alive():
            raise RuntimeError("the event store's subscriptions are stopped (store closed)")
        future: Future[T] = Future()
        self._inbox.put((work, future))
        # Poll rather than block: should the runner stop before taking this
        # work, the caller learns it now instead of after the whole timeout.
        deadline = time.monotonic() + timeout
        while not future.done():
            wait([future], timeout=0.1)
            if future.done():
                break
            if not self._thread.is_alive() and future.cancel():
                raise RuntimeError("the event store's subscriptions are stopped (store closed)")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the subscription runner did not answer within {timeout} s")
        return future.result()

    def _run(self) -> None:
        while True:
            try:
                work, future = self._inbox.get(timeout=0.05)
            except queue.Empty:
                work, future = None, None
            if work is not None:
                try:
                    result = work()
                except BaseException as error:  # handed back to the caller
                    if future is not None:
                        future.set_exception(error)
                    else:
                        logger.exception("subscription runner task failed")
                else:
                    if future is not None:
                        future.set_result(result)
            if self._stopping:
                return
            try:
                self._tick()
            except Exception:
                logger.exception("subscription runner pass failed")

    # -- public operations (called from any thread) ---------------------------------

    def wait_listening(self, timeout: float) -> bool:
        return self._listener.wait_listening(timeout)

    def subscribe_transient(
        self,
        stream_uuid: str,
        handler: Handler | None,
        selector: Callable[[RecordedEvent], Any] | None,
        mapper: Callable[[RecordedEvent], Any] | None,
    ) -> Subscription:
        if not self._listener.wait_listening(30):
            raise TimeoutError("the notification listener could not connect")
        handle = Subscription(
            self,
            (stream_uuid, ""),
            stream_uuid=stream_uuid,
            subscription_name=None,
            handler=handler,
            transient=True,
        )

        def register() -> Subscription:
            # Start after the current position: the listener is already
            # listening, so every later commit is notified.
            self._publisher.add_transient(stream_uuid, handle, selector, mapper)
            handle._set_subscribed()
            return handle

        return self.call(register)

    def subscribe_persistent(
        self,
        stream_uuid: str,
        name: str,
        handler: Handler | None,
        options: PersistentOptions,
    ) -> Subscription:
        key = (stream_uuid, name)
        handle = Subscription(
            self,
            key,
            stream_uuid=stream_uuid,
            subscription_name=name,
            handler=handler,
            transient=options.transient,
        )

        def register() -> Subscription:
            sub = self._persistent.get(key)
            if sub is None:
                sub = _Persistent(stream_uuid, name, options)
                self._persistent[key] = sub
            else:
                if handler is not None and any(h.handler is handler for h in sub.handles):
                    raise AlreadySubscribedError(f"handler already subscribed to {name!r}")
                if sub.options.concurrency_limit == 1:
                    raise SubscriptionAlreadyExistsError(f"subscription {name!r} already exists")
                if len(sub.handles) >= sub.options.concurrency_limit:
                    raise TooManySubscribersError(
                        f"subscription {name!r} has its {sub.options.concurrency_limit} subscribers"
                    )
            sub.handles.append(handle)
            sub.buffer_sizes[id(handle)] = options.buffer_size
            if sub.state is not None:
                sub.state.add_subscriber(id(handle), options.buffer_size)
                handle._set_subscribed()
            return handle

        try:
            return self.call(register)
        except BaseException:
            handle._stop()
            raise

    def ack(self, key: Key, handle: Subscription, event_number: int) -> None:
        def record() -> None:
            sub = self._persistent.get(key)
            if sub is None or sub.state is None or handle not in sub.handles:
                return  # not subscribed (any more): its events went back to the queue
            if event_number <= sub.state.checkpoint:
                return  # already covered (a redelivery after a restart, say)
            sub.state.ack(id(handle), event_number)
            sub.last_ack_at = time.monotonic()
            self._pump_safely(sub)

        self.call(record)

    def unsubscribe(self, key: Key, handle: Subscription) -> None:
        def remove() -> None:
            if key[1] == "":
                self._publisher.remove_transient(handle)
            else:
                sub = self._persistent.get(key)
                if sub is not None and handle in sub.handles:
                    sub.handles.remove(handle)
                    sub.buffer_sizes.pop(id(handle), None)
                    if sub.state is not None:
                        sub.state.remove_subscriber(id(handle))
                    if not sub.handles:
                        self._release(sub)
                        del self._persistent[key]
                    else:
                        self._pump_safely(sub)
            handle._stop()

        if not self._thread.is_alive():
            handle._stop()
            return  # the store is closed: nothing runs any more
        # A handler busy with a batch finishes it and acks it first, so a batch
        # handled before unsubscribe() is never lost; then the subscriber goes.
        handle._stop()
        handle._join(5)
        self.call(remove)

    def unsubscribe_all(self, key: Key) -> None:
        sub = self.call(lambda: self._persistent.get(key))
        if sub is not None:
            for handle in list(sub.handles):
                self.unsubscribe(key, handle)

    def stop(self, timeout: float = 5.0) -> None:
        """Persist checkpoints, stop every subscriber, the listener and the thread."""

        def shutdown() -> list[Subscription]:
            handles = []
            for sub in list(self._persistent.values()):
                try:
                    self._release(sub)
                except Exception:
                    logger.exception("could not write the checkpoint of %r at close", sub.name)
                handles.extend(sub.handles)
            handles.extend(self._transient_handles())
            self._persistent.clear()
            self._publisher.clear()
            self._stopping = True
            for handle in handles:
                handle._stop()
            return handles

        handles: list[Subscription] = []
        if self._thread.is_alive():
            # Let busy handlers finish (and ack) their batch before the
            # checkpoints are written, as unsubscribe() does.
            deadline = time.monotonic() + timeout
            try:
                workers = self.call(self._handles, timeout)
            except Exception:
                workers = []
            for handle in workers:
                handle._stop()
            for handle in workers:
                handle._join(max(0.0, deadline - time.monotonic()))
            try:
                handles = self.call(shutdown, timeout)
            except Exception:
                logger.exception("subscription runner did not shut down cleanly")
                self._stopping = True
        self._thread.join(timeout)
        self._listener.stop(timeout)
        self._locks.close()
        for handle in handles:
            handle._join(timeout)

    # -- on the runner thread ---------------------------------------------------------

    def _handles(self) -> list[Subscription]:
        handles = [h for sub in self._persistent.values() for h in sub.handles]
        return handles + self._transient_handles()

    def _transient_handles(self) -> list[Subscription]:
        return [h for h in self._publisher.transient_handles() if isinstance(h, Subscription)]

    def _release(self, sub: _Persistent) -> None:
        """Write the checkpoint (whatever the threshold) and give up the lock."""
        try:
            if sub.state is not None and sub.state.checkpoint_pending:
                self._write_checkpoint(sub, durable=True)
        finally:
            if sub.subscription_id is not None:
                self._locks.unlock(sub.subscription_id)
            sub.state = None

    def _tick(self) -> None:
        now = time.monotonic()
        self._publisher.retry_failed()
        if now >= self._next_sequence and self._store.global_order == "sequencer":
            self._next_sequence = now + SEQUENCE_INTERVAL
            self._sequence_for_all_subscribers()
        if self._persistent and now >= self._next_lock_check:
            self._next_lock_check = now + LOCK_CHECK_INTERVAL
            self._check_locks()
        for sub in list(self._persistent.values()):
            if sub.state is None:
                if now >= sub.next_attempt:
                    self._try_start(sub, now)
                continue
            self._pump(sub)
            after = sub.options.checkpoint_after
            if (
                after is not None
                and sub.state.checkpoint_pending
                and now - sub.last_ack_at >= after
            ):
                self._write_checkpoint(sub)

    def _sequence_for_all_subscribers(self) -> None:
        """Number waiting appends when anyone here follows ``$all``: the
        resulting ``$all`` notification then publishes them."""
        if self.interested(ALL_STREAM) or ALL_STREAM in {
            t.stream_uuid for t in self._publisher.transients()
        }:
            self._store._sequence_soon()

    def _check_locks(self) -> None:
        """A lost lock session means every lock is gone: stop delivering until
        each subscription holds its lock again."""
        if self._locks.check():
            return
        for sub in self._persistent.values():
            if sub.state is not None:
                logger.warning("subscription %r lost its lock; stopping delivery", sub.name)
                self._drop_state(sub)

    def _drop_state(self, sub: _Persistent) -> None:
        """Lost the lock: forget in-memory progress; storage has the checkpoint."""
        sub.state = None
        sub.next_attempt = time.monotonic()
        self._set_status(sub, DISCONNECTED)
        for handle in sub.handles:
            handle._subscribed.clear()

    def _try_start(self, sub: _Persistent, now: float) -> None:
        store = self._store
        if not self._listener.listening:
            # Start once LISTEN is active, so that the catch-up read covers every
            # commit the listener will not notify (it has just been started, or
            # it is reconnecting).
            sub.next_attempt = now + 0.05
            return
        try:
            if sub.options.transient:
                # Nothing is persisted, so the lock cannot key on a row id: a
                # negative key from the name keeps processes exclusive without
                # clashing with persistent subscriptions' (positive) ids.
                row = rows.SubscriptionRow(_transient_lock_id(sub), sub.options.start_from)
                sub.subscription_id = row.subscription_id
            else:
                with store.engine.begin() as conn:
                    row = rows.subscribe(
                        conn, store.schema, sub.stream_uuid, sub.name, sub.options.start_from
                    )
                sub.subscription_id = row.subscription_id
            locked = self._locks.try_lock(sub.subscription_id)
            if locked and not sub.options.transient:
                # Read the checkpoint again now that the lock is ours: the
                # previous holder may have acked and released since the read.
                with store.engine.begin() as conn:
                    row = rows.subscribe(
                        conn, store.schema, sub.stream_uuid, sub.name, sub.options.start_from
                    )
                if row.subscription_id != sub.subscription_id:
                    # Deleted and created anew meanwhile: lock the new row next time.
                    self._locks.unlock(sub.subscription_id)
                    sub.subscription_id = row.subscription_id
                    locked = False
        except Exception:
            logger.exception("could not start subscription %r", sub.name)
            locked = False
        if not locked:
            sub.next_attempt = now + store.subscription_retry_interval
            self._set_status(sub, DISCONNECTED)
            return
        opts = sub.options
        sub.state = SubscriptionState(
            last_seen=row.last_seen,
            buffer_size=opts.buffer_size,
            max_size=opts.max_size,
            checkpoint_threshold=opts.checkpoint_threshold,
            selector=opts.selector,
            partition_by=opts.partition_by,
        )
        sub.last_ack_at = time.monotonic()
        for handle in sub.handles:
            sub.state.add_subscriber(id(handle), sub.buffer_sizes.get(id(handle)))
            handle._set_subscribed()
        self._pump(sub)

    def _pump_safely(self, sub: _Persistent) -> None:
        """Pump for a caller whose own work already succeeded (an ack): a storage
        failure here is logged and retried by the next pass, not raised."""
        try:
            self._pump(sub)
        except Exception:
            logger.warning("subscription %r could not pump; will retry", sub.name, exc_info=True)

    def _pump(self, sub: _Persistent) -> None:
        """Read from storage while behind, dispatch, and checkpoint when due."""
        state = sub.state
        if state is None:
            return
        wanted = state.wants_read()
        if wanted:
            events = self._read(sub.stream_uuid, state.last_received + 1, wanted)
            state.receive_read(events, wanted)
        handles: dict[Hashable, Subscription] = {id(h): h for h in sub.handles}
        for slot, batch in state.dispatch():
            handle = handles[slot.key]
            mapper = sub.options.mapper
            values = [mapper(e) for e in batch] if mapper else list(batch)
            handle._deliver(values, [e.event_number for e in batch])
        self._set_status(sub, state.status)
        if state.checkpoint_due():
            self._write_checkpoint(sub)

    @staticmethod
    def _set_status(sub: _Persistent, status: str) -> None:
        for handle in sub.handles:
            if handle._status != UNSUBSCRIBED:
                handle._status = status

    def _write_checkpoint(self, sub: _Persistent, *, durable: bool = False) -> None:
        """Persist the checkpoint: asynchronously committed for routine writes
        (see ``store_checkpoint``), durably when ``durable``."""
        state = sub.state
        if state is None:
            return
        position = state.checkpoint
        if not sub.options.transient:
            with connection(self._store.engine, None, transaction=False) as conn:
                rows.store_checkpoint(
                    conn, self._store.schema, sub.stream_uuid, sub.name, position, durable=durable
                )
        state.persisted_at(position)

    def _read(self, stream_uuid: str, start: int, count: int) -> list[RecordedEvent]:
        try:
            return self._store._read_for_subscriptions(stream_uuid, start, count)
        except (StreamNotFoundError, StreamDeletedError):
            return []

    # -- the publisher's view of persistent subscriptions (LiveTargets) -----------------

    def _current_version(self, stream_uuid: str) -> int:
        try:
            return self._store.stream_info(stream_uuid).stream_version
        except (StreamNotFoundError, StreamDeletedError):
            return 0

    def live_streams(self) -> set[str]:
        return {s.stream_uuid for s in self._persistent.values()}

    def interested(self, stream_uuid: str) -> bool:
        return any(
            s.stream_uuid == stream_uuid and s.state is not None for s in self._persistent.values()
        )

    def published(self, stream_uuid: str, events: list[RecordedEvent]) -> None:
        for sub in self._persistent.values():
            if sub.stream_uuid == stream_uuid and sub.state is not None:
                sub.state.receive_published(events)
                self._pump_safely(sub)

    def behind(self, stream_uuid: str | None) -> None:
        for sub in self._persistent.values():
            if sub.state is not None and stream_uuid in (None, sub.stream_uuid):
                sub.state.behind = True
