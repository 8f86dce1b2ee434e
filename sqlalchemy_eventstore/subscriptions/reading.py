"""What the subscription runner needs from storage, and nothing of the store facade.

:class:`Backend` is the runner's narrow interface: its way to the database
(a :class:`~.io.StorageIO`: the sync store's engine, or the async store's
loop), the schema and its statements, the serializer and the retry interval.
The store builds one; the import graph points from the stores to the
subscriptions, never back.

Reads here deserialize each event on its own: an event the serializer cannot
read comes back as an :class:`Unreadable` carrying the error and the stored
bytes (or jsonb text), so a subscription retries or parks that one event
instead of failing the whole page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._types import RecordedEvent
from ..errors import StreamDeletedError, StreamNotFoundError
from ..serializers import Serializer
from ..storage import reader
from ..storage.sql import Statements
from .io import StorageIO

__all__ = ["Backend", "Unreadable", "convert", "current_version", "fetch_rows", "read_page"]


@dataclass(frozen=True)
class Unreadable:
    """A stored event the serializer could not read."""

    event_number: int
    event_id: str
    stream_uuid: str
    stream_version: int
    error: BaseException


@dataclass(frozen=True)
class Backend:
    """The storage side of subscriptions."""

    io: StorageIO
    schema: str
    statements: Statements
    serializer: Serializer
    retry_interval: float
    # global_order="sequencer": asks the store to number waiting appends into
    # $all soon, off the runner's thread (None in lock mode).
    sequence_soon: Callable[[], None] | None = None
    # Polling mode (see subscriptions.polling): seconds between polls, and why
    # to poll from the start (None: LISTEN, unless it turns out not to hold).
    poll_interval: float = 1.0
    polling_reason: str | None = None
    # Where LISTEN and the advisory locks connect, for messages (no password).
    session_label: str = "the session URL"


def _convert(row: Any, serializer: Serializer) -> RecordedEvent | Unreadable:
    try:
        return reader.to_recorded_event(row, serializer)
    except Exception as error:
        return Unreadable(
            event_number=int(row[2]),
            event_id=str(row[3]),
            stream_uuid=str(row[4]),
            stream_version=int(row[5]),
            error=error,
        )


def fetch_rows(backend: Backend, stream_uuid: str, start: int, count: int) -> list[Any]:
    """Up to ``count`` raw rows from ``start`` on (for :func:`convert`); a
    missing or deleted stream has none. Safe on any thread: the catch-up
    reads the next page with it while the current one is being delivered."""
    statements = backend.statements
    try:
        return backend.io.read(
            lambda: reader.read_rows_op(statements, stream_uuid, start, count, forward=True)
        )
    except (StreamNotFoundError, StreamDeletedError):
        return []


def convert(rows: list[Any], serializer: Serializer) -> list[RecordedEvent | Unreadable]:
    """Rows of :func:`fetch_rows` as events, each deserialized on its own."""
    return [_convert(row, serializer) for row in rows]


def read_page(
    backend: Backend, stream_uuid: str, start: int, count: int
) -> list[RecordedEvent | Unreadable]:
    """Up to ``count`` events from ``start`` on; a missing or deleted stream has none."""
    return convert(fetch_rows(backend, stream_uuid, start, count), backend.serializer)


def read_events(backend: Backend, stream_uuid: str, numbers: list[int]) -> list[RecordedEvent]:
    """The readable events of ``numbers`` (ascending), one short read each."""
    found: list[RecordedEvent] = []
    for number in numbers:
        for item in read_page(backend, stream_uuid, number, 1):
            if isinstance(item, RecordedEvent) and item.event_number == number:
                found.append(item)
    return found


def current_version(backend: Backend, stream_uuid: str) -> int:
    """The stream's version (the head of ``$all``); 0 when missing or deleted."""
    try:
        info = backend.io.read(lambda: reader.stream_info(backend.statements, stream_uuid))
        return info.stream_version
    except (StreamNotFoundError, StreamDeletedError):
        return 0
