"""Polling mode: how subscriptions learn of new events where LISTEN cannot work.

When the listener finds that LISTEN does not hold (a transaction-mode pooler
such as PgBouncer in front of the session URL, or a server refusing LISTEN),
or the store says so from the start, the scheduler polls instead, every
``poll_interval`` seconds: one query reads the version of every stream
followed here (``$all``'s head for all-streams subscriptions), and each
stream that moved is handled exactly as its NOTIFY would have been. A second
query reads the counts of the running subscriptions' parked events, standing
in for the replay/discard notifications.

Correctness does not rest on the first poll being early: a stream seen for
the first time (a new subscriber, or a hard-deleted stream made anew) is
published from its last known position and its persistent subscriptions
re-check storage, as after a listener's reconnect -- so whatever committed
between a subscription's catch-up read and the poll that first saw its
stream is read from storage, not lost.
"""

from __future__ import annotations

import logging

from ..notifications.payload import Notification
from ..storage.polls import parked_counts_op, stream_versions_op
from .metrics import Metrics

__all__ = ["Polling"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")


class Polling(Metrics):
    """The scheduler's polls in polling mode (a base of ``Runner``)."""

    # Versions seen at the last poll, by stream; parked counts by subscription id.
    _poll_versions: dict[str, int]
    _poll_parked: dict[int, tuple[int, int]]
    _next_poll: float
    _poll_error: str | None
    # Stream changes found by polling (stats: counted as notifications).
    polled_notifications: int

    def _init_polling(self) -> None:
        self._poll_versions = {}
        self._poll_parked = {}
        self._next_poll = 0.0
        self._poll_error = None
        self.polled_notifications = 0

    @property
    def polling(self) -> bool:
        return self._listener.mode == "poll"

    def _poll_wake(self, wake: float) -> float:
        """``wake``, or the next poll when it comes first (polling mode only)."""
        return min(wake, self._next_poll) if self.polling else wake

    def _poll_if_due(self, now: float) -> None:
        if not self.polling or now < self._next_poll:
            return
        self._next_poll = now + self._backend.poll_interval
        streams = sorted(
            {s.stream_uuid for s in self._persistent.values() if s.state is not None}
            | {t.stream_uuid for t in self._publisher.transients()}
        )
        running = [
            s
            for s in self._persistent.values()
            if s.state is not None and not s.transient and s.subscription_id is not None
        ]
        ids = [s.subscription_id for s in running if s.subscription_id is not None]
        # The queries run without the mutex, as storage reads do: acks go on.
        self._mutex.release()
        try:
            versions, parked = self._poll_storage(streams, ids)
        finally:
            self._mutex.acquire()
        if versions is None:
            return
        self._take_versions(streams, versions)
        if parked is not None:
            for sub in running:
                counts = parked.get(sub.subscription_id or 0, (0, 0))
                if self._poll_parked.get(sub.subscription_id or 0) != counts:
                    sub.parked_dirty = True  # reloaded by this pass's serve
                self._poll_parked[sub.subscription_id or 0] = counts
        for gone in set(self._poll_parked) - set(ids):
            del self._poll_parked[gone]

    def _poll_storage(
        self, streams: list[str], ids: list[int]
    ) -> tuple[dict[str, int] | None, dict[int, tuple[int, int]] | None]:
        """The versions of ``streams`` and the parked counts of ``ids``; None
        for what could not be read (logged once per change of error)."""
        io, schema = self._backend.io, self._backend.schema
        try:
            versions = io.read(lambda: stream_versions_op(schema, streams))
        except Exception as error:
            summary = f"{type(error).__name__}: {error}"
            if summary != self._poll_error:
                logger.warning("polling for new events failed; will retry: %s", summary)
                self._poll_error = summary
            return None, None
        self._poll_error = None
        parked: dict[int, tuple[int, int]] | None = None
        if ids:
            try:
                parked = io.read(lambda: parked_counts_op(schema, ids))
            except Exception as error:  # a schema without the parked_events table
                logger.debug("could not poll parked events: %s", error)
        return versions, parked

    def _take_versions(self, streams: list[str], versions: dict[str, int]) -> None:
        """Turn the versions read into notifications, as LISTEN would have."""
        fresh: list[str] = []
        for stream_uuid in streams:
            version = versions.get(stream_uuid, 0)
            known = self._poll_versions.get(stream_uuid)
            self._poll_versions[stream_uuid] = version
            if known is None or version < known:
                fresh.append(stream_uuid)  # new here, or hard-deleted and made anew
            elif version > known:
                self.polled_notifications += 1
                self._publisher.on_notification(Notification(stream_uuid, 0, known + 1, version))
            self._note_head(stream_uuid, version)
        for stream_uuid in fresh:
            self._publisher.refresh(stream_uuid)
        for stream_uuid in set(self._poll_versions) - set(streams):
            del self._poll_versions[stream_uuid]
