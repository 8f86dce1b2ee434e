"""The numbers ``Subscription.stats`` and ``EventStore.stats()`` report.

Gathered under the runner's mutex from what the scheduler keeps anyway (the
subscription state, its subscribers, the publisher), plus the head of each
stream followed here: the last version seen in a notification, a poll or a
read. Nothing here touches the database but :meth:`Metrics._note_start`'s one
read of the head when a subscription starts, so its lag is known while it
catches up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from ..notifications.payload import Notification
from ..stats import SubscriptionStats
from .handle import Subscription
from .persistent import Persistent
from .reading import current_version
from .serving import Serving
from .state import INITIAL, RETRYING, UNSUBSCRIBED

__all__ = ["Metrics"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")


class Metrics(Serving):
    """Stats of the runner's subscriptions (a base of ``Runner``)."""

    # The head of each followed stream, as far as this process knows it.
    _heads: dict[str, int]

    def _followed(self) -> set[str]:
        """Streams with a subscriber in this process (persistent or transient)."""
        return {s.stream_uuid for s in self._persistent.values()} | {
            t.stream_uuid for t in self._publisher.transients()
        }

    def _note_head(self, stream_uuid: str, version: int) -> None:
        if version > self._heads.get(stream_uuid, -1):
            self._heads[stream_uuid] = version

    def _note_heads(self, notifications: Iterable[Notification]) -> None:
        """Heads from the notifications of a pass (followed streams only: the
        dict stays as small as what this process subscribes to)."""
        followed: set[str] | None = None
        for notification in notifications:
            if notification.last_version < notification.first_version:
                continue  # a soft delete
            if followed is None:
                followed = self._followed()
            if notification.stream_uuid in followed:
                self._note_head(notification.stream_uuid, notification.last_version)
        if followed is not None and len(self._heads) > len(followed):
            for stream_uuid in set(self._heads) - followed:
                del self._heads[stream_uuid]

    def _note_start(self, sub: Persistent) -> None:
        """The subscription took its lock: its checkpoint age starts, and its
        stream's head is read once (a failure only leaves the lag unknown)."""
        sub.checkpoint_moved_at = time.monotonic()
        try:
            self._note_head(sub.stream_uuid, current_version(self._backend, sub.stream_uuid))
        except Exception as error:
            logger.debug("could not read the head of %r: %s", sub.stream_uuid, error)

    # -- snapshots (any thread) ----------------------------------------------------------

    def stats_of(self, handle: Subscription) -> SubscriptionStats:
        """The stats of the subscription ``handle`` subscribes to."""
        with self._mutex:
            if handle.subscription_name is None:
                return self._transient_stats(handle)
            sub = self._persistent.get(handle._key)
            if sub is None or handle not in sub.handles:
                return SubscriptionStats(
                    stream_uuid=handle.stream_uuid,
                    subscription_name=handle.subscription_name,
                    status=UNSUBSCRIBED,
                    subscribers=0,
                    head=self._heads.get(handle.stream_uuid),
                    checkpoint=None,
                    stored_checkpoint=None,
                    lag=None,
                    checkpoint_age=None,
                    in_flight=0,
                    queued=0,
                    parked=None,
                    retries=handle._retries,
                )
            return self._persistent_stats(sub, time.monotonic())

    def subscription_stats(self) -> tuple[SubscriptionStats, ...]:
        """Every persistent subscription of this process, by stream then name."""
        with self._mutex:
            now = time.monotonic()
            subs = sorted(self._persistent.values(), key=lambda s: (s.stream_uuid, s.name))
            return tuple(self._persistent_stats(sub, now) for sub in subs)

    def _persistent_stats(self, sub: Persistent, now: float) -> SubscriptionStats:
        state = sub.state
        head = self._heads.get(sub.stream_uuid)
        checkpoint = stored = age = parked = None
        in_flight = queued = retries = 0
        if state is not None:
            head = max(head if head is not None else 0, state.last_received)
            checkpoint = state.checkpoint
            stored = state.persisted
            age = max(0.0, now - sub.checkpoint_moved_at)
            in_flight = sum(len(slot.in_flight) for slot in state.subscribers)
            queued = len(state.queue)
            parked = sub.parked_count + len(state.to_park)
            retries = state.retries
        status = sub.status or (state.status if state is not None else INITIAL)
        if any(h._handler_failing for h in sub.handles):
            status = RETRYING
        return SubscriptionStats(
            stream_uuid=sub.stream_uuid,
            subscription_name=sub.name,
            status=status,
            subscribers=len(sub.handles),
            head=head,
            checkpoint=checkpoint,
            stored_checkpoint=stored,
            lag=None if head is None or checkpoint is None else max(0, head - checkpoint),
            checkpoint_age=age,
            in_flight=in_flight,
            queued=queued,
            parked=parked,
            retries=sub.retries + retries + sum(h._retries for h in sub.handles),
        )

    def _transient_stats(self, handle: Subscription) -> SubscriptionStats:
        head = self._heads.get(handle.stream_uuid)
        published = self._publisher.position(handle.stream_uuid)
        lag = None if head is None or published is None else max(0, head - published)
        return SubscriptionStats(
            stream_uuid=handle.stream_uuid,
            subscription_name=None,
            status=handle.status,
            subscribers=0 if handle.status == UNSUBSCRIBED else 1,
            head=head,
            checkpoint=None,
            stored_checkpoint=None,
            lag=lag,
            checkpoint_age=None,
            in_flight=0,
            queued=0,
            parked=None,
            retries=handle._retries,
        )
