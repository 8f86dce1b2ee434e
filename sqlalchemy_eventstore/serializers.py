"""Serializers turn event data and metadata into column values and back.

A serializer is any object with the three members of :class:`Serializer`:

- ``column_data_type`` — ``"bytea"`` or ``"jsonb"``, the column type it writes;
- ``serialize(term, type=None)`` — returns ``bytes`` for bytea columns, or a
  JSON document as ``str`` for jsonb columns;
- ``deserialize(data, type=None)`` — receives ``bytes`` (bytea) or the already
  decoded JSON value (jsonb) and returns the Python value.

``type`` is the event's ``event_type`` (``source_type`` for snapshots) and None
for metadata. Raise ``TypeError``/``ValueError`` for a term that cannot be
encoded; the store then writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import sys
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = [
    "JsonSerializer",
    "JsonbSerializer",
    "MarshmallowSerializer",
    "Serializer",
    "type_name",
]


@runtime_checkable
class Serializer(Protocol):
    """The protocol every serializer implements (see the module docstring)."""

    @property
    def column_data_type(self) -> str:
        """``"bytea"`` or ``"jsonb"``: the column type this serializer writes."""
        ...

    def serialize(self, term: Any, type: str | None = None) -> bytes | str: ...

    def deserialize(self, data: Any, type: str | None = None) -> Any: ...


def type_name(cls: type) -> str:
    """The event type inferred from a class: ``"<module>.<qualname>"``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _default(value: Any) -> Any:
    """``json.dumps`` hook for the common non-JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


# One encoder each, built once: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(default=_default, separators=(",", ":")).encode
# jsonb cannot hold NaN or Infinity: refuse them before any SQL runs.
_ENCODE_STRICT = json.JSONEncoder(default=_default, separators=(",", ":"), allow_nan=False).encode
_RAW_DECODE = json.JSONDecoder().raw_decode


def _loads(data: Any) -> Any:
    """``json.loads`` of stored bytes, with a fast path for what writers store.

    ``json.loads(bytes)`` first sniffs the encoding and then strips whitespace
    with two regular-expression matches: a fifth of a page's decoding time.
    Stored JSON is UTF-8 without surrounding whitespace (this package's and the
    reference's serializers write it so), which ``raw_decode`` reads directly;
    anything else -- whitespace, another UTF encoding, invalid JSON -- goes
    through ``json.loads`` as before, with its own errors.
    """
    try:
        text = str(data, "utf-8")
        value, end = _RAW_DECODE(text)
        if end == len(text):
            return value
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        pass
    return json.loads(bytes(data))


def _resolve_type(name: str | None) -> type | None:
    """The dataclass named ``module.qualname`` if its module is already imported.

    Like the reference's ``String.to_existing_atom``, nothing is imported:
    stored type names never cause code to be loaded.
    """
    if not name or "." not in name:
        return None
    pieces = name.split(".")
    # A nested class (Outer.Inner) puts dots in the qualname too: try each split,
    # longest module name first.
    for i in range(len(pieces) - 1, 0, -1):
        module = sys.modules.get(".".join(pieces[:i]))
        if module is None:
            continue
        obj: Any = module
        for attr in pieces[i:]:
            obj = getattr(obj, attr, None)
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            return obj
        return None
    return None


def _to_instance(value: Any, type: str | None) -> Any:
    # The type first: a cheap string test settles most events (and all
    # metadata) before the slower Mapping ABC check.
    cls = _resolve_type(type)
    if cls is None or not isinstance(value, Mapping):
        return value
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    try:
        return cls(**{k: v for k, v in value.items() if k in names})
    except TypeError:
        return value


class JsonSerializer:
    """JSON in a ``bytea`` column (the default).

    Dataclass instances are written as objects; on read, an event whose type
    names a dataclass in an already imported module comes back as an instance
    of it, anything else as plain JSON values.
    """

    column_data_type: ClassVar[str] = "bytea"

    def serialize(self, term: Any, type: str | None = None) -> bytes:
        return _ENCODE(term).encode()

    def deserialize(self, data: Any, type: str | None = None) -> Any:
        return _to_instance(_loads(data), type)


class JsonbSerializer:
    """JSON in ``jsonb`` columns, so plain SQL can query ``data->>'field'``."""

    column_data_type: ClassVar[str] = "jsonb"

    def serialize(self, term: Any, type: str | None = None) -> str:
        # jsonb refuses NaN/Infinity: fail here (ValueError), not in the database.
        return _ENCODE_STRICT(term)

    def deserialize(self, data: Any, type: str | None = None) -> Any:
        # The drivers decode jsonb already: a str is a JSON string value, not
        # JSON text (decoding it again would break "abc" and turn "123" into 123).
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = _loads(data)
        return _to_instance(data, type)


class MarshmallowSerializer:
    """Typed events through marshmallow schemas, one per event type.

    ``schemas`` maps an event type to a ``marshmallow.Schema`` (class or
    instance); a schema's ``@post_load`` hook builds the typed object (a
    dataclass, say) returned on read. Types without a schema, and metadata,
    are plain JSON. ``column_data_type`` must match the store's.
    """

    def __init__(
        self,
        schemas: Mapping[str | type, Any],
        *,
        column_data_type: str = "bytea",
    ) -> None:
        if column_data_type not in ("bytea", "jsonb"):
            raise ValueError(
                f"column_data_type must be 'bytea' or 'jsonb', got {column_data_type!r}"
            )
        self.column_data_type = column_data_type
        self._schemas: dict[str, Any] = {}
        for key, schema in schemas.items():
            name = type_name(key) if isinstance(key, type) else key
            if not isinstance(name, str) or not name:
                raise TypeError(f"schemas keys must be event type names, got {key!r}")
            self._schemas[name] = schema() if isinstance(schema, type) else schema

    def _schema(self, type: str | None) -> Any:
        return self._schemas.get(type) if type is not None else None

    def serialize(self, term: Any, type: str | None = None) -> bytes | str:
        schema = self._schema(type)
        if schema is not None:
            term = schema.dump(term)
        jsonb = self.column_data_type == "jsonb"
        text = _ENCODE_STRICT(term) if jsonb else _ENCODE(term)
        return text if jsonb else text.encode()

    def deserialize(self, data: Any, type: str | None = None) -> Any:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = json.loads(bytes(data))
        elif isinstance(data, str) and self.column_data_type == "bytea":
            data = json.loads(data)
        schema = self._schema(type)
        return schema.load(data) if schema is not None else data
