"""Parked events (dead letters) of persistent subscriptions: their rows, and notices.

A subscription whose user code keeps failing on an event parks it in
``<schema>.parked_events`` (an addition to the reference's schema, see
:func:`.schema.additions_ddl`) and carries on. Operators list the parked
events, ask for them to be replayed, or discard them; each of those changes is
announced on the channel ``"<schema>.parked"`` (payload: the subscription id),
so that the process running the subscription reacts at once.

Rows are keyed by ``(subscription_id, event_number)``, where ``event_number`` is
the event's position in the subscribed stream (the global position for
``$all``). They go with their subscription: deleting it (here or by the
reference library) cascades to them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from .._types import ParkedEvent, RecordedEvent
from ..serializers import Serializer
from .reader import utc
from .schema import quote_ident
from .steps import Op, Query, run

__all__ = [
    "ParkRow",
    "ParkedRef",
    "channel",
    "discard",
    "discard_op",
    "list_parked",
    "list_parked_op",
    "park",
    "park_op",
    "parked_summary",
    "parked_summary_op",
    "remove_parked",
    "remove_parked_op",
    "replay_requested",
    "request_replay",
    "request_replay_op",
]


@dataclass(frozen=True)
class ParkRow:
    """An event to park: its position in the subscribed stream, id, why, and key."""

    event_number: int
    event_id: str
    reason: str
    partition_key: str | None


@dataclass(frozen=True)
class ParkedRef:
    """A parked event as the runner tracks it (no payload)."""

    event_number: int
    event_id: str
    partition_key: str | None
    replay_requested: bool


def channel(schema: str) -> str:
    """The NOTIFY channel announcing replay requests and discards: ``"<schema>.parked"``."""
    return f"{schema}.parked"


def _numbers(event_numbers: Sequence[int] | None) -> list[int] | None:
    return None if event_numbers is None else [int(n) for n in event_numbers]


def park(conn: Connection, schema: str, subscription_id: int, rows: Sequence[ParkRow]) -> None:
    """:func:`park_op` on ``conn``."""
    run(conn, park_op(schema, subscription_id, rows))


def park_op(schema: str, subscription_id: int, rows: Sequence[ParkRow]) -> Op[None]:
    """Park ``rows`` for the subscription, in one statement.

    An event parked already stays as it was (ON CONFLICT DO NOTHING: its first
    reason and time are kept). Nothing is written for a subscription that no
    longer exists (deleted meanwhile), rather than failing on the foreign key.
    """
    if not rows:
        return
    s = quote_ident(schema)
    yield Query(
        f"""
INSERT INTO {s}.parked_events (subscription_id, event_number, event_id, partition_key, reason)
SELECT %(subscription_id)s, r.event_number, r.event_id, r.partition_key, r.reason
FROM unnest(
    CAST(%(event_numbers)s AS bigint[]),
    CAST(%(event_ids)s AS uuid[]),
    CAST(%(partition_keys)s AS text[]),
    CAST(%(reasons)s AS text[])
) AS r(event_number, event_id, partition_key, reason)
WHERE EXISTS (SELECT 1 FROM {s}.subscriptions WHERE subscription_id = %(subscription_id)s)
ON CONFLICT (subscription_id, event_number) DO NOTHING
""",
        {
            "subscription_id": subscription_id,
            "event_numbers": [row.event_number for row in rows],
            "event_ids": [str(row.event_id) for row in rows],
            "partition_keys": [row.partition_key for row in rows],
            "reasons": [row.reason for row in rows],
        },
    )


def _refs(schema: str, subscription_id: int, *, requested: bool) -> Op[list[ParkedRef]]:
    where = "AND replay_requested" if requested else ""
    rows = yield Query(
        f"""
