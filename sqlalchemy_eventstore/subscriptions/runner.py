"""The scheduler: one thread per store driving every subscription of the process.

Subscription state is guarded by one mutex. The scheduler thread holds it
while it works, and lets go of it for storage reads; acks take it on the
acking thread itself (a handler's worker, a mailbox consumer), record the ack
and send the next events at once -- so an ack never waits behind a storage
read, and a handler with ``buffer_size=1`` gets its next event without a
thread round trip. The listener and the public API post to the inbox. A
pass takes every pending call first, then the coalesced notifications, then
serves each subscription on its own -- one failing subscription never holds
up another -- and finally sleeps until something arrives or its next timer
is due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from .._types import ALL_STREAM, RecordedEvent
from ..errors import AlreadySubscribedError, SubscriptionAlreadyExistsError, TooManySubscribersError
from ..notifications.publisher import Publisher
from .handle import Handler, Subscription
from .inbox import Inbox, Taken
from .locking import LockSupervision, session_needed
from .options import PersistentOptions
from .persistent import Persistent
from .polling import Polling
from .reading import Backend, current_version, read_page
from .serving import CHECKPOINT_INTERVAL
from .state import backoff, describe

__all__ = ["Runner"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
T = TypeVar("T")
Key = tuple[str, str]

# How often the advisory-lock session is checked (a round trip that also
# finds deleted subscriptions) while persistent subscriptions run: the
# longest a process keeps delivering after its lock session died.
LOCK_CHECK_INTERVAL = 0.5
# How long a mailbox's consumer thread must have been gone, holding unacked
# events, before another subscriber takes them over.
DEAD_CONSUMER_GRACE = 3.0
# The longest the scheduler sleeps with nothing to do.
MAX_SLEEP = 1.0

# How often a runner with $all subscribers numbers waiting appends itself
# (global_order="sequencer"): the longest the events of a writer that died
# between its commit and its numbering wait for a live subscriber.
SEQUENCE_INTERVAL = 0.5


#: Makes a subscriber's handle; takes Subscription's arguments.
HandleFactory = Callable[..., Subscription]


class Runner(LockSupervision, Polling):
    """Drives the subscriptions of one store (started on the first subscribe).

    ``handle_factory`` makes each subscriber's handle: the async API's
    subclass of :class:`Subscription` wakes its event loop at each delivery.
    """

    def __init__(self, backend: Backend, handle_factory: HandleFactory = Subscription) -> None:
        self._backend = backend
        self._new_handle = handle_factory
        self._inbox = Inbox()
        self._persistent: dict[Key, Persistent] = {}
        self._publisher = Publisher(
            lambda s, start, count: read_page(backend, s, start, count),
            lambda s: current_version(backend, s),
            self,
        )
        self._listener = backend.io.listener(
            backend.schema,
            on_notification=self._inbox.notify,
            on_reconnect=self._inbox.reconnected,
            on_parked=self._inbox.parked,
            name=f"eventstore-listener-{backend.schema}",
            polling_reason=backend.polling_reason,
        )
        self._locks = backend.io.locks(backend.schema, f"eventstore-locks-{backend.schema}")
        self._stopping = False
        # Reads ahead the next page of catching-up subscriptions (serving._read).
        self._reader = ThreadPoolExecutor(
            1, thread_name_prefix=f"eventstore-reader-{backend.schema}"
        )
        self._mutex = threading.RLock()
        # A wake-up is on its way to the scheduler (acks need a read or a
        # checkpoint write): further acks need not send another.
        self._kicked = False
        self._next_lock_check = 0.0
        # id(handle) -> when its mailbox consumer was first seen gone.
        self._dead_since: dict[int, float] = {}
        self._logged_pass_error: str | None = None
        self._next_sequence = 0.0
        self._heads: dict[str, int] = {}  # for stats (metrics)
        self._init_polling()
        self._thread = threading.Thread(
            target=self._run, name=f"eventstore-runner-{backend.schema}", daemon=True
        )
        self._listener.start()
        self._thread.start()

    # -- plumbing ------------------------------------------------------------------

    def call(self, work: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``work`` on the runner thread and return its result (or raise)."""
        if threading.current_thread() is self._thread:
            return work()
        if self._mutex._is_owned():
            raise RuntimeError("subscription calls cannot be made from inside a selector/mapper")
        if not self._thread.is_alive():
            raise RuntimeError("the event store's subscriptions are stopped (store closed)")
        future: Future[T] = Future()
        self._inbox.call(work, future)
        deadline = time.monotonic() + timeout
        while not future.done():
            # Should the runner stop before taking this work, the caller
            # learns it within a fraction of a second, not after the timeout.
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
            timeout = max(0.0, min(MAX_SLEEP, self._next_wake() - time.monotonic()))
            taken = self._inbox.take(timeout)
            with self._mutex:
                self._kicked = False
                for work, future in taken.calls:
                    self._execute(work, future)
                if self._stopping:
                    for work, future in self._inbox.drain_calls():
                        self._execute(work, future)
                    return
                try:
                    self._pass(taken)
                    self._logged_pass_error = None
                except Exception as error:
                    if describe(error) != self._logged_pass_error:
                        logger.exception("subscription runner pass failed")
                    self._logged_pass_error = describe(error)

    @staticmethod
    def _execute(work: Callable[[], Any], future: Future[Any] | None) -> None:
        if future is not None and not future.set_running_or_notify_cancel():
            return
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

    # -- public operations (called from any thread) ---------------------------------

    def wait_listening(self, timeout: float) -> bool:
        return self._listener.wait_listening(timeout)

    def store_stats(self) -> tuple[int, int, float | None, str | None]:
        """Notifications, listener reconnects, notification lag, mode (stats)."""
        listener = self._listener
        notifications = listener.notifications + self.polled_notifications
        return notifications, listener.reconnects, self._publisher.lag, listener.mode

    def subscribe_transient(
        self,
        stream_uuid: str,
        handler: Handler | None,
        selector: Callable[[RecordedEvent], Any] | None,
        mapper: Callable[[RecordedEvent], Any] | None,
    ) -> Subscription:
        if not self._listener.wait_listening(30):
            raise TimeoutError("the notification listener could not connect")
        handle = self._new_handle(
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
        # Known at once where the session URL is a transaction-mode pooler (the
        # listener's first connection finds out): advisory locks cannot hold.
        self._listener.wait_first_attempt(30)
        if self._listener.session_pooled:
            raise session_needed(self._backend.session_label)
        handle = self._new_handle(
            self,
            key,
            stream_uuid=stream_uuid,
            subscription_name=name,
            handler=handler,
            transient=options.transient,
            max_retries=options.max_retries,
        )

        def register() -> Subscription:
            sub = self._persistent.get(key)
            if sub is None:
                sub = Persistent(stream_uuid, name, options)
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
                handle._begin(sub.epoch)
                sub.status = ""  # shown to the newcomer at the next report
                self._dispatch(sub, time.monotonic())
            return handle

        try:
            return self.call(register)
        except BaseException:
            handle._stop()
            raise

    def ack(
        self, key: Key, handle: Subscription, epoch: int, event_number: int, *, wait: bool = True
    ) -> None:
        """Record an ack, on the calling thread, and send what it makes room for.

        An ack from an ended lifetime (the lock was lost since the batch was
        sent) is ignored: its events are redelivered. With ``wait`` (a
        caller's ack) a due checkpoint is written before returning -- unless
        the subscription is catching up and one was written less than
        ``CHECKPOINT_INTERVAL`` ago: then, as for a handler's acks, the
        scheduler writes it when the interval is over, with every ack since
        (one write per interval during a catch-up, not one per event).
        """
        if not self._thread.is_alive():
            if wait:
                raise RuntimeError("the event store's subscriptions are stopped (store closed)")
            return  # a handler's last ack at close: the checkpoint was written then
        with self._mutex:
            sub = self._persistent.get(key)
            if sub is None or sub.state is None or handle not in sub.handles:
                return  # not subscribed (any more): its events went back to the queue
            if epoch != sub.epoch:
                return  # stale: never matched against the new lifetime
            state = sub.state
            state.ack(id(handle), event_number)
            now = sub.last_ack_at = time.monotonic()
            wants_read = state.wants_read(now)
            if wants_read and len(state.queue) < state.room(id(handle)):
                self._kick()  # read first, then send a full batch
            else:
                self._dispatch(sub, now)
            if not state.checkpoint_due():
                if wants_read:
                    self._kick()
                return
            if wait and (not state.behind or now >= sub.next_checkpoint_write):
                try:
                    self._write_checkpoint(sub)
                    sub.next_checkpoint_write = now + CHECKPOINT_INTERVAL
                except Exception as error:
                    self._log_once(sub, "could not write a checkpoint; will retry", error)
                return
            if wants_read or now >= sub.next_checkpoint_write:
                self._kick()  # else the scheduler's timer writes it

    def park(
        self, key: Key, handle: Subscription, epoch: int, number: int, reason: str
    ) -> list[int]:
        """A handler gave up on an in-flight event: park it (written next pass).

        Returns the later in-flight events of its partition key, parked behind
        it: the handler must skip them."""

        with self._mutex:
            sub = self._persistent.get(key)
            if sub is None or sub.state is None or handle not in sub.handles:
                return []
            if epoch != sub.epoch:
                return []
            behind = sub.state.park_in_flight(id(handle), number, reason)
            self._dispatch(sub, time.monotonic())
            self._kick()
            return behind

    def subscriber_died(self, key: Key, handle: Subscription) -> None:
        """A handler's worker thread died: remove the subscriber as if it left."""
        self._inbox.call(lambda: self._remove(key, handle))

    def _remove(self, key: Key, handle: Subscription) -> None:
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
                    self._dispatch(sub, time.monotonic())
        handle._stop()

    def unsubscribe(self, key: Key, handle: Subscription) -> None:
        if not self._thread.is_alive():
            handle._stop()
            return  # the store is closed: nothing runs any more
        # A handler busy with a batch finishes it and acks it first, so a batch
        # handled before unsubscribe() is never lost; then the subscriber goes.
        handle._stop()
        handle._join(5)
        self.call(lambda: self._remove(key, handle))

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
                self._inbox.reconnected()  # wake it
        self._thread.join(timeout)
        self._reader.shutdown(wait=False, cancel_futures=True)
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

    def _next_wake(self) -> float:
        now = time.monotonic()
        wake = now + MAX_SLEEP
        if any(s.state is not None for s in self._persistent.values()):
            wake = min(wake, self._next_lock_check)
        retry = self._publisher.next_retry
        if retry is not None:
            wake = min(wake, retry)
        wake = self._poll_wake(wake)
        for sub in self._persistent.values():
            state = sub.state
            if state is None:
                wake = min(wake, sub.next_attempt)
                continue
            if sub.io_failures:
                wake = min(wake, sub.io_retry_at)
                continue
            if state.failure is not None:
                wake = min(wake, state.failure.retry_at)
            if state.wants_read(now) or state.to_park or state.replays_acked or sub.parked_dirty:
                return now
            if state.checkpoint_due():
                wake = min(wake, sub.next_checkpoint_write)
            after = sub.options.checkpoint_after
            if after is not None and state.checkpoint_pending:
                wake = min(wake, sub.last_ack_at + after)
        return wake

    def _pass(self, taken: Taken) -> None:
        # Replay and discard requests first: an event committed after a
        # discard must find its partition key free.
        for sub in self._persistent.values():
            if sub.state is not None and (taken.reconnected or sub.subscription_id in taken.parked):
                sub.parked_dirty = True  # after a reconnect, requests may have been missed
                try:
                    self._load_parked(sub)
                except Exception as error:
                    self._log_once(sub, "could not load parked events; will retry", error)
        if taken.reconnected:
            self._publisher.on_reconnect()
        for notification in taken.notifications:
            self._publisher.on_notification(notification)
        self._note_heads(taken.notifications)
        self._publisher.retry_failed()
        now = time.monotonic()
        self._poll_if_due(now)
        if now >= self._next_sequence and self._backend.sequence_soon is not None:
            self._next_sequence = now + SEQUENCE_INTERVAL
            self._sequence_for_all_subscribers()
        if now >= self._next_lock_check and any(
            s.state is not None for s in self._persistent.values()
        ):
            self._next_lock_check = now + LOCK_CHECK_INTERVAL
            self._check_locks()
        self._remove_dead_consumers()
        for sub in list(self._persistent.values()):
            if sub.io_failures and time.monotonic() < sub.io_retry_at:
                continue
            try:
                self._serve(sub, time.monotonic())
            except Exception as error:
                # Storage trouble of this subscription: retried with backoff,
                # logged once per change; the others carry on.
                sub.io_failures += 1
                sub.io_retry_at = time.monotonic() + backoff(sub.io_failures)
                self._log_once(sub, f"subscription {sub.name!r} failed; retrying", error)
            else:
                if sub.io_failures:
                    sub.io_failures = 0
                    sub.logged = None

    def _serve(self, sub: Persistent, now: float) -> None:
        state = sub.state
        if state is None:
            if now >= sub.next_attempt:
                self._try_start(sub, now)
            return
        if sub.parked_dirty:
            self._load_parked(sub)
        self._pump(sub, now)
        if sub.state is not state:
            return  # deleted meanwhile
        after = sub.options.checkpoint_after
        if after is not None and state.checkpoint_pending and now - sub.last_ack_at >= after:
            self._write_checkpoint(sub)

    def _remove_dead_consumers(self) -> None:
        """A mailbox whose consumer thread ended while holding unacked events
        leaves as if it unsubscribed, once that has lasted DEAD_CONSUMER_GRACE
        seconds and another subscriber can take over: those events go, first,
        to the other subscribers, each partition in order.

        The grace keeps a batch received on one thread and acked from another
        soon after (a worker handing results back) from being taken away; a
        sole subscriber is never removed (nobody would take its events, and its
        owner may still ack or receive from another thread).
        """
        now = time.monotonic()
        for key, sub in list(self._persistent.items()):
            state = sub.state
            if state is None or len(sub.handles) < 2:
                continue
            for handle in list(sub.handles):
                holding = handle.handler is None and (
                    state.room(id(handle)) < sub.buffer_sizes[id(handle)]
                )
                if not (holding and handle._consumer_died):
                    self._dead_since.pop(id(handle), None)
                    continue
                since = self._dead_since.setdefault(id(handle), now)
                if now - since < DEAD_CONSUMER_GRACE:
                    continue
                self._dead_since.pop(id(handle), None)
                logger.warning(
                    "subscription %r: a mailbox's consumer thread ended with events "
                    "unacknowledged; they go to the other subscribers",
                    sub.name,
                )
                self._remove(key, handle)

    def _sequence_for_all_subscribers(self) -> None:
        """Number waiting appends when anyone here follows ``$all`` (sequencer
        mode), on the store's sequencer thread: the ``$all`` notification of
        the batch then publishes them, and this thread never waits for a
        lock-mode writer holding ``$all``."""
        follows_all = any(
            s.stream_uuid == ALL_STREAM and s.state is not None for s in self._persistent.values()
        ) or ALL_STREAM in {t.stream_uuid for t in self._publisher.transients()}
        if follows_all and self._backend.sequence_soon is not None:
            self._backend.sequence_soon()
