"""Serving one subscription: read, dispatch, park, unpark, report, checkpoint.

The scheduler's per-subscription work, and the publisher's view of the
persistent subscriptions (``LiveTargets``). Called with the runner's mutex
held; storage reads let go of it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._types import RecordedEvent
from ..notifications.publisher import Publisher
from ..storage.locks import AdvisoryLocks
from . import persistent as io
from .inbox import Inbox
from .io import ListenerLike
from .persistent import Persistent
from .reading import Backend, Unreadable, convert, fetch_rows, read_events
from .state import UNSUBSCRIBED, describe

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
Key = tuple[str, str]

__all__ = ["CHECKPOINT_INTERVAL", "Serving"]

# Routine checkpoint writes of one subscription are at most this far apart:
# a checkpoint due at every ack (threshold 1) is written once per interval
# with every ack since, rather than once per event. Unsubscribe and close
# write at once, whatever the interval.
CHECKPOINT_INTERVAL = 0.05


class Serving:
    """Per-subscription work of the scheduler (a base of ``Runner``)."""

    _backend: Backend
    _persistent: dict[Key, Persistent]
    _locks: AdvisoryLocks
    _listener: ListenerLike
    _mutex: Any  # a threading.RLock
    _inbox: Inbox
    _publisher: Publisher
    _kicked: bool
    _reader: ThreadPoolExecutor

    def _kick(self) -> None:
        """Wake the scheduler (once per pass) for a read or a checkpoint write."""
        if not self._kicked:
            self._kicked = True
            self._inbox.wake()

    def _log_once(self, sub: Persistent, message: str, error: BaseException) -> None:
        summary = describe(error)
        if summary != sub.logged:
            logger.warning("%s: %s", message, summary, exc_info=error)
            sub.logged = summary

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
            if sub.state is not None:
                sub.retries += sub.state.retries
            sub.state = None
            sub.prefetch = None

    def _deleted(self, sub: Persistent) -> None:
        """The subscription was deleted: its subscribers here stop."""
        logger.warning("subscription %r was deleted; stopping its subscribers", sub.name)
        if sub.subscription_id is not None:
            self._locks.unlock(sub.subscription_id)
        sub.state = None
        self._persistent.pop((sub.stream_uuid, sub.name), None)
        for handle in sub.handles:
            handle._stop()

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
                events, requested = self._read(sub, start, wanted)
            finally:
                self._mutex.acquire()
            if sub.state is not state or state.last_received + 1 != start:
                sub.prefetch = None
                return  # dropped, or moved on meanwhile: this page is stale
            state.receive_read(events, requested, now)
        self._dispatch(sub, now)
        self._write_parks(sub)
        if state.replays_acked:
            io.unpark(self._backend, sub, state.replays_acked)
            state.replays_acked = []
            sub.parked_dirty = True  # a key may be free again
        if state.checkpoint_due() and now >= sub.next_checkpoint_write:
            self._write_checkpoint(sub)
            sub.next_checkpoint_write = now + CHECKPOINT_INTERVAL

    def _read(
        self, sub: Persistent, start: int, wanted: int
    ) -> tuple[list[RecordedEvent | Unreadable], int]:
        """The page from ``start`` (at most ``wanted`` events) and the count it
        stands for: ``len < count`` means caught up.

        While catching up, the page after a full one is fetched ahead on the
        reader thread, so the server's work on it overlaps the conversion and
        delivery of this one. A page read ahead is used only when it starts
        here and came back full (storage held at least that much); a short
        one may predate later commits, so it is read afresh.
        """
        rows: list[Any] | None = None
        count = wanted
        ahead, sub.prefetch = sub.prefetch, None
        if ahead is not None and ahead[0] == start and ahead[1] <= wanted:
            fetched = ahead[2].result()
            if len(fetched) == ahead[1]:
                rows, count = fetched, ahead[1]
        if rows is None:
            rows = fetch_rows(self._backend, sub.stream_uuid, start, wanted)
        state = sub.state
        if rows and len(rows) == count and state is not None:
            # Behind still: fetch the next page now. Its size is what the
            # next read will surely want (at least half of max_size).
            size = wanted if wanted >= state.max_size else max(1, state.max_size // 2)
            following = int(rows[-1][2]) + 1
            try:
                future = self._reader.submit(
                    fetch_rows, self._backend, sub.stream_uuid, following, size
                )
            except RuntimeError:  # shutting down
                pass
            else:
                sub.prefetch = (following, size, future)
        return convert(rows, self._backend.serializer), count

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
        if not sub.transient:
            sub.parked_count += len(requests)
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
        if position > state.persisted:
            sub.checkpoint_moved_at = time.monotonic()
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
