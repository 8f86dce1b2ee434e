"""Parsing the payload the ``notify_events`` trigger sends on ``"<schema>.events"``.

The trigger writes ``"<stream_uuid>,<stream_id>,<first_version>,<last_version>"``
once for every ``streams`` row an append (or a soft delete) touches: the
stream's own row and the ``$all`` row (stream_id 0). A stream_uuid is any
text, commas included, so the three numbers are taken from the right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Notification", "parse_payload"]

# ASCII digits only: ``int()`` alone would also take " 7", "+7", "1_0" or non-ASCII digits.
_PAYLOAD = re.compile(r"(?P<uuid>.+),(?P<id>[0-9]+),(?P<first>[0-9]+),(?P<last>[0-9]+)", re.DOTALL)


@dataclass(frozen=True)
class Notification:
    """One stream's new versions, ``first_version..last_version`` inclusive.

    A soft delete notifies the empty range ``first_version == last_version + 1``.
    For ``$all`` (stream_id 0) the versions are global event numbers.
    """

    stream_uuid: str
    stream_id: int
    first_version: int
    last_version: int


def parse_payload(payload: str) -> Notification:
    """Parse one NOTIFY payload; raise ``ValueError`` when it is not one.

    The greedy stream_uuid group leaves exactly three numbers to its right,
    which splits from the right as a uuid containing commas requires.
    """
    match = _PAYLOAD.fullmatch(payload)
    if match is None:
        raise ValueError(
            "not an event notification payload (expected "
            f"'<stream_uuid>,<stream_id>,<first_version>,<last_version>'): {payload!r}"
        )
    return Notification(
        stream_uuid=match["uuid"],
        stream_id=int(match["id"]),
        first_version=int(match["first"]),
        last_version=int(match["last"]),
    )
