"""Lock supervision: starting a subscription under its advisory lock, and
noticing a lost lock session or a deleted subscription.

Every lock belongs to the lock-session generation that took it: a session
that died or was replaced (even between two checks) drops every subscription
whose lock it held.
"""

from __future__ import annotations

import logging
import time

from . import persistent as io
from .metrics import Metrics
from .persistent import Persistent
from .reading import read_events
from .state import DISCONNECTED, SubscriptionState, backoff

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
Key = tuple[str, str]

__all__ = ["LockSupervision", "session_needed"]


def session_needed(url: str) -> RuntimeError:
    """The error of a persistent subscription where advisory locks cannot hold."""
    return RuntimeError(
        "persistent subscriptions need a database session that holds advisory locks, "
        f"and {url} goes through a transaction-mode pooler (PgBouncer), which hands a "
        "session to other clients between transactions: give the store a "
        "session_mode_url that reaches PostgreSQL directly (or through a session-mode "
        "pool). Transient subscriptions (store.subscribe) work without one, by polling"
    )


class LockSupervision(Metrics):
    """Starting subscriptions and watching their locks (a base of ``Runner``)."""

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
        if sub.state is not None:
            sub.retries += sub.state.retries
        sub.state = None
        sub.next_attempt = time.monotonic()
        self._set_status(sub, DISCONNECTED)
        for handle in sub.handles:
            handle._withdraw()

    def _refuse(self, sub: Persistent) -> None:
        """The session URL turned out to be a transaction-mode pooler: a lock
        taken there would not hold, so the subscription never starts."""
        error = session_needed(self._backend.session_label)
        sub.next_attempt = float("inf")
        self._set_status(sub, DISCONNECTED)
        for handle in sub.handles:
            handle._last_error = error
        if sub.logged != "refused":
            logger.error("subscription %r cannot start: %s", sub.name, error)
            sub.logged = "refused"

    def _try_start(self, sub: Persistent, now: float) -> None:
        if self._listener.session_pooled:
            self._refuse(sub)
            return
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
        self._note_start(sub)
        for handle in sub.handles:
            state.add_subscriber(id(handle), sub.buffer_sizes.get(id(handle)))
            handle._begin(sub.epoch)
        sub.status = ""  # reported by the first dispatch
        self._pump(sub, now)
