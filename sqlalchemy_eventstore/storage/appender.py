"""Appending events to a stream and linking existing events into one (as operations of
:mod:`.steps`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._types import ANY_VERSION, NO_STREAM, STREAM_EXISTS, ExpectedVersion
from ..errors import (
    DuplicateEventError,
    EventNotFoundError,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from .sql import Statements
from .steps import Op, Query

__all__ = ["PreparedEvents", "append", "link"]

# Column arrays of one append: event_ids, event_types, causation_ids,
# correlation_ids, data, metadata (each a list with one entry per event).
PreparedEvents = dict[str, list[Any]]


def _version_params(expected: ExpectedVersion) -> dict[str, Any]:
    """How the statements treat each kind of expected version: ``expected`` is
    the version the stream's row must have (< 0: any), ``may_create`` whether a
    missing stream is created."""
    if expected is ANY_VERSION:
        return {"may_create": True, "expected": -1}
    if expected is STREAM_EXISTS:
        return {"may_create": False, "expected": -1}
    if expected is NO_STREAM or expected == 0:
        # A stream row at version 0 counts as absent, as in the reference.
        return {"may_create": True, "expected": 0}
    return {"may_create": False, "expected": expected}


def check_expected_version(
    expected: ExpectedVersion,
    stream_uuid: str,
    current_id: Any,
    current_version: Any,
    deleted: Any,
) -> Exception | None:
    """The error ``expected`` meets against a stream's state, if any.

    The reference's ``StreamInfo.validate_expected_version``, case for case.
    """
    if deleted:
        return StreamDeletedError(f"stream {stream_uuid!r} is deleted")
    if current_id is None:
        if expected is STREAM_EXISTS:
            return StreamNotFoundError(f"stream {stream_uuid!r} not found")
        if isinstance(expected, int) and expected > 0:
            return WrongExpectedVersionError(
                f"stream {stream_uuid!r} does not exist, expected version {expected}"
            )
        return None
    if expected is ANY_VERSION or expected is STREAM_EXISTS or expected == current_version:
        return None
    if expected is NO_STREAM:
        if current_version == 0:
            return None
        return StreamExistsError(f"stream {stream_uuid!r} already exists")
    return WrongExpectedVersionError(
        f"stream {stream_uuid!r} is at version {current_version}, expected {expected}"
    )


def append(
    sql: Statements,
    stream_uuid: str,
    expected: ExpectedVersion,
    events: PreparedEvents,
) -> Op[int]:
    """Append prepared events in one statement; returns the stream's new version."""
    count = len(events["event_ids"])
    versions = _version_params(expected)
    statement = sql.prepared_append if versions["may_create"] else sql.prepared_append_existing
    params = {
        "stream_uuid": stream_uuid,
        "count": count,
        "expected": versions["expected"],
        **events,
    }
    for _attempt in range(2):
        rows = yield Query(statement, params, translate=True)
        if rows:
            return int(rows[0][1]) + count
        # Nothing written. Either the expected version does not hold, or the
        # stream was created or deleted concurrently (between the statement's
        # snapshot and its row lock): then one retry, with a fresh snapshot,
        # decides. The state read here is as fresh as the retry's would be.
        states = yield Query(sql.stream_info, {"stream_uuid": stream_uuid})
        current_id, current_version, deleted = (
            (None, None, False)
            if not states
            else (states[0][0], states[0][2], states[0][4] is not None)
        )
        error = check_expected_version(expected, stream_uuid, current_id, current_version, deleted)
        if error is not None:
            raise error
    raise WrongExpectedVersionError(f"stream {stream_uuid!r} changed concurrently")


def link(
    sql: Statements,
    stream_uuid: str,
    expected: ExpectedVersion,
    event_ids: Sequence[str],
) -> Op[int]:
    """Link existing events into a stream in one statement; returns its new version."""
    count = len(event_ids)
    params = {
        "stream_uuid": stream_uuid,
        "count": count,
        "event_ids": list(event_ids),
        **_version_params(expected),
    }
    for _attempt in range(2):
        (row,) = yield Query(sql.link, params, translate=True)
        if row[0] is not None:
            return int(row[1]) + count
        error = check_expected_version(expected, stream_uuid, row[2], row[3], row[4])
        if error is not None:
            raise error
        if row[5] != count:
            raise EventNotFoundError(
                f"{count - row[5]} of the events to link into {stream_uuid!r} are not stored"
            )
        if row[6]:
            raise DuplicateEventError(f"an event is already linked to stream {stream_uuid!r}")
    raise WrongExpectedVersionError(f"stream {stream_uuid!r} changed concurrently")
