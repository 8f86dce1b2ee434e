"""Events for the storage tests, like the reference's EventFactory."""

from __future__ import annotations

import uuid

from sqlalchemy_eventstore import EventData


def create_events(n: int, start: int = 1) -> list[EventData]:
    return [
        EventData(
            "tests.EventFactory.Event",
            {"event": start + i},
            {"user": "user@example.com"},
            causation_id=str(uuid.uuid4()),
            correlation_id=str(uuid.uuid4()),
        )
        for i in range(n)
    ]


def new_stream() -> str:
    return str(uuid.uuid4())
