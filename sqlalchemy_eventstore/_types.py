"""Value types of the public API: what goes into the store and what comes out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, Literal, TypeVar

__all__ = [
    "ALL_STREAM",
    "ANY_VERSION",
    "CURRENT",
    "NO_STREAM",
    "ORIGIN",
    "STREAM_EXISTS",
    "EventData",
    "ExpectedVersion",
    "Page",
    "ParkedEvent",
    "RecordedEvent",
    "SnapshotData",
    "StreamInfo",
]

#: The identity of the global stream holding every event in commit order.
ALL_STREAM: Final = "$all"


class _Marker(enum.Enum):
    """Symbolic expected versions and subscription start positions."""

    ANY_VERSION = "any_version"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"
    ORIGIN = "origin"
    CURRENT = "current"

    def __repr__(self) -> str:
        return self.name


#: Append without a concurrency check (the stream may or may not exist).
ANY_VERSION: Final = _Marker.ANY_VERSION
#: Append only if the stream does not exist yet.
NO_STREAM: Final = _Marker.NO_STREAM
#: Append only if the stream already exists, at any version.
STREAM_EXISTS: Final = _Marker.STREAM_EXISTS
#: Subscribe from the first event.
ORIGIN: Final = _Marker.ORIGIN
#: Subscribe from the events appended after the subscription is created.
CURRENT: Final = _Marker.CURRENT

ExpectedVersion = int | Literal[_Marker.ANY_VERSION, _Marker.NO_STREAM, _Marker.STREAM_EXISTS]


@dataclass(frozen=True)
class EventData:
    """An event to append. ``event_type`` may be None when ``data`` is a class
    instance: it then becomes ``"<module>.<qualname>"`` of that class."""

    event_type: str | None
    data: Any
    metadata: Any = None
    event_id: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class RecordedEvent:
    """An event as stored. ``event_number`` is its position in the stream that
    was read (the global position when reading ``$all``); ``stream_uuid`` and
    ``stream_version`` always name the event's original stream."""

    event_number: int
    event_id: str
    stream_uuid: str
    stream_version: int
    event_type: str
    data: Any
    metadata: Any
    causation_id: str | None
    correlation_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class SnapshotData:
    """The state of a source (an aggregate, a process) at ``source_version``."""

    source_uuid: str
    source_version: int
    source_type: str
    data: Any
    metadata: Any = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class StreamInfo:
    """A stream's identity, version and status (``"created"`` or ``"deleted"``)."""

    stream_uuid: str
    stream_id: int
    stream_version: int
    created_at: datetime
    deleted_at: datetime | None
    status: str


@dataclass(frozen=True)
class ParkedEvent:
    """An event a persistent subscription parked after its user code kept failing.

    ``event.event_number`` is the position in the subscription's stream
    (``stream_uuid``, ``$all`` for an all-streams subscription); ``reason``
    names the exception's class and message; ``parked_at`` is timezone-aware.
    An event the serializer could not read holds its stored bytes (or jsonb
    text) as ``data``/``metadata``.
    """

    event: RecordedEvent
    subscription_name: str
    stream_uuid: str
    reason: str
    parked_at: datetime


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a paginated query."""

    entries: list[T] = field(default_factory=list)
    page_number: int = 1
    page_size: int = 50
    total_entries: int = 0
    total_pages: int = 0


for _cls in (EventData, RecordedEvent, SnapshotData, StreamInfo, Page, ParkedEvent):
    _cls.__module__ = "sqlalchemy_eventstore"
