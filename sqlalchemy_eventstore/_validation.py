"""Argument checks run before any SQL, each error naming the bad argument."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from ._types import (
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    EventData,
    ExpectedVersion,
    RecordedEvent,
    SnapshotData,
)
from .serializers import Serializer, type_name

__all__ = [
    "check_count",
    "check_event_numbers",
    "check_expected_version",
    "check_int",
    "check_stream_uuid",
    "check_uuid",
    "event_ids_to_link",
    "prepare_events",
    "serialize_snapshot",
]

# Values that are plain data, not "an instance of a class" an event type can be
# inferred from.
_PLAIN = (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, bool, type(None))


def check_stream_uuid(value: Any, name: str = "stream_uuid") -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must be a non-empty str")
    return value


def check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_callable(value: Any, name: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


def check_count(value: Any, name: str = "count") -> int:
    return check_int(value, name, minimum=0)


def check_expected_version(
    value: Any, *, allowed: tuple[Any, ...] = (ANY_VERSION, NO_STREAM, STREAM_EXISTS)
) -> ExpectedVersion:
    if any(value is marker for marker in allowed):
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool) or not isinstance(value, int):
        names = ", ".join(repr(m) for m in allowed)
        raise TypeError(f"expected_version must be an int >= 0 or one of {names}, got {value!r}")
    if value < 0:
        raise ValueError(f"expected_version must be >= 0, got {value}")
    return value


def check_uuid(value: Any, name: str, *, optional: bool = True) -> str | None:
    """A UUID (str or uuid.UUID) in canonical string form."""
    if value is None and optional:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a UUID string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"{name} must be a UUID string, got {value!r}") from None


def _check_events_list(events: Any, name: str) -> Sequence[Any]:
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise TypeError(f"{name} must be a list, got {type(events).__name__}")
    if len(events) == 0:
        raise ValueError(f"{name} must not be empty")
    return events


def _serialize(serializer: Serializer, term: Any, type_: str | None, name: str) -> Any:
    try:
        return serializer.serialize(term, type_)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name} cannot be serialized: {error}") from error
    except Exception as error:
        raise ValueError(f"{name} cannot be serialized: {error}") from error


def prepare_events(events: Any, serializer: Serializer) -> dict[str, list[Any]]:
    """Validate and serialize events into the append statement's column arrays."""
    events = _check_events_list(events, "events")
    columns: dict[str, list[Any]] = {
        "event_ids": [],
        "event_types": [],
        "causation_ids": [],
        "correlation_ids": [],
        "data": [],
        "metadata": [],
    }
    for i, event in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(event, EventData):
            raise TypeError(f"{where} must be an EventData, got {type(event).__name__}")
        event_type = event.event_type
        if event_type is None:
            if isinstance(event.data, _PLAIN):
                raise ValueError(
                    f"{where}.event_type is required when data is not a class instance"
                )
            event_type = type_name(type(event.data))
        elif not isinstance(event_type, str) or not event_type:
            raise TypeError(f"{where}.event_type must be a non-empty str or None")
        event_id = check_uuid(event.event_id, f"{where}.event_id") or str(uuid.uuid4())
        columns["event_ids"].append(event_id)
        columns["event_types"].append(event_type)
        columns["causation_ids"].append(check_uuid(event.causation_id, f"{where}.causation_id"))
        columns["correlation_ids"].append(
            check_uuid(event.correlation_id, f"{where}.correlation_id")
        )
        columns["data"].append(_serialize(serializer, event.data, event_type, f"{where}.data"))
        columns["metadata"].append(
            None
            if event.metadata is None
            else _serialize(serializer, event.metadata, None, f"{where}.metadata")
        )
    return columns


def serialize_snapshot(snapshot: SnapshotData, serializer: Serializer) -> tuple[Any, Any]:
    """A snapshot's data and metadata as column values; errors name the field."""
    data = _serialize(serializer, snapshot.data, snapshot.source_type, "snapshot.data")
    metadata = (
        None
        if snapshot.metadata is None
        else _serialize(serializer, snapshot.metadata, None, "snapshot.metadata")
    )
    return data, metadata


def event_ids_to_link(events_or_event_ids: Any) -> list[str]:
    """Event ids from RecordedEvents and/or id strings."""
    items = _check_events_list(events_or_event_ids, "events_or_event_ids")
    ids: list[str] = []
    for i, item in enumerate(items):
        value = item.event_id if isinstance(item, RecordedEvent) else item
        checked = check_uuid(value, f"events_or_event_ids[{i}]", optional=False)
        assert checked is not None
        ids.append(checked)
    return ids


def check_event_numbers(value: Any, name: str = "event_numbers") -> list[int] | None:
    """None (meaning all), or a list/tuple of event numbers, each an int >= 1."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be None or a list of ints, got {type(value).__name__}")
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"{name} must hold ints, got {type(number).__name__}")
        if number < 1:
            raise ValueError(f"{name} must hold event numbers >= 1, got {number}")
    return list(value)
