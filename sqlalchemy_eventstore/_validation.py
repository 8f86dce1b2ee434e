"""Argument checks run before any SQL, each error naming the bad argument."""

from __future__ import annotations

import math
import re
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
    "check_schema",
    "check_stream_uuid",
    "check_timeout",
    "check_uuid",
    "event_ids_to_link",
    "prepare_events",
    "serialize_snapshot",
]

# Values that are plain data, not "an instance of a class" an event type can be
# inferred from.
_PLAIN = (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, bool, type(None))


#: The longest NOTIFY channel name PostgreSQL accepts (NAMEDATALEN - 1), in bytes.
_MAX_CHANNEL_BYTES = 63
#: Suffixes of the store's NOTIFY channels, ``"<schema>.events"`` and
#: ``"<schema>.parked"``: the longest bounds the schema name.
_CHANNEL_SUFFIXES = (".events", ".parked")
MAX_SCHEMA_BYTES = _MAX_CHANNEL_BYTES - max(len(suffix) for suffix in _CHANNEL_SUFFIXES)


def check_schema(value: Any, name: str = "schema") -> str:
    """A Postgres schema name every part of the store can use.

    Any identifier works (it is always quoted), except: one whose NOTIFY
    channels would pass PostgreSQL's 63-byte limit (so at most
    ``MAX_SCHEMA_BYTES`` bytes of UTF-8); one holding ``%`` (the drivers read
    it as a parameter marker in statements that embed the name); a NUL
    character; and the ``pg_`` prefix PostgreSQL reserves.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must be a non-empty str")
    size = len(value.encode("utf-8"))
    if size > MAX_SCHEMA_BYTES:
        raise ValueError(
            f"{name} must be at most {MAX_SCHEMA_BYTES} bytes of UTF-8 (the NOTIFY channels"
            f" '<{name}>.events' and '<{name}>.parked' must fit in 63 bytes), got {size}"
        )
    if "%" in value:
        raise ValueError(f"{name} must not contain '%', got {value!r}")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain a NUL character")
    if value.startswith("pg_"):
        raise ValueError(f"{name} must not start with 'pg_' (reserved by PostgreSQL)")
    return value


def check_timeout(value: Any, name: str = "timeout") -> float | None:
    """Seconds (a positive finite number), or None for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be > 0 seconds (or None for no limit), got {value!r}")
    return float(value)


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


# A UUID already in the canonical form str(uuid.UUID(...)) gives: taken as is.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_is_canonical_uuid = _CANONICAL_UUID.fullmatch


def check_uuid(value: Any, name: str, *, optional: bool = True) -> str | None:
    """A UUID (str or uuid.UUID) in canonical string form."""
    if value is None and optional:
        return None
    if type(value) is str and _is_canonical_uuid(value):
        return value  # the common case, without a round trip through uuid.UUID
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
    # Ids for the events that have none: random (version 4), as SPEC.md and the
    # reference generate them.
    new_ids = iter([str(uuid.uuid4()) for e in events if getattr(e, "event_id", None) is None])
    event_ids, event_types = columns["event_ids"], columns["event_types"]
    causation_ids, correlation_ids = columns["causation_ids"], columns["correlation_ids"]
    data, metadata = columns["data"], columns["metadata"]
    serialize = serializer.serialize
    # Argument names (``events[3].data``) are built only for an error message.
    for i, event in enumerate(events):
        if not isinstance(event, EventData):
            raise TypeError(f"events[{i}] must be an EventData, got {type(event).__name__}")
        event_type = event.event_type
        if event_type is None:
            if isinstance(event.data, _PLAIN):
                raise ValueError(
                    f"events[{i}].event_type is required when data is not a class instance"
                )
            event_type = type_name(type(event.data))
        elif not isinstance(event_type, str) or not event_type:
            raise TypeError(f"events[{i}].event_type must be a non-empty str or None")
        event_ids.append(_event_uuid(event.event_id, i, "event_id") or next(new_ids))
        event_types.append(event_type)
        causation_ids.append(_event_uuid(event.causation_id, i, "causation_id"))
        correlation_ids.append(_event_uuid(event.correlation_id, i, "correlation_id"))
        try:
            data.append(serialize(event.data, event_type))
            metadata.append(None if event.metadata is None else serialize(event.metadata, None))
        except Exception:
            # Again, for the message naming the field that failed.
            _serialize(serializer, event.data, event_type, f"events[{i}].data")
            _serialize(serializer, event.metadata, None, f"events[{i}].metadata")
            raise
    return columns


def _event_uuid(value: Any, i: int, field: str) -> str | None:
    if value is None or (type(value) is str and _is_canonical_uuid(value)):
        return value
    return check_uuid(value, f"events[{i}].{field}")


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
