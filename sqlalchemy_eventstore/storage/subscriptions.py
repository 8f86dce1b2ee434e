"""Subscription rows: where each persistent subscription's checkpoint lives."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from .schema import quote_ident

__all__ = ["SubscriptionRow", "delete_subscription", "store_checkpoint", "subscribe"]


@dataclass(frozen=True)
class SubscriptionRow:
    subscription_id: int
    last_seen: int


def subscribe(
    conn: Connection, schema: str, stream_uuid: str, name: str, start_from: int
) -> SubscriptionRow:
    """The subscription's row, created at ``start_from`` when missing.

    An existing row wins: its checkpoint is kept and ``start_from`` ignored,
    as the reference does. ON CONFLICT makes two processes creating the same
    subscription at once agree on one row.
    """
    s = quote_ident(schema)
    row = conn.exec_driver_sql(
        f"""
WITH inserted AS (
    INSERT INTO {s}.subscriptions (stream_uuid, subscription_name, last_seen)
    VALUES (%(stream_uuid)s, %(name)s, %(start_from)s)
    ON CONFLICT (stream_uuid, subscription_name) DO NOTHING
    RETURNING subscription_id, last_seen
)
SELECT subscription_id, last_seen FROM inserted
UNION ALL
SELECT subscription_id, last_seen FROM {s}.subscriptions
WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(name)s
LIMIT 1
""",
        {"stream_uuid": stream_uuid, "name": name, "start_from": start_from},
    ).one()
    return SubscriptionRow(int(row[0]), int(row[1] or 0))


def store_checkpoint(
    conn: Connection,
    schema: str,
    subscription_id: int,
    last_seen: int,
    *,
    durable: bool = True,
) -> bool:
    """Write the checkpoint of the subscription row ``subscription_id``.

    By id, not by name: a process still running a subscription that was
    deleted (and perhaps created again, as a new row) cannot move the new
    row. It only moves forward: a stale writer can never move it back.
    Returns False when the row is gone (deleted).

    ``durable=False`` commits without waiting for the WAL flush (asynchronous
    commit, this transaction only). Right for the routine writes of a busy
    subscription: a server crash can lose only the last few, and losing a
    checkpoint means redelivery, never a skipped event. Writes that callers
    rely on (at unsubscribe and close) stay durable.
    """
    # One statement either way, so an autocommit connection writes it in one
    # round trip; set_config(..., true) lasts for this statement's transaction.
    asynchronous = (
        "" if durable else "AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"
    )
    row = conn.exec_driver_sql(
        f"""
WITH target AS (
    SELECT subscription_id FROM {quote_ident(schema)}.subscriptions
    WHERE subscription_id = %(id)s
), updated AS (
    UPDATE {quote_ident(schema)}.subscriptions SET last_seen = %(last_seen)s
    WHERE subscription_id = %(id)s
      AND (last_seen IS NULL OR last_seen < %(last_seen)s)
      {asynchronous}
    RETURNING 1
)
SELECT (SELECT count(*) FROM target), (SELECT count(*) FROM updated)
""",
        {"id": subscription_id, "last_seen": last_seen},
    ).one()
    return bool(row[0])


def delete_subscription(conn: Connection, schema: str, stream_uuid: str, name: str) -> None:
    conn.exec_driver_sql(
        f"""DELETE FROM {quote_ident(schema)}.subscriptions
            WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(name)s""",
        {"stream_uuid": stream_uuid, "name": name},
    )