SELECT event_number, CAST(event_id AS text), partition_key, replay_requested
FROM {quote_ident(schema)}.parked_events
WHERE subscription_id = %(subscription_id)s {where}
ORDER BY event_number
""",
        {"subscription_id": subscription_id},
    )
    return [ParkedRef(int(row[0]), str(row[1]), row[2], bool(row[3])) for row in rows]


def parked_summary(conn: Connection, schema: str, subscription_id: int) -> list[ParkedRef]:
    """:func:`parked_summary_op` on ``conn``."""
    return run(conn, parked_summary_op(schema, subscription_id))


def parked_summary_op(schema: str, subscription_id: int) -> Op[list[ParkedRef]]:
    """Every parked event of the subscription, in event order."""
    return (yield from _refs(schema, subscription_id, requested=False))


def replay_requested(conn: Connection, schema: str, subscription_id: int) -> list[ParkedRef]:
    """The subscription's parked events whose replay was requested, in event order."""
    return run(conn, _refs(schema, subscription_id, requested=True))


def remove_parked(
    conn: Connection, schema: str, subscription_id: int, event_numbers: Sequence[int]
) -> int:
    """:func:`remove_parked_op` on ``conn``."""
    return run(conn, remove_parked_op(schema, subscription_id, event_numbers))


def remove_parked_op(schema: str, subscription_id: int, event_numbers: Sequence[int]) -> Op[int]:
    """Remove the named parked events (replayed and acked); how many were removed."""
    if not event_numbers:
        return 0
    ((count,),) = yield Query(
        f"""
WITH removed AS (
    DELETE FROM {quote_ident(schema)}.parked_events
    WHERE subscription_id = %(subscription_id)s
      AND event_number = ANY(CAST(%(event_numbers)s AS bigint[]))
    RETURNING 1
)
SELECT count(*) FROM removed
""",
        {"subscription_id": subscription_id, "event_numbers": _numbers(event_numbers)},
    )
    return int(count)


def _change_and_notify(
    schema: str,
    change: str,
    stream_uuid: str,
    subscription_name: str,
    event_numbers: Sequence[int] | None,
) -> Op[int]:
    """Apply ``change`` (an UPDATE or DELETE of ``p``) to the subscription's parked
    events -- all, or those numbered -- then NOTIFY the runner when any changed."""
    s = quote_ident(schema)
    (row,) = yield Query(
        f"""
WITH subscription AS (
    SELECT subscription_id FROM {s}.subscriptions
    WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(name)s
),
changed AS (
    {change}
    WHERE p.subscription_id = (SELECT subscription_id FROM subscription)
      AND (CAST(%(event_numbers)s AS bigint[]) IS NULL
           OR p.event_number = ANY(CAST(%(event_numbers)s AS bigint[])))
    RETURNING p.subscription_id
)
SELECT count(*), min(subscription_id) FROM changed
""",
        {
            "stream_uuid": stream_uuid,
            "name": subscription_name,
            "event_numbers": _numbers(event_numbers),
        },
    )
    count = int(row[0])
    if count:
        # Delivered at commit (the caller's, with conn=): the runner then sees
        # the change it is told about.
        yield Query(
            "SELECT pg_notify(%(channel)s, %(payload)s)",
            {"channel": channel(schema), "payload": str(row[1])},
        )
    return count


def request_replay_op(
    schema: str,
    stream_uuid: str,
    subscription_name: str,
    event_numbers: Sequence[int] | None,
) -> Op[int]:
    """Mark the subscription's parked events (all, or those numbered) for replay.

    Returns how many are now marked (0 for an unknown subscription, or numbers
    that are not parked), and notifies ``"<schema>.parked"`` when any are.
    """
    s = quote_ident(schema)
    change = f"UPDATE {s}.parked_events p SET replay_requested = true"
    return (
        yield from _change_and_notify(schema, change, stream_uuid, subscription_name, event_numbers)
    )


def request_replay(
    conn: Connection,
    schema: str,
    stream_uuid: str,
    subscription_name: str,
    event_numbers: Sequence[int] | None,
) -> int:
    """:func:`request_replay_op` on ``conn``."""
    return run(conn, request_replay_op(schema, stream_uuid, subscription_name, event_numbers))


