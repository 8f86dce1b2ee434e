"""Subscription rows: where each persistent subscription's checkpoint lives.

Each statement is an operation (see :mod:`.steps`), so the sync runner and the
async store's subscriptions run the same SQL; the plain functions run one on a
sync ``Connection``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from .schema import quote_ident
from .steps import Op, Query, run

__all__ = [
    "SubscriptionRow",
    "delete_subscription",
    "delete_subscription_op",
    "store_checkpoint",
    "store_checkpoint_op",
    "subscribe",
    "subscribe_op",
]


@dataclass(frozen=True)
class SubscriptionRow:
    subscription_id: int
    last_seen: int


def subscribe(
    conn: Connection, schema: str, stream_uuid: str, name: str, start_from: int
) -> SubscriptionRow:
    """:func:`subscribe_op` on ``conn``."""
    return run(conn, subscribe_op(schema, stream_uuid, name, start_from))


def subscribe_op(schema: str, stream_uuid: str, name: str, start_from: int) -> Op[SubscriptionRow]:
    """The subscription's row, created at ``start_from`` when missing.

    An existing row wins: its checkpoint is kept and ``start_from`` ignored,
    as the reference does. ON CONFLICT makes two processes creating the same
    subscription at once agree on one row.
    """
    s = quote_ident(schema)
    (row,) = yield Query(
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
    )
    return SubscriptionRow(int(row[0]), int(row[1] or 0))


def store_checkpoint(
    conn: Connection,
    schema: str,
    subscription_id: int,
    last_seen: int,
    *,
    durable: bool = True,
) -> bool:
    """:func:`store_checkpoint_op` on ``conn``."""
    return run(conn, store_checkpoint_op(schema, subscription_id, last_seen, durable=durable))


def store_checkpoint_op(
    schema: str, subscription_id: int, last_seen: int, *, durable: bool = True
) -> Op[bool]:
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
    (row,) = yield Query(
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
    )
    return bool(row[0])


def delete_subscription(conn: Connection, schema: str, stream_uuid: str, name: str) -> None:
    """:func:`delete_subscription_op` on ``conn``."""
    run(conn, delete_subscription_op(schema, stream_uuid, name))


def delete_subscription_op(schema: str, stream_uuid: str, name: str) -> Op[None]:
    """Delete the subscription's row (its parked events cascade); no error when absent."""
    yield Query(
        f"""DELETE FROM {quote_ident(schema)}.subscriptions
            WHERE stream_uuid = %(stream_uuid)s AND subscription_name = %(name)s""",
        {"stream_uuid": stream_uuid, "name": name},
    )
