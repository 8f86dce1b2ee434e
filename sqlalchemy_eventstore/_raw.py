"""A serializer that hands stored payloads back untouched, for tools that show events.

``eventstore tail`` and the admin page read events that any serializer may have
written (or that a serializer can no longer read): with this one they get the
stored bytes (bytea) or the decoded JSON value (jsonb) and display them as
JSON, text or base64 themselves.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RawSerializer"]


class RawSerializer:
    """Reads payloads as stored; refuses to write (the tools that use it only read)."""

    def __init__(self, column_data_type: str) -> None:
        self.column_data_type = column_data_type

    def serialize(self, term: Any, type: str | None = None) -> bytes | str:
        raise TypeError("this store only reads: it shows payloads as they are stored")

    def deserialize(self, data: Any, type: str | None = None) -> Any:
        return data