def discard_op(
    schema: str,
    stream_uuid: str,
    subscription_name: str,
    event_numbers: Sequence[int] | None,
) -> Op[int]:
    """Delete the subscription's parked events (all, or those numbered); how many.

    Notifies ``"<schema>.parked"`` when any were deleted: a partition key held
    back behind a parked event may move on.
    """
    change = f"DELETE FROM {quote_ident(schema)}.parked_events p"
    return (
        yield from _change_and_notify(schema, change, stream_uuid, subscription_name, event_numbers)
    )


def discard(
    conn: Connection,
    schema: str,
    stream_uuid: str,
    subscription_name: str,
    event_numbers: Sequence[int] | None,
) -> int:
    """:func:`discard_op` on ``conn``."""
    return run(conn, discard_op(schema, stream_uuid, subscription_name, event_numbers))


def _payload(value: Any, jsonb: bool, serializer: Serializer, event_type: str | None) -> Any:
    """The deserialized value; the stored bytes or jsonb text when it cannot be read."""
    if value is None:
        return None
    try:
        return serializer.deserialize(json.loads(value) if jsonb else value, event_type)
    except Exception:  # parked because unreadable: show what is stored
        return value if jsonb else bytes(value)


def list_parked_op(
    schema: str,
    column_data_type: str,
    serializer: Serializer,
    stream_uuid: str,
    subscription_name: str,
) -> Op[list[ParkedEvent]]:
    """The subscription's parked events with their events, in event order.

    ``event_number`` of each event is its position in the subscribed stream (the
    global position for ``$all``). An event the serializer cannot read comes
    with its stored bytes (bytea) or jsonb text as ``data``/``metadata``. A
    parked event whose event was hard-deleted since is left out (discard it).
    """
    s = quote_ident(schema)
    jsonb = column_data_type == "jsonb"
    # jsonb is fetched as text and decoded here, as the drivers would, so the
    # stored text is at hand when the serializer refuses it.
    payload = "CAST(e.{0} AS text)" if jsonb else "e.{0}"
    rows = yield Query(
        f"""
SELECT p.event_number, CAST(e.event_id AS text), os.stream_uuid, se.original_stream_version,
       e.event_type, {payload.format("data")}, {payload.format("metadata")},
       CAST(e.causation_id AS text), CAST(e.correlation_id AS text), e.created_at,
       p.reason, p.parked_at
FROM {s}.subscriptions sub
JOIN {s}.parked_events p ON p.subscription_id = sub.subscription_id
JOIN {s}.streams t ON t.stream_uuid = sub.stream_uuid
JOIN {s}.stream_events se
  ON se.stream_id = t.stream_id AND se.stream_version = p.event_number
 AND se.event_id = p.event_id
JOIN {s}.streams os ON os.stream_id = se.original_stream_id
JOIN {s}.events e ON e.event_id = se.event_id
WHERE sub.stream_uuid = %(stream_uuid)s AND sub.subscription_name = %(name)s
ORDER BY p.event_number
""",
        {"stream_uuid": stream_uuid, "name": subscription_name},
    )
    parked: list[ParkedEvent] = []
    for row in rows:
        event_type = row[4]
        event = RecordedEvent(
            event_number=int(row[0]),
            event_id=str(row[1]),
            stream_uuid=row[2],
            stream_version=int(row[3]),
            event_type=event_type,
            data=_payload(row[5], jsonb, serializer, event_type),
            metadata=_payload(row[6], jsonb, serializer, None),
            causation_id=row[7],
            correlation_id=row[8],
            created_at=utc(row[9]),
        )
        parked_at: datetime = utc(row[11])
        parked.append(ParkedEvent(event, subscription_name, stream_uuid, row[10], parked_at))
    return parked


def list_parked(
    conn: Connection,
    schema: str,
    column_data_type: str,
    serializer: Serializer,
    stream_uuid: str,
    subscription_name: str,
) -> list[ParkedEvent]:
    """:func:`list_parked_op` on ``conn``."""
    return run(
        conn, list_parked_op(schema, column_data_type, serializer, stream_uuid, subscription_name)
    )
