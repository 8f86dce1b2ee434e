"""Reading events, stream information and pages of streams."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection

from .._types import Page, RecordedEvent, StreamInfo
from ..errors import StreamDeletedError, StreamNotFoundError
from ..serializers import Serializer
from .sql import Statements
from .steps import Op, Query, run

__all__ = [
    "paginate_streams",
    "read_events",
    "read_rows",
    "stream_info",
    "to_recorded_event",
    "utc",
]

# The largest stream version: "from the end" for backward reads.
END = 2**63 - 1


def utc(value: datetime) -> datetime:
    """A timestamptz as an aware UTC datetime, whatever the session's time zone."""
    return value.astimezone(timezone.utc)


_new_event = object.__new__


def to_recorded_event(row: Any, serializer: Serializer) -> RecordedEvent:
    """A RecordedEvent from a row of ``sql._EVENT_COLUMNS`` (after two lead columns)."""
    (_, _, number, event_id, stream_uuid, version, event_type, data, metadata,
     causation_id, correlation_id, created_at) = row  # fmt: skip
    # Built without the frozen dataclass's __init__, which sets its ten fields
    # one object.__setattr__ at a time: 3 of a page's ~20 ms. The instance is
    # the same (same fields, no __post_init__); RecordedEvent is ours.
    event = _new_event(RecordedEvent)
    event.__dict__.update(
        event_number=number,
        event_id=event_id,
        stream_uuid=stream_uuid,
        stream_version=version,
        event_type=event_type,
        data=serializer.deserialize(data, event_type),
        metadata=None if metadata is None else serializer.deserialize(metadata, None),
        causation_id=causation_id,
        correlation_id=correlation_id,
        created_at=created_at.astimezone(timezone.utc),
    )
    return event


def read_events(
    sql: Statements,
    serializer: Serializer,
    stream_uuid: str,
    start_version: int,
    count: int,
    *,
    forward: bool,
) -> Op[list[RecordedEvent]]:
    """One page of a stream (``$all`` included), in one round trip."""
    rows = yield from read_rows_op(sql, stream_uuid, start_version, count, forward=forward)
    return [to_recorded_event(row, serializer) for row in rows]


def read_rows(
    conn: Connection,
    sql: Statements,
    stream_uuid: str,
    start_version: int,
    count: int,
    *,
    forward: bool,
) -> list[Any]:
    """:func:`read_rows_op` on ``conn``."""
    op = read_rows_op(sql, stream_uuid, start_version, count, forward=forward)
    return run(conn, op, prepare=sql.prepare)


def read_rows_op(
    sql: Statements,
    stream_uuid: str,
    start_version: int,
    count: int,
    *,
    forward: bool,
) -> Op[list[Any]]:
    """One page of raw rows (for :func:`to_recorded_event`): lets a caller
    deserialize each event on its own, so one unreadable event does not fail
    the page (subscriptions park it)."""
    if forward:
        statement = sql.prepared_read_forward
    else:
        statement = sql.prepared_read_backward
        if start_version < 0:
            start_version = END
    params = {"stream_uuid": stream_uuid, "start": start_version, "count": count}
    rows = yield Query(statement, params)
    if not rows:
        raise StreamNotFoundError(f"stream {stream_uuid!r} not found")
    if rows[0][1]:
        raise StreamDeletedError(f"stream {stream_uuid!r} is deleted")
    if rows[0][2] is None:  # the stream exists; no event in range
        return []
    return list(rows)


def _stream_info(row: Any) -> StreamInfo:
    return StreamInfo(
        stream_uuid=row[1],
        stream_id=row[0],
        stream_version=row[2],
        created_at=utc(row[3]),
        deleted_at=None if row[4] is None else utc(row[4]),
        status="created" if row[4] is None else "deleted",
    )


def stream_info(sql: Statements, stream_uuid: str) -> Op[StreamInfo]:
    rows = yield Query(sql.stream_info, {"stream_uuid": stream_uuid})
    if not rows:
        raise StreamNotFoundError(f"stream {stream_uuid!r} not found")
    if rows[0][4] is not None:
        raise StreamDeletedError(f"stream {stream_uuid!r} is deleted")
    return _stream_info(rows[0])


def like_pattern(search: str) -> str:
    """A LIKE pattern matching ``search`` as a literal substring."""
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def paginate_streams(
    sql: Statements,
    *,
    page_size: int,
    page_number: int,
    search: str | None,
    sort_by: str,
    sort_dir: str,
) -> Op[Page[StreamInfo]]:
    assert sql.paginate is not None
    statement = sql.paginate[(sort_by, sort_dir.upper())]
    rows = yield Query(
        statement,
        {
            "pattern": None if search is None else like_pattern(search),
            "limit": page_size,
            "offset": (page_number - 1) * page_size,
        },
    )
    total = int(rows[0][0]) if rows else 0
    entries = [_stream_info(row[1:]) for row in rows if row[1] is not None]
    return Page(
        entries=entries,
        page_number=page_number,
        page_size=page_size,
        total_entries=total,
        total_pages=max(1, math.ceil(total / page_size)),  # the reference's pos_integer
    )
