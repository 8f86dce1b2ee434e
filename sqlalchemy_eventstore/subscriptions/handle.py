"""``Subscription``: what ``subscribe*`` returns -- a mailbox, or the handle of a handler."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._types import RecordedEvent

if TYPE_CHECKING:
    from .runner import Runner

__all__ = ["Subscription"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")

Handler = Callable[[list[Any]], Any]


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
    ) -> None:
        self._runner = runner
        self._key = key
        self.stream_uuid = stream_uuid
        self.subscription_name = subscription_name
        self.handler = handler
        self.transient = transient
        # Each batch with the highest event number it holds (what acking it means).
        self._mailbox: queue.Queue[tuple[list[Any], int]] = queue.Queue()
        self._subscribed = threading.Event()
        self._status = "initial"
        self._stopped = threading.Event()
        # id(mapped value) -> event number, so a mailbox's acks of mapped values
        # resolve; guarded by _numbers_lock (the runner adds, acks remove).
        self._numbers: dict[int, int] = {}
        self._numbers_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        if handler is not None:
            self._worker = threading.Thread(
                target=self._work, name=f"eventstore-handler-{subscription_name}", daemon=True
            )
            self._worker.start()

    def __repr__(self) -> str:
        return f"<Subscription {self.subscription_name or '(transient)'} on {self.stream_uuid!r}>"

    # -- called by the runner ---------------------------------------------------

    def _deliver(self, batch: list[Any], numbers: list[int]) -> None:
        # Only a mailbox of an ackable subscription acks values it was given; a
        # handler's batch is acked by its event numbers (mapped values may be
        # anything, equal ints included), and a plain transient takes no acks.
        if self.handler is None and not self._plain_transient:
            with self._numbers_lock:
                for value, number in zip(batch, numbers, strict=True):
                    self._numbers[id(value)] = number
        self._mailbox.put((batch, max(numbers, default=0)))

    @property
    def _plain_transient(self) -> bool:
        return self.transient and self.subscription_name is None

    def _set_subscribed(self) -> None:
        self._subscribed.set()
        if self._status in ("initial", "disconnected"):
            self._status = "subscribed"  # the scheduler refines it on its next pass

    def _stop(self) -> None:
        self._stopped.set()
        self._subscribed.clear()
        self._status = "unsubscribed"

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
        its lock: another process runs it, or the lock was lost) or
        ``"unsubscribed"``. A transient ``subscribe()`` is ``"subscribed"``
        from the start."""
        return self._status

    def receive(self, timeout: float | None = None) -> list[Any]:
        """The next batch of events; TimeoutError when none arrives in time."""
        if self.handler is not None:
            raise RuntimeError("this subscription has a handler; it receives the events")
        try:
            return self._mailbox.get(timeout=timeout)[0]
        except queue.Empty:
            raise TimeoutError(f"no events within {timeout} s") from None

    def _number(self, item: Any) -> int:
        if isinstance(item, RecordedEvent):
            return item.event_number
        if isinstance(item, bool) or not isinstance(item, int):
            with self._numbers_lock:
                number = self._numbers.get(id(item))
            if number is None:
                raise TypeError(
                    "ack takes a batch, a RecordedEvent or an event_number, got "
                    f"{type(item).__name__}"
                )
            return number
        return item

    def ack(self, events: Any) -> None:
        """Acknowledge a batch, one event, or an event_number (and all before it).

        Returns once the acknowledgement is recorded.
        """
        if self._plain_transient:
            return  # plain transient subscriptions take no acks
        if isinstance(events, list):
            if not events:
                return
            number = max(self._number(item) for item in events)
        else:
            number = self._number(events)
        self._ack_number(number)

    def _ack_number(self, number: int) -> None:
        self._runner.ack(self._key, self, number)
        with self._numbers_lock:
            for key in [k for k, n in self._numbers.items() if n <= number]:
                del self._numbers[key]

    def unsubscribe(self) -> None:
        """Stop this subscriber; a persistent subscription keeps its checkpoint."""
        self._runner.unsubscribe(self._key, self)

    # -- handler mode ----------------------------------------------------------------

    def _work(self) -> None:
        assert self.handler is not None
        backoff = 0.05
        while not self._stopped.is_set():
            try:
                batch, last = self._mailbox.get(timeout=0.2)
            except queue.Empty:
                continue
            while not self._stopped.is_set():
                try:
                    self.handler(batch)
                except Exception:
                    # Not acknowledged: redelivered after a bounded backoff.
                    logger.exception("subscription handler failed; retrying in %.2f s", backoff)
                    self._stopped.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.05
                try:
                    if not self._plain_transient:
                        self._ack_number(last)
                except Exception:
                    logger.exception("could not acknowledge a handled batch")
                break

    def _join(self, timeout: float) -> None:
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)
