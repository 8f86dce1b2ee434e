"""``Subscription``: what ``subscribe*`` returns -- a mailbox, or the handle of a handler."""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._types import RecordedEvent
from ..errors import UnexpectedAckError
from ..stats import SubscriptionStats
from .state import RETRYING, backoff, describe

if TYPE_CHECKING:
    from .runner import Runner

__all__ = ["Subscription", "Unsubscribed"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")

Handler = Callable[[list[Any]], Any]

# Batches withdrawn at a lock loss that the subscriber may still ack (quietly
# ignored); beyond this many the oldest are forgotten (their acks then raise).
_MAX_STALE = 10_000


class Unsubscribed(TimeoutError):
    """``receive`` on a subscriber that is unsubscribed (or whose store closed):
    a TimeoutError, as nothing will ever arrive; ``async for`` ends on it."""


@dataclass(eq=False)
class _Delivery:
    """One batch sent to this subscriber and not fully acked: the list object
    the subscriber received, the lifetime (epoch) it belongs to, and its
    events' numbers in sending order."""

    batch: list[Any]
    epoch: int
    numbers: list[int]


class Subscription:
    """One subscriber of a subscription.

    In mailbox mode (no handler) call :meth:`receive` for each batch and
    :meth:`ack` what you handled. With a handler, the store calls it on a
    worker thread of its own, one batch at a time, and acks when it returns.
    """

    def __init__(
        self,
        runner: Runner,
        key: tuple[str, str],
        *,
        stream_uuid: str,
        subscription_name: str | None,
        handler: Handler | None,
        transient: bool,
        max_retries: int | None = None,
    ) -> None:
        self._runner = runner
        self._key = key
        self.stream_uuid = stream_uuid
        self.subscription_name = subscription_name
        self.handler = handler
        self.transient = transient
        self._max_retries = max_retries
        # (batch, epoch, numbers in sending order); None wakes a stopping worker.
        self._mailbox: queue.Queue[tuple[list[Any], int, list[int]] | None] = queue.Queue()
        self._subscribed = threading.Event()
        self._status = "initial"
        self._stopped = threading.Event()
        # The lifetime whose deliveries count: the runner bumps it when the
        # subscription (re)takes its lock; batches of older ones are stale.
        self._epoch = 0
        self._deliveries: list[_Delivery] = []
        self._deliveries_lock = threading.Lock()
        self._last_error: BaseException | None = None
        self._handler_failing = False
        # Handler calls retried after a failure (stats).
        self._retries = 0
        # The handler's error on an event it parked: shown until the next success.
        self._parked_error: BaseException | None = None
        # (epoch, event_number) taken back by the runner when an earlier event
        # of their partition key was parked: the worker skips them (handler mode).
        self._taken_back: set[tuple[int, int]] = set()
        # Mailbox mode: the thread that last called receive(), held weakly.
        # Once it has ended with events still unacked, the subscriber is
        # gone (the runner checks, see ``_consumer_died``).
        self._consumer: weakref.ref[threading.Thread] | None = None
        self._worker: threading.Thread | None = None
        if handler is not None:
            self._worker = threading.Thread(
                target=self._work, name=f"eventstore-handler-{subscription_name}", daemon=True
            )
            self._worker.start()

    def __repr__(self) -> str:
        return f"<Subscription {self.subscription_name or '(transient)'} on {self.stream_uuid!r}>"

    # -- called by the runner ---------------------------------------------------

    def _deliver(self, batch: list[Any], numbers: list[int], epoch: int = 0) -> None:
        if self.handler is None and not self._plain_transient:
            with self._deliveries_lock:
                self._deliveries.append(_Delivery(batch, epoch, numbers))
        self._mailbox.put((batch, epoch, numbers))

    def _begin(self, epoch: int) -> None:
        """A new lifetime: the subscription holds its lock again."""
        self._epoch = epoch
        self._subscribed.set()
        if self._status in ("initial", "disconnected"):
            self._status = "subscribed"  # the scheduler refines it on its next pass

    def _withdraw(self) -> None:
        """The lock was lost: what was queued here is withdrawn (never received),
        and acks of what was received are ignored quietly from now on."""
        self._epoch = -1
        self._subscribed.clear()
        while True:
            try:
                item = self._mailbox.get_nowait()
            except queue.Empty:
                break
            if item is None:  # keep a stopping worker's wake-up
                self._mailbox.put(None)
                break
        with self._deliveries_lock:
            del self._deliveries[:-_MAX_STALE]

    @property
    def _plain_transient(self) -> bool:
        return self.transient and self.subscription_name is None

    def _set_subscribed(self) -> None:
        self._begin(self._epoch)

    def _stop(self) -> None:
        self._stopped.set()
        self._subscribed.clear()
        self._status = "unsubscribed"
        self._mailbox.put(None)

    # -- public --------------------------------------------------------------------

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Wait until the subscription is subscribed (holds its lock, caught up or
        catching up); True once it is."""
        return self._subscribed.wait(timeout)

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    @property
    def status(self) -> str:
        """The subscription's state: ``"initial"``, ``"catching_up"``,
        ``"subscribed"``, ``"max_capacity"``, ``"disconnected"`` (not holding
        its lock: another process runs it, or the lock was lost),
        ``"retrying"`` (user code or the serializer fails on an event, which
        is retried with backoff: see :attr:`last_error`) or
        ``"unsubscribed"``. A transient ``subscribe()`` is ``"subscribed"``
        from the start."""
        if self._handler_failing and self._status != "unsubscribed":
            return RETRYING
        return self._status

    @property
    def stats(self) -> SubscriptionStats:
        """The subscription's figures in this process now: lag behind the head of
        its stream, checkpoint age, events in flight, parked events, retries and
        status (see :class:`~sqlalchemy_eventstore.SubscriptionStats`)."""
        return self._runner.stats_of(self)

    @property
    def last_error(self) -> BaseException | None:
        """The exception user code (handler, selector, mapper, partition_by) or
        the serializer raised on the event being retried; None again after
        the next success."""
        return self._last_error

    def receive(self, timeout: float | None = None) -> list[Any]:
        """The next batch of events; TimeoutError when none arrives in time."""
        if self.handler is not None:
            raise RuntimeError("this subscription has a handler; it receives the events")
        self._consumer = weakref.ref(threading.current_thread())
        while True:
            try:
                item = self._mailbox.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no events within {timeout} s") from None
            batch = self._accept(item)
            if batch is not None:
                return batch

    def _accept(self, item: tuple[list[Any], int, list[int]] | None) -> list[Any] | None:
        """The batch of a mailbox item, None for a withdrawn one; raises
        :class:`Unsubscribed` at the stop mark (kept for later calls)."""
        if item is None:
            self._mailbox.put(None)  # stays unsubscribed: later calls time out too
            raise Unsubscribed("this subscriber is unsubscribed")
        batch, epoch, _ = item
        if epoch == self._epoch or self._plain_transient:
            return batch
        return None  # from a lifetime that ended (a lost lock): withdrawn, skip it

    def _resolve(self, events: Any) -> tuple[int, int] | None:
        """(epoch, event_number) the ack means; None for an empty batch."""
        with self._deliveries_lock:
            deliveries = list(self._deliveries)
        if isinstance(events, list):
            for delivery in deliveries:
                if delivery.batch is events:
                    return delivery.epoch, delivery.numbers[-1]
            if not events:
                return None
            # Not a batch as received (a slice, say): it acks its last item.
            events = events[-1]
            if isinstance(events, list):
                raise TypeError("ack takes a batch, a RecordedEvent or an event_number")
            if not isinstance(events, (RecordedEvent, int)) or isinstance(events, bool):
                return self._resolve_value(deliveries, events)
        if isinstance(events, RecordedEvent):
            for delivery in deliveries:
                if any(value is events for value in delivery.batch):
                    return delivery.epoch, events.event_number
            number = events.event_number
        elif isinstance(events, int) and not isinstance(events, bool):
            number = events
        else:
            raise TypeError(
                "ack takes a batch, a RecordedEvent or an event_number, got "
                f"{type(events).__name__}"
            )
        for delivery in reversed(deliveries):
            if number in delivery.numbers:
                return delivery.epoch, number
        raise UnexpectedAckError(f"event {number} is not in flight to this subscriber")

    @staticmethod
    def _resolve_value(deliveries: list[_Delivery], value: Any) -> tuple[int, int]:
        """A mapped value (the last of a list that is not a batch as received):
        the one delivered position holding that very object, if unambiguous."""
        found = [
            (d.epoch, number)
            for d in deliveries
            for item, number in zip(d.batch[-len(d.numbers) :], d.numbers, strict=True)
            if item is value
        ]
        if len(found) != 1:
            raise TypeError(
                "ack takes a batch as received, a RecordedEvent or an event_number "
                f"(a {type(value).__name__} value does not name one event)"
            )
        return found[0]

    def ack(self, events: Any) -> None:
        """Acknowledge a batch, one event, or an event_number, and every event
        sent to this subscriber before it.

        A batch (the very list :meth:`receive` returned) acks its last event
        in sending order. Acking what is not in flight (never sent, already
        acked) raises UnexpectedAckError; an ack of a batch received before
        the subscription lost its lock is ignored. Returns once the
        acknowledgement is recorded.
        """
        if self._plain_transient:
            return  # plain transient subscriptions take no acks
        resolved = self._resolve(events)
        if resolved is None:
            return
        epoch, number = resolved
        self._runner.ack(self._key, self, epoch, number)
        self._forget(epoch, number)

    def _forget(self, epoch: int, number: int) -> None:
        """Drop the deliveries an ack of ``number`` (in ``epoch``) covered."""
        with self._deliveries_lock:
            index = next(
                (
                    i
                    for i, d in enumerate(self._deliveries)
                    if d.epoch == epoch and number in d.numbers
                ),
                -1,
            )
            if index < 0:
                return
            delivery = self._deliveries[index]
            if delivery.epoch != self._epoch:
                # From a lifetime that ended: kept (bounded), so acking it
                # again stays quiet rather than matching a redelivery.
                return
            position = delivery.numbers.index(number)
            kept = [d for d in self._deliveries[:index] if d.epoch != epoch]
            if position + 1 < len(delivery.numbers):
                delivery.numbers = delivery.numbers[position + 1 :]
                kept.append(delivery)
            self._deliveries[: index + 1] = kept

    @property
    def _consumer_died(self) -> bool:
        """Mailbox mode: the thread that last called receive() has ended (a
        mailbox never received from has no consumer, so never died)."""
        consumer = self._consumer
        if consumer is None or self._stopped.is_set():
            return False
        thread = consumer()
        return thread is None or not thread.is_alive()

    @property
    def _in_flight_deliveries(self) -> int:
        with self._deliveries_lock:
            return len(self._deliveries)

    def unsubscribe(self) -> None:
        """Stop this subscriber; a persistent subscription keeps its checkpoint."""
        self._runner.unsubscribe(self._key, self)

    # -- handler mode ----------------------------------------------------------------

    def _work(self) -> None:
        try:
            while not self._stopped.is_set():
                item = self._mailbox.get()
                if item is None:
                    break
                batch, epoch, numbers = item
                if epoch != self._epoch and not self._plain_transient:
                    continue  # withdrawn at a lock loss
                self._handle(batch, epoch, numbers)
        except BaseException as error:
            # The worker dies (an exception outside Exception: SystemExit,
            # KeyboardInterrupt, ...): the subscriber leaves and its unacked
            # events go to the subscription's other subscribers, in partition
            # order, or wait for the next subscriber.
            self._last_error = error
            logger.error("subscription handler thread died: %r", error)
            self._stopped.set()
            self._subscribed.clear()
            self._status = "unsubscribed"
            self._runner.subscriber_died(self._key, self)

    def _live(self, epoch: int) -> bool:
        return not self._stopped.is_set() and (epoch == self._epoch or self._plain_transient)

    def _call(self, batch: list[Any], epoch: int) -> bool | None:
        """Call the handler until it returns (True), the retries are spent
        (False) or the batch no longer counts (None)."""
        attempts = 0
        while self._live(epoch):
            try:
                self._invoke(batch)
            except Exception as error:
                attempts += 1
                if self._last_error is None or describe(self._last_error) != describe(error):
                    logger.warning(
                        "subscription %r: handler failed (attempt %d): %s",
                        self.subscription_name,
                        attempts,
                        describe(error),
                        exc_info=error,
                    )
                self._last_error = error
                self._handler_failing = True
                if self._plain_transient:
                    return False  # nothing to redeliver to: a transient moves on
                if self._max_retries is not None and attempts > self._max_retries:
                    return False
                self._retries += 1
                self._stopped.wait(backoff(attempts))
                continue
            if self._handler_failing or (
                self._parked_error is not None and self._last_error is self._parked_error
            ):
                self._handler_failing = False
                self._last_error = None
            self._parked_error = None
            return True
        return None

    def _invoke(self, batch: list[Any]) -> None:
        """Call the handler with ``batch`` on this worker thread (the async
        API's handle awaits an async handler on its event loop instead)."""
        self.handler(batch)  # type: ignore[misc]

    def _handle(self, batch: list[Any], epoch: int, numbers: list[int]) -> None:
        if self._taken_back:
            self._taken_back = {t for t in self._taken_back if t[0] == epoch}
            kept = [
                (value, number)
                for value, number in zip(batch, numbers, strict=True)
                if (epoch, number) not in self._taken_back
            ]
            if len(kept) < len(numbers):
                self._taken_back.difference_update((epoch, n) for n in numbers)
                if not kept:
                    return
                batch = [value for value, _ in kept]
                numbers = [number for _, number in kept]
        outcome = self._call(batch, epoch)
        if self._plain_transient or outcome is None:
            return
        if outcome:
            self._runner.ack(self._key, self, epoch, numbers[-1], wait=False)
            return
        if len(batch) > 1:
            # The batch spent its retries: try its events one at a time, so
            # only events that fail on their own are parked.
            for value, number in zip(batch, numbers, strict=True):
                if (epoch, number) in self._taken_back:
                    self._taken_back.discard((epoch, number))
                    continue  # parked behind an earlier event of its key
                single = self._call([value], epoch)
                if single is None:
                    return
                if single:
                    self._runner.ack(self._key, self, epoch, number, wait=False)
                else:
                    self._park(epoch, number)
            return
        self._park(epoch, numbers[0])

    def _park(self, epoch: int, number: int) -> None:
        reason = describe(self._last_error) if self._last_error else "handler failed"
        behind = self._runner.park(self._key, self, epoch, number, reason)
        self._taken_back.update((epoch, n) for n in behind)
        self._handler_failing = False
        self._parked_error = self._last_error

    def _join(self, timeout: float) -> None:
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)
