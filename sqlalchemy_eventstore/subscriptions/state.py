"""The bookkeeping of one persistent subscription, free of I/O and threads.

The scheduler feeds it events (read from storage or published live), acks and
subscriber changes, and asks it what to do next: which batches to send to
which subscriber, where to read from storage, what to park, what checkpoint
to write. Keeping this pure makes every ordering rule testable without a
database.

Positions are event numbers of the subscribed stream (global ones for $all).
The checkpoint is "one below the lowest event still queued, in flight or
waiting to be parked; else the last event received". Those pending events
sit in a min-heap with lazy deletion, so the bookkeeping is bounded by what
is queued and in flight -- an event filtered out by the selector leaves no
trace -- and a checkpoint written at any moment (a timer, unsubscribe, close)
never skips an event that was not handled.

User code (selector, mapper, partition_by) runs here; when it raises, the
event is neither skipped nor dropped: the state records a :class:`Failure`,
holds the work back until ``retry_at`` (exponential backoff) and tries the
same event again, parking it after ``max_retries`` retries when set.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .._types import RecordedEvent
from ..errors import UnexpectedAckError
from .reading import Unreadable

__all__ = [
    "CATCHING_UP",
    "DISCONNECTED",
    "INITIAL",
    "MAX_CAPACITY",
    "RETRYING",
    "SUBSCRIBED",
    "UNSUBSCRIBED",
    "Dispatch",
    "Failure",
    "ParkRequest",
    "SubscriberSlot",
    "SubscriptionState",
    "backoff",
    "describe",
]

# A subscription's states, named as the reference's state machine names them.
INITIAL = "initial"  # created; has not tried to take its lock yet
CATCHING_UP = "catching_up"  # reading from storage until caught up
SUBSCRIBED = "subscribed"  # caught up: taking events as they are published
MAX_CAPACITY = "max_capacity"  # events wait: every subscriber is full
DISCONNECTED = "disconnected"  # does not hold its lock (another process does, or it was lost)
UNSUBSCRIBED = "unsubscribed"  # this subscriber has left
# Beyond the reference: user code (or the serializer) failed on an event that
# is being retried; ``Subscription.last_error`` holds the exception.
RETRYING = "retrying"

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 5.0


def backoff(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th consecutive failure."""
    return float(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** min(attempts - 1, 16)))


def describe(error: BaseException) -> str:
    """A parked event's reason: the exception's class and message."""
    return f"{type(error).__name__}: {error}"


@dataclass
class Failure:
    """User code failing on one event, being retried."""

    number: int
    attempts: int
    error: BaseException
    retry_at: float
    stage: str  # "receive" (selector, serializer) or "dispatch" (partition_by, mapper)


@dataclass(frozen=True)
class ParkRequest:
    """An event to park: written by the scheduler, then :meth:`parked` frees it."""

    event: RecordedEvent | Unreadable
    reason: str
    partition_key: str | None


class Dispatch(NamedTuple):
    """Events sent to one subscriber now, with what the mapper made of them."""

    slot: SubscriberSlot
    events: list[RecordedEvent]
    values: list[Any]


@dataclass(eq=False)
class SubscriberSlot:
    """One subscriber of a subscription and the events it has not acked yet,
    in sending order."""

    key: Hashable
    buffer_size: int
    in_flight: list[RecordedEvent] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return self.buffer_size - len(self.in_flight)


