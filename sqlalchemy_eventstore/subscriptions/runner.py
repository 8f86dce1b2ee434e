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
from concurrent.futures import Future, wait
from typing import Any, TypeVar

from .._types import RecordedEvent
from ..errors import AlreadySubscribedError, SubscriptionAlreadyExistsError, TooManySubscribersError
from ..notifications.listener import Listener
from ..notifications.publisher import Publisher
from ..storage.locks import AdvisoryLocks
from . import persistent as io
from .handle import Handler, Subscription
from .inbox import Inbox, Taken
from .options import PersistentOptions
from .persistent import Persistent
from .reading import Backend, Unreadable, current_version, read_events, read_page
from .state import DISCONNECTED, UNSUBSCRIBED, SubscriptionState, backoff, describe

__all__ = ["Runner"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
T = TypeVar("T")
Key = tuple[str, str]

# How often the advisory-lock session is checked (a round trip that also
# finds deleted subscriptions) while persistent subscriptions run: the
# longest a process keeps delivering after its lock session died.
LOCK_CHECK_INTERVAL = 0.5
# Routine checkpoint writes of one subscription are at most this far apart:
# a checkpoint due at every ack (threshold 1) is written once per interval
# with every ack since, rather than once per event. Unsubscribe and close
# write at once, whatever the interval.
CHECKPOINT_INTERVAL = 0.05
# The longest the scheduler sleeps with nothing to do.
MAX_SLEEP = 1.0


class Runner:
    """Drives the subscriptions of one store (started on the first subscribe)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._inbox = Inbox()
        self._persistent: dict[Key, Persistent] = {}
        self._publisher = Publisher(
            lambda s, start, count: read_page(backend, s, start, count),
            lambda s: current_version(backend, s),
            self,
        )
        self._listener = Listener(
            backend.session_url,
            backend.schema,
            on_notification=self._inbox.notify,
            on_reconnect=self._inbox.reconnected,
            on_parked=self._inbox.parked,
            name=f"eventstore-listener-{backend.schema}",
            creator=backend.session_creator,
        )
        self._locks = AdvisoryLocks(
            backend.session_url,
            backend.schema,
            application_name=f"eventstore-locks-{backend.schema}",
            creator=backend.session_creator,
        )
        self._stopping = False
        self._mutex = threading.RLock()
        # A wake-up is on its way to the scheduler (acks need a read or a
        # checkpoint write): further acks need not send another.
        self._kicked = False
        self._next_lock_check = 0.0
        self._logged_pass_error: str | None = None
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
        if self._mutex._is_owned():  # type: ignore[attr-defined]
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
        caller's ack) a due checkpoint is written before returning; a
        handler's ack leaves it to the scheduler's coalesced write.
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
            if state.wants_read(now) and len(state.queue) < state.room(id(handle)):
                self._kick()  # read first, then send a full batch
            else:
                self._dispatch(sub, now)
            due = state.checkpoint_due()
            if wait and due:
                try:
                    self._write_checkpoint(sub)
                except Exception as error:
                    self._log_once(sub, "could not write a checkpoint; will retry", error)
                return
            if (due and now >= sub.next_checkpoint_write) or state.wants_read(now):
                self._kick()

    def _kick(self) -> None:
        """Wake the scheduler (once per pass) for a read or a checkpoint write."""
        if not self._kicked:
            self._kicked = True
            self._inbox.wake()

    def park(self, key: Key, handle: Subscription, epoch: int, number: int, reason: str) -> None:
        """A handler gave up on an in-flight event: park it (written next pass)."""

        with self._mutex:
            sub = self._persistent.get(key)
            if sub is None or sub.state is None or handle not in sub.handles:
                return
            if epoch != sub.epoch:
                return
            sub.state.park_in_flight(id(handle), number, reason)
            self._dispatch(sub, time.monotonic())
            self._kick()

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

    def _release(self, sub: Persistent) -> None:
        """Write parks and the checkpoint (whatever the threshold), give up the lock."""
        try:
            state = sub.state
            if state is not None:
                self._write_parks(sub)
                if state.checkpoint_pending:
                    self._write_checkpoint(sub, durable=True)
        finally:
            if sub.subscription_id is not None:
                self._locks.unlock(sub.subscription_id)
            sub.state = None

    def _next_wake(self) -> float:
        now = time.monotonic()
        wake = now + MAX_SLEEP
        if any(s.state is not None for s in self._persistent.values()):
            wake = min(wake, self._next_lock_check)
        retry = self._publisher.next_retry
        if retry is not None:
            wake = min(wake, retry)
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
        self._publisher.retry_failed()
        now = time.monotonic()
        if now >= self._next_lock_check and any(
            s.state is not None for s in self._persistent.values()
        ):
            self._next_lock_check = now + LOCK_CHECK_INTERVAL
            self._check_locks()
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

    def _log_once(self, sub: Persistent, message: str, error: BaseException) -> None:
        summary = describe(error)
        if summary != sub.logged:
            logger.warning("%s: %s", message, summary, exc_info=error)
            sub.logged = summary

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

    def _check_locks(self) -> None:
        """A replaced or lost lock session means every lock taken on it is
        gone: stop delivering until each subscription holds its lock again.
        A subscription whose row was deleted (in any process) is stopped."""
        running = [s for s in self._persistent.values() if s.state is not None]
        ids = [s.subscription_id for s in running if s.subscription_id and not s.transient]
        result = self._locks.check([i for i in ids if i is not None])
        for sub in running:
            if result is None or result[0] != sub.lock_generation:
                logger.warning("subscription %r lost its lock; stopping delivery", sub.name)
                self._drop_state(sub)
            elif not sub.transient and sub.subscription_id not in result[1]:
                self._deleted(sub)

    def _drop_state(self, sub: Persistent) -> None:
        """Lost the lock: forget in-memory progress (storage has the checkpoint)
        and withdraw what was queued to the subscribers."""
        sub.state = None
        sub.next_attempt = time.monotonic()
        self._set_status(sub, DISCONNECTED)
        for handle in sub.handles:
            handle._withdraw()

    def _deleted(self, sub: Persistent) -> None:
        """The subscription was deleted: its subscribers here stop."""
        logger.warning("subscription %r was deleted; stopping its subscribers", sub.name)
        if sub.subscription_id is not None:
            self._locks.unlock(sub.subscription_id)
        sub.state = None
        self._persistent.pop((sub.stream_uuid, sub.name), None)
        for handle in sub.handles:
            handle._stop()

    def _try_start(self, sub: Persistent, now: float) -> None:
        if not self._listener.listening:
            # Start once LISTEN is active, so that the catch-up read covers every
            # commit the listener will not notify (it has just been started, or
            # it is reconnecting).
            sub.next_attempt = now + 0.05
            return
        blocked: dict[str, int] = {}
        replays: list[int] = []
        try:
            if sub.transient:
                sub.subscription_id = sub.transient_lock_id()
                last_seen = sub.options.start_from
            else:
                row = io.read_row(self._backend, sub)
                sub.subscription_id = row.subscription_id
            generation = self._locks.try_lock(sub.subscription_id)
            if generation is not None and not sub.transient:
                # Read the checkpoint again now that the lock is ours: the
                # previous holder may have acked and released since the read.
                row = io.read_row(self._backend, sub)
                if row.subscription_id != sub.subscription_id:
                    # Deleted and created anew meanwhile: lock the new row at once.
                    self._locks.unlock(sub.subscription_id)
                    sub.subscription_id = row.subscription_id
                    sub.next_attempt = now
                    return
                last_seen = row.last_seen
                blocked, replays = io.load_parked(self._backend, sub)
        except Exception as error:
            # A failed attempt (not a lock held elsewhere) is retried soon,
            # with backoff, not after a whole retry interval.
            sub.start_failures += 1
            sub.next_attempt = now + min(self._backend.retry_interval, backoff(sub.start_failures))
            self._set_status(sub, DISCONNECTED)
            self._log_once(sub, f"could not start subscription {sub.name!r}", error)
            return
        sub.start_failures = 0
        if generation is None:
            sub.next_attempt = now + self._backend.retry_interval
            self._set_status(sub, DISCONNECTED)
            return
        sub.logged = None
        opts = sub.options
        sub.lock_generation = generation
        sub.epoch += 1
        state = sub.state = SubscriptionState(
            last_seen=last_seen,
            buffer_size=opts.buffer_size,
            max_size=opts.max_size,
            checkpoint_threshold=opts.checkpoint_threshold,
            selector=opts.selector,
            mapper=opts.mapper,
            partition_by=opts.partition_by,
            max_retries=opts.max_retries,
        )
        state.blocked = blocked
        if replays:
            state.replay(read_events(self._backend, sub.stream_uuid, replays))
        sub.last_ack_at = time.monotonic()
        for handle in sub.handles:
            state.add_subscriber(id(handle), sub.buffer_sizes.get(id(handle)))
            handle._begin(sub.epoch)
        sub.status = ""  # reported by the first dispatch
        self._pump(sub, now)

    def _load_parked(self, sub: Persistent) -> None:
        """Replay or discard requests: reload held-back keys and queue replays."""
        state = sub.state
        assert state is not None
        blocked, replays = io.load_parked(self._backend, sub)
        sub.parked_dirty = False
        state.blocked = blocked
        in_flight = {e.event_number for slot in state.subscribers for e in slot.in_flight}
        wanted = [n for n in replays if n not in state.replays and n not in in_flight]
        if wanted:
            state.replay(read_events(self._backend, sub.stream_uuid, wanted))

    def _pump(self, sub: Persistent, now: float) -> None:
        """Read from storage while behind, dispatch, park, unpark, checkpoint."""
        state = sub.state
        if state is None:
            return
        wanted = state.wants_read(now)
        if wanted:
            start = state.last_received + 1
            # Read without the mutex: acks go on meanwhile.
            self._mutex.release()
            try:
                events = read_page(self._backend, sub.stream_uuid, start, wanted)
            finally:
                self._mutex.acquire()
            if sub.state is not state or state.last_received + 1 != start:
                return  # dropped, or moved on meanwhile: this page is stale
            state.receive_read(events, wanted, now)
        self._dispatch(sub, now)
        self._write_parks(sub)
        if state.replays_acked:
            io.unpark(self._backend, sub, state.replays_acked)
            state.replays_acked = []
            sub.parked_dirty = True  # a key may be free again
        if state.checkpoint_due() and now >= sub.next_checkpoint_write:
            self._write_checkpoint(sub)
            sub.next_checkpoint_write = now + CHECKPOINT_INTERVAL

    def _dispatch(self, sub: Persistent, now: float) -> None:
        state = sub.state
        if state is None:
            return
        batches = state.dispatch(now)
        if batches:
            handles = {id(h): h for h in sub.handles}
            for batch in batches:
                handle = handles[batch.slot.key]  # type: ignore[index]
                handle._deliver(batch.values, [e.event_number for e in batch.events], sub.epoch)
        if state.failure is not None or state.recovered or state.status != sub.status:
            self._report(sub)

    def _write_parks(self, sub: Persistent) -> None:
        state = sub.state
        if state is None or not state.to_park:
            return
        requests = list(state.to_park)
        io.park(self._backend, sub, requests)
        state.parked([r.event.event_number for r in requests])

    def _report(self, sub: Persistent) -> None:
        """Publish the state's failure (or recovery) and status to the subscribers."""
        state = sub.state
        if state is None:
            return
        failure = state.failure
        if failure is not None:
            for handle in sub.handles:
                handle._last_error = failure.error
            what = "cannot read" if failure.stage == "receive" else "user code failed on"
            self._log_once(
                sub,
                f"subscription {sub.name!r} {what} event {failure.number}; retrying",
                failure.error,
            )
        elif state.recovered:
            state.recovered = False
            sub.logged = None
            for handle in sub.handles:
                if not handle._handler_failing:
                    handle._last_error = None
        self._set_status(sub, state.status)

    @staticmethod
    def _set_status(sub: Persistent, status: str) -> None:
        sub.status = status
        for handle in sub.handles:
            if handle._status != UNSUBSCRIBED:
                handle._status = status

    def _write_checkpoint(self, sub: Persistent, *, durable: bool = False) -> None:
        """Persist the checkpoint: asynchronously committed for routine writes
        (see ``store_checkpoint``), durably when ``durable``."""
        state = sub.state
        if state is None:
            return
        position = state.checkpoint
        if not sub.transient and not io.write_checkpoint(
            self._backend, sub, position, durable=durable
        ):
            self._deleted(sub)
            return
        state.persisted_at(position)

    # -- the publisher's view of persistent subscriptions (LiveTargets) -----------------

    def live_streams(self) -> set[str]:
        return {s.stream_uuid for s in self._persistent.values()}

    def interested(self, stream_uuid: str) -> bool:
        """Whether a subscription takes live events of the stream now: one that
        is catching up reads storage anyway, so notifications coalesce."""
        return any(
            s.stream_uuid == stream_uuid and s.state is not None and not s.state.behind
            for s in self._persistent.values()
        )

    def published(self, stream_uuid: str, events: list[RecordedEvent | Unreadable]) -> None:
        now = time.monotonic()
        for sub in list(self._persistent.values()):
            if sub.stream_uuid == stream_uuid and sub.state is not None:
                sub.state.receive_published(events, now)
                self._dispatch(sub, now)

    def behind(self, stream_uuid: str | None) -> None:
        for sub in self._persistent.values():
            if sub.state is not None and stream_uuid in (None, sub.stream_uuid):
                sub.state.behind = True
