"""The bookkeeping of one persistent subscription, free of I/O and threads.

The scheduler feeds it events (read from storage or published live), acks and
subscriber changes, and asks it what to do next: which batches to send to
which subscriber, where to read from storage, what checkpoint to write. Keeping
this pure makes every ordering rule testable without a database.

Positions are event numbers of the subscribed stream (global ones for $all).
``checkpoint`` only ever moves over events that were acknowledged (or filtered
out by the selector), so a checkpoint written at any moment -- by a timer, at
unsubscribe, at close -- never skips an event that was not handled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .._types import RecordedEvent
from ..errors import UnexpectedAckError

__all__ = [
    "CATCHING_UP",
    "DISCONNECTED",
    "INITIAL",
    "MAX_CAPACITY",
    "SUBSCRIBED",
    "UNSUBSCRIBED",
    "SubscriberSlot",
    "SubscriptionState",
]

# A subscription's states, named as the reference's state machine names them.
INITIAL = "initial"  # created; has not tried to take its lock yet
CATCHING_UP = "catching_up"  # reading from storage until caught up
SUBSCRIBED = "subscribed"  # caught up: taking events as they are published
MAX_CAPACITY = "max_capacity"  # events wait: every subscriber is full
DISCONNECTED = "disconnected"  # does not hold its lock (another process does, or it was lost)
UNSUBSCRIBED = "unsubscribed"  # this subscriber has left


@dataclass(eq=False)
class SubscriberSlot:
    """One subscriber of a subscription and the events it has not acked yet."""

    key: Hashable
    buffer_size: int
    in_flight: list[RecordedEvent] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return self.buffer_size - len(self.in_flight)


class SubscriptionState:
    """Queue, in-flight events, acks and checkpoint of one named subscription."""

    def __init__(
        self,
        *,
        last_seen: int,
        buffer_size: int,
        max_size: int,
        checkpoint_threshold: int,
        selector: Callable[[RecordedEvent], Any] | None = None,
        partition_by: Callable[[RecordedEvent], Hashable] | None = None,
    ) -> None:
        self.buffer_size = buffer_size
        self.max_size = max_size
        self.checkpoint_threshold = checkpoint_threshold
        self.selector = selector
        self.partition_by = partition_by
        self.subscribers: list[SubscriberSlot] = []
        self._next_subscriber = 0
        # Events received but not yet sent, in event-number order.
        self.queue: deque[RecordedEvent] = deque()
        # Highest event number received (queued, sent or filtered out).
        self.last_received = last_seen
        # Every received event number not yet covered by the checkpoint, in
        # order, and the subset of them already acknowledged.
        self._outstanding: deque[int] = deque()
        self._acked: set[int] = set()
        self.checkpoint = last_seen
        self.persisted = last_seen
        self._acked_since_persist = 0
        # True while storage may hold events we have not received: read before
        # accepting live events again.
        self.behind = True

    # -- subscribers ---------------------------------------------------------

    def add_subscriber(self, key: Hashable, buffer_size: int | None = None) -> SubscriberSlot:
        """Add a subscriber with its own ``buffer_size`` (default: the subscription's)."""
        slot = SubscriberSlot(key, self.buffer_size if buffer_size is None else buffer_size)
        self.subscribers.append(slot)
        return slot

    def remove_subscriber(self, key: Hashable) -> None:
        """Forget a subscriber; its unacked events go back to the queue's front.

        They precede every queued event of their partitions (a partition's
        events go to one subscriber at a time), so putting them first keeps
        each partition in order for whoever takes them next.
        """
        slot = self._slot(key)
        self.subscribers.remove(slot)
        for event in reversed(slot.in_flight):
            self.queue.appendleft(event)
        slot.in_flight.clear()
        self._next_subscriber = 0

    def _slot(self, key: Hashable) -> SubscriberSlot:
        for slot in self.subscribers:
            if slot.key == key:
                return slot
        raise KeyError(key)

    # -- receiving -------------------------------------------------------------

    def wants_read(self) -> int:
        """How many events to read from storage now (0: none).

        Reads wait until the queue is at most half full, so catching up reads
        big pages (at least max_size / 2 events) rather than one event per ack.
        """
        if not self.behind:
            return 0
        room = self.max_size - len(self.queue)
        return room if room >= max(1, self.max_size // 2) else 0

    def receive_read(self, events: list[RecordedEvent], requested: int) -> None:
        """Events read from storage after ``last_received``; fewer than
        ``requested`` means we are caught up."""
        self._receive(events)
        if len(events) < requested:
            self.behind = False

    def receive_published(self, events: list[RecordedEvent]) -> None:
        """Events published live, in order. Used only while caught up and when
        contiguous with what we have; otherwise we fall back to storage."""
        fresh = [e for e in events if e.event_number > self.last_received]
        if not fresh:
            return
        if self.behind:
            return  # the next storage read will return these too
        if fresh[0].event_number != self.last_received + 1 or (
            len(self.queue) + len(fresh) > self.max_size
        ):
            # A gap (a notification we never saw) or more than we may hold in
            # memory: drop them and read from storage when there is room.
            self.behind = True
            return
        self._receive(fresh)

    def _receive(self, events: list[RecordedEvent]) -> None:
        for event in events:
            if event.event_number <= self.last_received:
                continue
            self.last_received = event.event_number
            self._outstanding.append(event.event_number)
            if self.selector is not None and not self.selector(event):
                # Filtered out: counts as acknowledged, the checkpoint moves past it.
                self._mark_acked(event.event_number)
            else:
                self.queue.append(event)
        self._advance_checkpoint()

    # -- sending ---------------------------------------------------------------

    def dispatch(self) -> list[tuple[SubscriberSlot, list[RecordedEvent]]]:
        """Assign queued events to subscribers with room, in order.

        Without ``partition_by``: round-robin. With it, a partition sticks to
        the subscriber holding its unacked events; while that subscriber is
        full the partition waits (later events of other partitions may pass),
        so every partition is handled in order by one subscriber at a time.
        """
        if not self.subscribers or not self.queue:
            return []
        batches: dict[int, list[RecordedEvent]] = {}
        owners: dict[Hashable, SubscriberSlot] = {}
        if self.partition_by is not None:
            for slot in self.subscribers:
                for event in slot.in_flight:
                    owners[self.partition_by(event)] = slot
        blocked: set[Hashable] = set()
        kept: deque[RecordedEvent] = deque()
        while self.queue:
            event = self.queue.popleft()
            target: SubscriberSlot | None
            if self.partition_by is not None:
                key = self.partition_by(event)
                if key in blocked:
                    kept.append(event)
                    continue
                target = owners.get(key)
                if target is None:
                    target = self._round_robin()
                if target is None or target.capacity <= 0:
                    blocked.add(key)
                    kept.append(event)
                    continue
                owners[key] = target
            else:
                target = self._round_robin()
                if target is None:
                    kept.append(event)
                    kept.extend(self.queue)
                    self.queue.clear()
                    break
            target.in_flight.append(event)
            batches.setdefault(id(target), []).append(event)
        self.queue = kept
        by_id = {id(slot): slot for slot in self.subscribers}
        return [(by_id[k], events) for k, events in batches.items()]

    def _round_robin(self) -> SubscriberSlot | None:
        count = len(self.subscribers)
        for offset in range(count):
            slot = self.subscribers[(self._next_subscriber + offset) % count]
            if slot.capacity > 0:
                self._next_subscriber = (self._next_subscriber + offset + 1) % count
                return slot
        return None

    # -- acknowledging -----------------------------------------------------------

    def ack(self, key: Hashable, event_number: int) -> None:
        """Acknowledge ``event_number`` and every earlier event sent to ``key``."""
        slot = self._slot(key)
        sent = [e.event_number for e in slot.in_flight]
        if event_number not in sent:
            raise UnexpectedAckError(
                f"event {event_number} was not sent to this subscriber, or is already acked"
            )
        # "Earlier" is in sending order: with partition_by a later batch may
        # hold lower event numbers (a partition that waited), which the
        # subscriber has not handled when it acks the batch before it.
        upto = sent.index(event_number) + 1
        for number in sent[:upto]:
            self._mark_acked(number)
        slot.in_flight = slot.in_flight[upto:]
        self._advance_checkpoint()

    def _mark_acked(self, event_number: int) -> None:
        self._acked.add(event_number)
        self._acked_since_persist += 1

    def _advance_checkpoint(self) -> None:
        while self._outstanding and self._outstanding[0] in self._acked:
            number = self._outstanding.popleft()
            self._acked.discard(number)
            self.checkpoint = number

    # -- status ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        """Where the subscription stands, in the reference's state names.

        ``catching_up`` while storage may hold events it has not received;
        ``max_capacity`` when events wait but every subscriber is full
        (back-pressure); ``subscribed`` otherwise. (The scheduler adds
        ``initial``, ``disconnected`` and ``unsubscribed``, which concern the
        lock and the subscribers rather than this bookkeeping.)
        """
        if self.behind:
            return CATCHING_UP
        if self.queue and all(slot.capacity <= 0 for slot in self.subscribers):
            return MAX_CAPACITY
        return SUBSCRIBED

    # -- checkpoints ---------------------------------------------------------------

    @property
    def checkpoint_pending(self) -> bool:
        """Acknowledged progress not yet written."""
        return self.checkpoint > self.persisted

    def checkpoint_due(self) -> bool:
        """Whether enough events were acked since the last write (the threshold)."""
        return self.checkpoint_pending and self._acked_since_persist >= self.checkpoint_threshold

    def persisted_at(self, position: int) -> None:
        """Record that ``position`` was written as the checkpoint."""
        self.persisted = position
        self._acked_since_persist = 0
