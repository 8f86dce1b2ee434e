"""Parked events (dead letters) of persistent subscriptions.

Rows of ``<schema>.parked_events``: one per event a subscription gave up on
(user code or the serializer failed on it ``max_retries`` + 1 times), or
parked behind such an event of the same partition key. ``replay_parked`` sets
``replay_requested`` and notifies ``"<schema>.parked"`` with the
subscription's id, so the process holding the subscription delivers them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from .schema import quote_ident

__all__ = ["ParkRow", "ParkedRef", "park", "parked_summary", "remove_parked", "replay_requested"]


@dataclass(frozen=True)
class ParkRow:
    event_number: int
    event_id: str
    reason: str
    partition_key: str | None


@dataclass(frozen=True)
class ParkedRef:
    event_number: int
    event_id: str
    partition_key: str | None
    replay_requested: bool


def park(conn: Connection, schema: str, subscription_id: int, rows: list[ParkRow]) -> None:
    """Park ``rows`` (an event already parked stays as it is)."""
    if not rows:
        return
    conn.exec_driver_sql(
        f"""INSERT INTO {quote_ident(schema)}.parked_events
            (subscription_id, event_number, event_id, partition_key, reason)
            VALUES (%(id)s, %(number)s, CAST(%(event_id)s AS uuid), %(key)s, %(reason)s)
            ON CONFLICT DO NOTHING""",
        [
            {
                "id": subscription_id,
                "number": row.event_number,
                "event_id": row.event_id,
                "key": row.partition_key,
                "reason": row.reason,
            }
            for row in rows
        ],
    )


def ensure_table(conn: Connection, schema: str) -> None:
    """Create the table when missing (until ``init()`` and the migrations do)."""
    s = quote_ident(schema)
    if conn.exec_driver_sql(
        "SELECT to_regclass(%(name)s)", {"name": f"{s}.parked_events"}
    ).scalar():
        return
    conn.exec_driver_sql(
        f"""CREATE TABLE IF NOT EXISTS {s}.parked_events (
            subscription_id bigint NOT NULL
                REFERENCES {s}.subscriptions (subscription_id) ON DELETE CASCADE,
            event_number bigint NOT NULL,
            event_id uuid NOT NULL,
            partition_key text NULL,
            reason text NOT NULL,
            parked_at timestamptz NOT NULL DEFAULT now(),
            replay_requested boolean NOT NULL DEFAULT false,
            PRIMARY KEY (subscription_id, event_number)
        )"""
    )


def _refs(
    conn: Connection, schema: str, subscription_id: int, only_replay: bool
) -> list[ParkedRef]:
    where = "AND replay_requested" if only_replay else ""
    rows = conn.exec_driver_sql(
        f"""SELECT event_number, event_id, partition_key, replay_requested
            FROM {quote_ident(schema)}.parked_events
            WHERE subscription_id = %(id)s {where} ORDER BY event_number""",
        {"id": subscription_id},
    ).all()
    return [ParkedRef(int(r[0]), str(r[1]), r[2], bool(r[3])) for r in rows]


def parked_summary(conn: Connection, schema: str, subscription_id: int) -> list[ParkedRef]:
    """Every parked event of the subscription, in event order."""
    ensure_table(conn, schema)
    return _refs(conn, schema, subscription_id, False)


def replay_requested(conn: Connection, schema: str, subscription_id: int) -> list[ParkedRef]:
    """Parked events whose replay was requested, in event order."""
    return _refs(conn, schema, subscription_id, True)


def remove_parked(
    conn: Connection, schema: str, subscription_id: int, event_numbers: list[int]
) -> int:
    """Remove parked events (a replayed one once acked); returns how many."""
    result = conn.exec_driver_sql(
        f"""DELETE FROM {quote_ident(schema)}.parked_events
            WHERE subscription_id = %(id)s AND event_number = ANY(%(numbers)s)""",
        {"id": subscription_id, "numbers": list(event_numbers)},
    )
    return int(result.rowcount)
