"""Live publication: from a NOTIFY to events read once and handed to subscribers.

The listener says "stream S has new events up to version n"; the publisher
reads them once (when anyone here is interested), delivers them to the
transient subscribers of S, and passes them to the persistent subscriptions of
S through the :class:`LiveTargets` the scheduler implements. It keeps how far
it published each stream, so after a reconnect -- when notifications may have
been missed -- it publishes whatever storage holds beyond that position.

Runs on the scheduler thread only: nothing here is locked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._types import RecordedEvent
from .payload import Notification

if TYPE_CHECKING:
    from ..subscriptions.reading import Unreadable

__all__ = ["LiveTargets", "Publisher"]

logger = logging.getLogger("sqlalchemy_eventstore.notifications")

Reader = Callable[[str, int, int], "list[RecordedEvent | Unreadable]"]
PAGE = 1000
RETRY_INTERVAL = 0.2


class LiveTargets(Protocol):
    """The persistent subscriptions' side, implemented by the scheduler."""

    def live_streams(self) -> set[str]:
        """Streams with a persistent subscription in this process."""
        ...

    def interested(self, stream_uuid: str) -> bool:
        """Whether a persistent subscription takes live events of the stream now."""
        ...

    def published(self, stream_uuid: str, events: list[RecordedEvent | Unreadable]) -> None:
        """Hand live events to the stream's persistent subscriptions."""
        ...

    def behind(self, stream_uuid: str | None) -> None:
        """Make the stream's (None: every) persistent subscription re-check storage."""
        ...


class Delivery(Protocol):
    """Where a transient subscriber's batches go (its Subscription handle)."""

    def _deliver(self, batch: list[Any], numbers: list[int]) -> None: ...


@dataclass(eq=False)
class _Transient:
    stream_uuid: str
    handle: Delivery
    selector: Callable[[RecordedEvent], Any] | None
    mapper: Callable[[RecordedEvent], Any] | None
    # Events up to this position were committed before the subscriber
    # subscribed: never delivered to it.
    after: int = 0


