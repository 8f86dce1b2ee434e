"""The scheduler's inbox: calls first, notifications coalesced.

Calls (acks, subscribe, unsubscribe, ...) are taken all at once, before any
storage read, so an ack never waits behind a read. Notifications coalesce:
whatever arrives while the scheduler is busy (catching up, say) leaves one
pending "stream S has new events up to n" per stream, not one read per NOTIFY.
The scheduler blocks on the inbox until something arrives or its next timer
is due -- it never polls.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from ..notifications.payload import Notification

__all__ = ["Inbox", "Taken"]

Call = tuple[Callable[[], Any], "Future[Any] | None"]


@dataclass
class Taken:
    """What one scheduler pass takes from the inbox."""

    calls: list[Call] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    reconnected: bool = False
    parked: set[int] = field(default_factory=set)


class Inbox:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._calls: deque[Call] = deque()
        self._notifications: dict[str, Notification] = {}
        self._reconnected = False
        self._parked: set[int] = set()
        self._woken = False

    def call(self, work: Callable[[], Any], future: Future[Any] | None = None) -> None:
        with self._cond:
            self._calls.append((work, future))
            self._cond.notify()

    def notify(self, notification: Notification) -> None:
        """Merge with a pending notification of the same stream (one range)."""
        with self._cond:
            pending = self._notifications.get(notification.stream_uuid)
            if pending is not None and notification.last_version >= notification.first_version:
                notification = replace(
                    pending,
                    first_version=min(pending.first_version, notification.first_version),
                    last_version=max(pending.last_version, notification.last_version),
                )
            elif pending is not None:
                notification = pending  # a soft delete adds no events
            self._notifications[notification.stream_uuid] = notification
            self._cond.notify()

    def reconnected(self) -> None:
        with self._cond:
            self._reconnected = True
            self._cond.notify()

    def wake(self) -> None:
        """Wake the scheduler for a pass, with nothing to hand it."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def parked(self, subscription_id: int) -> None:
        with self._cond:
            self._parked.add(subscription_id)
            self._cond.notify()

    def _empty(self) -> bool:
        return not (
            self._calls or self._notifications or self._reconnected or self._parked or self._woken
        )

    def take(self, timeout: float) -> Taken:
        """Everything pending, waiting up to ``timeout`` seconds for something."""
        with self._cond:
            if self._empty() and timeout > 0:
                self._cond.wait(timeout)
            taken = Taken(
                calls=list(self._calls),
                notifications=list(self._notifications.values()),
                reconnected=self._reconnected,
                parked=set(self._parked),
            )
            self._calls.clear()
            self._notifications.clear()
            self._reconnected = False
            self._parked.clear()
            self._woken = False
            return taken

    def drain_calls(self) -> list[Call]:
        with self._cond:
            calls = list(self._calls)
            self._calls.clear()
            return calls
