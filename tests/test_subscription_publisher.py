"""Live publication to transient subscribers, without a database.

A transient subscriber joining a stream that another transient already
tracks must not receive events committed before it subscribed, even when
their notification is still on its way (issue: the tracked position lags).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy_eventstore import RecordedEvent
from sqlalchemy_eventstore.notifications.payload import Notification
from sqlalchemy_eventstore.notifications.publisher import Publisher


def event(number: int) -> RecordedEvent:
    return RecordedEvent(
        event_number=number,
        event_id=f"00000000-0000-0000-0000-{number:012d}",
        stream_uuid="s",
        stream_version=number,
        event_type="T",
        data={},
        metadata=None,
        causation_id=None,
        correlation_id=None,
        created_at=datetime.now(timezone.utc),
    )


class Storage:
    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []

    def read(self, stream: str, start: int, count: int) -> list[Any]:
        return [e for e in self.events if e.event_number >= start][:count]

    def version(self, stream: str) -> int:
        return len(self.events)


class Targets:
    def live_streams(self) -> set[str]:
        return set()

    def interested(self, stream_uuid: str) -> bool:
        return False

    def published(self, stream_uuid: str, events: list[Any]) -> None:
        pass

    def behind(self, stream_uuid: str | None) -> None:
        pass


class Inbox:
    def __init__(self) -> None:
        self.numbers: list[int] = []

    def _deliver(self, batch: list[Any], numbers: list[int]) -> None:
        self.numbers.extend(numbers)


def test_a_newcomer_gets_nothing_committed_before_it_subscribed():
    storage = Storage()
    publisher = Publisher(storage.read, storage.version, Targets())
    first, second = Inbox(), Inbox()
    publisher.add_transient("s", first, None, None)
    storage.events.append(event(1))  # committed; its notification not yet handled
    publisher.add_transient("s", second, None, None)
    publisher.on_notification(Notification("s", 1, 1, 1))
    storage.events.append(event(2))
    publisher.on_notification(Notification("s", 1, 2, 2))
    assert first.numbers == [1, 2]
    assert second.numbers == [2]