class Publisher:
    """Reads each notified range once and fans it out."""

    def __init__(
        self, read: Reader, current_version: Callable[[str], int], targets: LiveTargets
    ) -> None:
        self._read = read
        self._current_version = current_version
        self._targets = targets
        self._transients: list[_Transient] = []
        # How far live publication got, per stream ($all included).
        self._positions: dict[str, int] = {}
        # Streams whose publication failed (a storage error): retried.
        self._retry: set[str] = set()
        self._next_retry = 0.0
        self._logged: str | None = None
        # Seconds from the newest published event's created_at to its reading
        # (EventStore.stats()'s notification_lag); None until one was published.
        self.lag: float | None = None

    # -- transient subscribers ---------------------------------------------------

    def add_transient(
        self,
        stream_uuid: str,
        handle: Delivery,
        selector: Callable[[RecordedEvent], Any] | None,
        mapper: Callable[[RecordedEvent], Any] | None,
    ) -> None:
        """Deliver the stream's events committed from now on to ``handle``.

        A position kept while no transient watched the stream may be stale (no
        one advanced it), and events appended meanwhile must not reach the
        newcomer: unless a transient already tracks the stream, publication
        restarts at storage's current version. Persistent subscriptions of the
        stream re-check storage for whatever that skips.
        """
        tracked = any(t.stream_uuid == stream_uuid for t in self._transients)
        current = self._current_version(stream_uuid)
        if not (tracked and stream_uuid in self._positions):
            self._positions[stream_uuid] = current
            self._targets.behind(stream_uuid)
        # A stream already tracked may be published up to an older position
        # (notifications still on their way): the newcomer skips what was
        # committed before it subscribed.
        self._transients.append(_Transient(stream_uuid, handle, selector, mapper, current))

    def remove_transient(self, handle: Delivery) -> None:
        self._transients = [t for t in self._transients if t.handle is not handle]

    def transients(self) -> list[_Transient]:
        return list(self._transients)

    def position(self, stream_uuid: str) -> int | None:
        """How far the stream was published (None: not tracked)."""
        return self._positions.get(stream_uuid)

    def refresh(self, stream_uuid: str) -> None:
        """Notifications of the stream may have been missed (polling mode saw it
        for the first time): publish whatever storage has beyond its published
        position, and let its persistent subscriptions re-check storage."""
        self._publish_safely(stream_uuid, None, None)
        self._targets.behind(stream_uuid)

    def transient_handles(self) -> list[Delivery]:
        return [t.handle for t in self._transients]

    def clear(self) -> None:
        self._transients.clear()

    # -- events from the listener ------------------------------------------------

    def on_notification(self, notification: Notification) -> None:
        stream_uuid = notification.stream_uuid
        if notification.last_version < notification.first_version:
            return  # a soft delete: no events
        if not self._interested(stream_uuid):
            return
        self._publish_safely(stream_uuid, notification.first_version - 1, notification.last_version)

    def on_reconnect(self) -> None:
        """Notifications may have been missed: publish whatever storage has beyond
        each position, then let persistent subscriptions re-check storage."""
        streams = {t.stream_uuid for t in self._transients} | self._targets.live_streams()
        for stream_uuid in streams:
            self._publish_safely(stream_uuid, None, None)
        self._targets.behind(None)

    @property
    def next_retry(self) -> float | None:
        """When failed publications are retried (None: none failed)."""
        return self._next_retry if self._retry else None

    def retry_failed(self) -> None:
        """Called every scheduler pass: re-publish streams whose reads failed."""
        now = time.monotonic()
        if not self._retry or now < self._next_retry:
            return
        self._next_retry = now + RETRY_INTERVAL
        for stream_uuid in list(self._retry):
            self._retry.discard(stream_uuid)
            self._publish_safely(stream_uuid, None, None)

    # -- publishing ---------------------------------------------------------------

    def _interested(self, stream_uuid: str) -> bool:
        return any(t.stream_uuid == stream_uuid for t in self._transients) or (
            self._targets.interested(stream_uuid)
        )

    def _publish_safely(self, stream_uuid: str, after: int | None, last: int | None) -> None:
        """Publish; should storage fail, retry from the published position on the
        next passes (persistent subscriptions re-check storage meanwhile), so a
        notification is never lost to a storage error."""
        try:
            self._publish(stream_uuid, after, last)
        except Exception as error:
            summary = f"{type(error).__name__}: {error}"
            if summary != self._logged:  # once per change of error, not per retry
                logger.warning(
                    "could not publish events of %r; will retry", stream_uuid, exc_info=True
                )
                self._logged = summary
            self._retry.add(stream_uuid)
            self._targets.behind(stream_uuid)
        else:
            self._logged = None

    def _publish(self, stream_uuid: str, after: int | None, last: int | None) -> None:
        """Read the stream once past its published position and fan out.

        ``after`` is where to start when no position is known yet (the
        notification's first version - 1): only subscribers that track their
        own position (persistent ones) are interested then, and they fall back
        to storage on any gap. ``last`` None means "whatever storage has".
        """
        position = self._positions.get(stream_uuid, after)
        if position is None:
            return
        while last is None or position < last:
            count = PAGE if last is None else min(PAGE, last - position)
            events = self._read(stream_uuid, position + 1, count)
            if not events:
                break
            position = events[-1].event_number
            # Recorded per page, before fanning out: nothing is published twice.
            self._positions[stream_uuid] = position
            self._fan_out(stream_uuid, events)
            if len(events) < count:
                break
        self._positions[stream_uuid] = position

    def _fan_out(self, stream_uuid: str, events: list[RecordedEvent | Unreadable]) -> None:
        readable = [e for e in events if isinstance(e, RecordedEvent)]
        if readable:
            self.lag = time.time() - readable[-1].created_at.timestamp()
        if len(readable) < len(events):
            logger.warning(
                "%d event(s) of %r cannot be deserialized; transient subscribers skip them",
                len(events) - len(readable),
                stream_uuid,
            )
        for t in self._transients:
            if t.stream_uuid != stream_uuid:
                continue
            try:
                chosen = [
                    e
                    for e in readable
                    if e.event_number > t.after and (t.selector is None or t.selector(e))
                ]
                values = [t.mapper(e) for e in chosen] if t.mapper else chosen
            except Exception:
                # One subscriber's selector or mapper must not hold up the others
                # (a transient subscription has no checkpoint to retry from).
                logger.exception("a transient subscriber's selector or mapper failed")
                continue
            if chosen:
                t.handle._deliver(values, [e.event_number for e in chosen])
        try:
            self._targets.published(stream_uuid, events)
        except Exception:
            # Persistent subscriptions re-read storage; transients got theirs once.
            logger.warning("persistent subscriptions of %r re-read storage", stream_uuid)
            self._targets.behind(stream_uuid)