class SubscriptionState:
    """Queue, in-flight events, acks, failures and checkpoint of one subscription."""

    def __init__(
        self,
        *,
        last_seen: int,
        buffer_size: int,
        max_size: int,
        checkpoint_threshold: int,
        selector: Callable[[RecordedEvent], Any] | None = None,
        mapper: Callable[[RecordedEvent], Any] | None = None,
        partition_by: Callable[[RecordedEvent], Hashable] | None = None,
        max_retries: int | None = None,
    ) -> None:
        self.buffer_size = buffer_size
        self.max_size = max_size
        self.checkpoint_threshold = checkpoint_threshold
        self.selector = selector
        self.mapper = mapper
        self.partition_by = partition_by
        self.max_retries = max_retries
        self.subscribers: list[SubscriberSlot] = []
        self._next_subscriber = 0
        # Events received but not yet sent: in event-number order, save for
        # events put back at the front (a subscriber that left, replays).
        self.queue: deque[RecordedEvent] = deque()
        # Highest event number received (queued, sent, filtered out or parked).
        self.last_received = last_seen
        # Event numbers queued, in flight or waiting to be parked (a min-heap),
        # and those of them that are done but not popped yet (lazy deletion).
        self._pending: list[int] = []
        self._done: set[int] = set()
        self.persisted = last_seen
        self._acked_since_persist = 0
        # True while storage may hold events we have not received: read before
        # accepting live events again.
        self.behind = True
        self.failure: Failure | None = None
        # Set when the failing event finally went through (the scheduler clears
        # ``last_error`` and resets this).
        self.recovered = False
        self.to_park: list[ParkRequest] = []
        # Partition keys (as str) held back by a parked event: key -> its number.
        self.blocked: dict[str, int] = {}
        # Replayed parked events queued or in flight (below the checkpoint).
        self.replays: set[int] = set()
        # Replayed events acked since the scheduler last looked: to unpark.
        self.replays_acked: list[int] = []
        # Failures of user code or the serializer that are retried (for stats).
        self.retries = 0

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

    def room(self, key: Hashable) -> int:
        """How many more events the subscriber ``key`` may have in flight."""
        return self._slot(key).capacity

    def _slot(self, key: Hashable) -> SubscriberSlot:
        for slot in self.subscribers:
            if slot.key == key:
                return slot
        raise KeyError(key)

    # -- failures --------------------------------------------------------------

    def _fail(self, number: int, error: BaseException, stage: str, now: float) -> bool:
        """Record a failure on ``number``; True when it is to be parked now."""
        failure = self.failure
        attempts = failure.attempts + 1 if failure and failure.number == number else 1
        self.failure = Failure(number, attempts, error, now + backoff(attempts), stage)
        self.recovered = False
        park = self.max_retries is not None and attempts > self.max_retries
        if not park:
            self.retries += 1
        return park

    def _succeeded(self, number: int) -> None:
        if self.failure is not None and self.failure.number == number:
            self.failure = None
            self.recovered = True

    def held_back(self, stage: str, now: float) -> bool:
        failure = self.failure
        return failure is not None and failure.stage == stage and now < failure.retry_at

    def _key_of(self, event: RecordedEvent | Unreadable) -> str | None:
        if self.partition_by is None or isinstance(event, Unreadable):
            return None
        try:
            return str(self.partition_by(event))
        except Exception:
            return None

    def _park(self, event: RecordedEvent | Unreadable, reason: str, key: str | None) -> None:
        """Park ``event`` (pending until the row is written) and block its key."""
        self.to_park.append(ParkRequest(event, reason, key))
        if key is not None and key not in self.blocked:
            self.blocked[key] = event.event_number
        if self.failure is not None and self.failure.number == event.event_number:
            self.failure = None
            self.recovered = True

    def parked(self, numbers: list[int]) -> None:
        """The scheduler wrote these park requests: the checkpoint may pass them."""
        written = set(numbers)
        self.to_park = [r for r in self.to_park if r.event.event_number not in written]
        for number in numbers:
            self._finish(number)

    # -- receiving -------------------------------------------------------------

    def wants_read(self, now: float = 0.0) -> int:
        """How many events to read from storage now (0: none).

        Reads wait until the queue is at most half full, so catching up reads
        big pages (at least max_size / 2 events) rather than one event per ack.
        """
        if not self.behind or self.held_back("receive", now):
            return 0
        room = self.max_size - len(self.queue)
        return room if room >= max(1, self.max_size // 2) else 0

    def receive_read(
        self, events: list[RecordedEvent | Unreadable], requested: int, now: float = 0.0
    ) -> None:
        """Events read from storage after ``last_received``; fewer than
        ``requested`` means we are caught up."""
        if self._receive(events, now) and len(events) < requested:
            self.behind = False

    def receive_published(self, events: list[RecordedEvent | Unreadable], now: float = 0.0) -> None:
        """Events published live, in order. Used only while caught up and when
        contiguous with what we have; otherwise we fall back to storage."""
        fresh = [e for e in events if e.event_number > self.last_received]
        if not fresh or self.behind:
            return  # the next storage read will return these too
        if fresh[0].event_number != self.last_received + 1 or (
            len(self.queue) + len(fresh) > self.max_size
        ):
            # A gap (a notification we never saw) or more than we may hold in
            # memory: drop them and read from storage when there is room.
            self.behind = True
            return
        self._receive(fresh, now)

    def _receive(self, events: list[RecordedEvent | Unreadable], now: float) -> bool:
        """Take events in order; False when user code failed on one (the rest
        is dropped, to be read again from storage after the backoff)."""
        for event in events:
            number = event.event_number
            if number <= self.last_received:
                continue
            error: BaseException | None = None
            keep = True
            if isinstance(event, Unreadable):
                error = event.error
            elif self.selector is not None:
                try:
                    keep = bool(self.selector(event))
                except Exception as raised:
                    error = raised
            if error is not None:
                if not self._fail(number, error, "receive", now):
                    self.behind = True
                    return False
                self.last_received = number
                heapq.heappush(self._pending, number)
                self._park(event, describe(error), self._key_of(event))
                continue
            self._succeeded(number)
            self.last_received = number
            if keep:
                assert isinstance(event, RecordedEvent)
                heapq.heappush(self._pending, number)
                self.queue.append(event)
            else:
                # Filtered out: counts as acknowledged, the checkpoint moves past it.
                self._acked_since_persist += 1
        return True

    def replay(self, events: list[RecordedEvent]) -> None:
        """Parked events to deliver again, in order, before anything queued."""
        fresh: list[RecordedEvent] = []
        for event in events:
            if event.event_number in self.replays:
                continue
            if self.selector is not None:
                try:
                    if not self.selector(event):
                        self.replays_acked.append(event.event_number)  # filtered: done
                        continue
                except Exception:
                    continue  # still failing: it stays parked
            fresh.append(event)
        for event in reversed(fresh):
            self.queue.appendleft(event)
            self.replays.add(event.event_number)

    # -- sending ---------------------------------------------------------------

    def dispatch(self, now: float = 0.0) -> list[Dispatch]:
        """Assign queued events to subscribers with room, in order.

        Without ``partition_by``: round-robin. With it, a partition sticks to
        the subscriber holding its unacked events; while that subscriber is
        full the partition waits (later events of other partitions may pass),
        so every partition is handled in order by one subscriber at a time.
        An event whose key is held back by a parked event is parked behind it.
        """
        if not self.queue or self.held_back("dispatch", now):
            return []
        if all(slot.capacity <= 0 for slot in self.subscribers):
            return []  # no room anywhere (or no subscriber): nothing to look at
        if self.partition_by is None:
            return self._dispatch_round_robin(now)
        return self._dispatch_partitioned(now, self.partition_by)

    def _dispatch_partitioned(
        self, now: float, partition_by: Callable[[RecordedEvent], Hashable]
    ) -> list[Dispatch]:
        """``dispatch`` with partitions: one subscriber per key at a time."""
        batches: dict[int, Dispatch] = {}
        owners: dict[Hashable, SubscriberSlot] = {}
        for slot in self.subscribers:
            for sent in slot.in_flight:
                try:
                    owners[partition_by(sent)] = slot
                except Exception:
                    continue  # it passed before; a flaky key function is retried below
        blocked: set[Hashable] = set()
        kept: deque[RecordedEvent] = deque()
        while self.queue:
            event = self.queue.popleft()
            number = event.event_number
            replayed = number in self.replays
            target: SubscriberSlot | None
            turn = False
            try:
                key = partition_by(event)
                if key in blocked:
                    kept.append(event)
                    continue
                blocker = self.blocked.get(str(key))
                if blocker is not None and not replayed and blocker != number:
                    self._park(event, f"blocked behind parked event {blocker}", str(key))
                    continue
                target = owners.get(key)
                if target is None:
                    target = self._round_robin(peek=True)
                    turn = True
                if target is None or target.capacity <= 0:
                    blocked.add(key)
                    kept.append(event)
                    continue
                value = self.mapper(event) if self.mapper is not None else event
            except Exception as error:
                if self._fail(number, error, "dispatch", now):
                    if replayed:  # already parked: it stays so, no longer replayed
                        self.replays.discard(number)
                        self.failure = None
                    else:
                        self._park(event, describe(error), self._key_of(event))
                    continue
                self.queue.appendleft(event)
                break
            self._succeeded(number)
            owners[key] = target
            if turn:
                self._round_robin(peek=False)
            target.in_flight.append(event)
            batch = batches.get(id(target))
            if batch is None:
                batch = batches[id(target)] = Dispatch(target, [], [])
            batch.events.append(event)
            batch.values.append(value)
        if kept:  # held back partitions first, then whatever was not looked at
            kept.extend(self.queue)
            self.queue = kept
        return list(batches.values())

    def _dispatch_round_robin(self, now: float) -> list[Dispatch]:
        """``dispatch`` without partitions: the hot path of catching up."""
        batches: dict[int, Dispatch] = {}
        queue, mapper = self.queue, self.mapper
        while queue:
            target = self._round_robin(peek=False)
            if target is None:
                break
            event = queue[0]
            number = event.event_number
            if mapper is None:
                value: Any = event
            else:
                try:
                    value = mapper(event)
                except Exception as error:
                    if not self._fail(number, error, "dispatch", now):
                        break
                    queue.popleft()
                    if number in self.replays:  # already parked: it stays so
                        self.replays.discard(number)
                        self.failure = None
                    else:
                        self._park(event, describe(error), None)
                    continue
            queue.popleft()
            if self.failure is not None:
                self._succeeded(number)
            target.in_flight.append(event)
            batch = batches.get(id(target))
            if batch is None:
                batch = batches[id(target)] = Dispatch(target, [], [])
            batch.events.append(event)
            batch.values.append(value)
        return list(batches.values())

    def _round_robin(self, *, peek: bool) -> SubscriberSlot | None:
        """The next subscriber with room; ``peek`` leaves the turn where it is."""
        count = len(self.subscribers)
        for offset in range(count):
            slot = self.subscribers[(self._next_subscriber + offset) % count]
            if slot.capacity > 0:
                if not peek:
                    self._next_subscriber = (self._next_subscriber + offset + 1) % count
                return slot
        return None

    # -- acknowledging -----------------------------------------------------------

    def ack(self, key: Hashable, event_number: int) -> int:
        """Acknowledge ``event_number`` and every event sent to ``key`` before it.

        "Before" is in sending order: with partition_by a later batch may hold
        lower event numbers (a partition that waited). Returns how many events
        the ack covered.
        """
        slot = self._slot(key)
        index = self._position(slot, event_number)
        covered = slot.in_flight[: index + 1]
        del slot.in_flight[: index + 1]
        for event in covered:
            self._finish(event.event_number)
        return len(covered)

    @staticmethod
    def _position(slot: SubscriberSlot, event_number: int) -> int:
        for index, event in enumerate(slot.in_flight):
            if event.event_number == event_number:
                return index
        raise UnexpectedAckError(
            f"event {event_number} is not in flight to this subscriber "
            "(never sent to it, or already acked)"
        )

    def park_in_flight(self, key: Hashable, event_number: int, reason: str) -> list[int]:
        """The subscriber's handler gave up on an in-flight event: park it.

        With ``partition_by``, the events of its key sent to this subscriber
        after it (later in its batch, or in later batches) are taken back and
        parked behind it -- handling them would break the key's order. Returns
        the numbers taken back: the subscriber must not handle them.
        """
        slot = self._slot(key)
        index = self._position(slot, event_number)
        event = slot.in_flight.pop(index)
        partition = self._key_of(event)
        behind: list[RecordedEvent] = []
        if partition is not None:
            kept: list[RecordedEvent] = []
            for later in slot.in_flight[index:]:
                (behind if self._key_of(later) == partition else kept).append(later)
            slot.in_flight[index:] = kept
        if event_number in self.replays:
            # Already parked: it stays parked, and is no longer being replayed.
            self.replays.discard(event_number)
        else:
            self._park(event, reason, partition)
        for later in behind:
            number = later.event_number
            if number in self.replays:
                self.replays.discard(number)  # stays parked, behind the failed one
            else:
                self._park(later, f"blocked behind parked event {event_number}", partition)
        return [e.event_number for e in behind]

    def _finish(self, number: int) -> None:
        if number in self.replays:
            self.replays.discard(number)
            self.replays_acked.append(number)
            return
        self._done.add(number)
        self._acked_since_persist += 1
        if len(self._done) > 64 and 2 * len(self._done) > len(self._pending):
            # An old event stays pending (unacked) while later ones are done:
            # drop the done ones from the heap, so it holds only events still
            # queued or in flight (amortised: at most once per doubling).
            done = self._done
            self._pending = [n for n in self._pending if n not in done]
            heapq.heapify(self._pending)
            done.clear()

    # -- status ----------------------------------------------------------------------

    @property
    def status(self) -> str:
        """Where the subscription stands, in the reference's state names, or
        ``retrying`` while user code fails on an event.

        ``catching_up`` while storage may hold events it has not received;
        ``max_capacity`` when events wait but every subscriber is full
        (back-pressure); ``subscribed`` otherwise. (The scheduler adds
        ``initial``, ``disconnected`` and ``unsubscribed``, which concern the
        lock and the subscribers rather than this bookkeeping.)
        """
        if self.failure is not None:
            return RETRYING
        if self.behind:
            return CATCHING_UP
        if self.queue and all(slot.capacity <= 0 for slot in self.subscribers):
            return MAX_CAPACITY
        return SUBSCRIBED

    # -- checkpoints ---------------------------------------------------------------

    @property
    def checkpoint(self) -> int:
        """One below the lowest event still pending; else the last received."""
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            done.discard(heapq.heappop(pending))
        return pending[0] - 1 if pending else self.last_received

    @property
    def bookkeeping_size(self) -> int:
        """Entries held for the checkpoint: bounded by what is queued and in flight."""
        return len(self._pending) + len(self._done)

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
