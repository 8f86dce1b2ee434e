"""What an operator looks at: the head of ``$all``, streams, and each subscription's lag.

Read-only queries over one schema, shared by the ``eventstore status`` and
``subscriptions`` commands and the admin page; plus the two changes an
operator makes to a subscription: move its checkpoint, delete it. Both refuse
while a subscriber holds the subscription (its advisory lock): a live runner
keeps its position in memory and would overwrite the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from .reader import utc
from .schema import additions_missing, quote_ident

__all__ = [
    "StoreOverview",
    "SubscriptionBusyError",
    "SubscriptionInfo",
    "delete_subscription",
    "find_subscription",
    "reset_subscription",
    "store_overview",
    "subscriptions",
]

# The advisory lock key of a subscription, as storage.locks takes it: the
# subscriptions table's oid and the subscription id folded into an int.
_LOCK_KEY_ID = (
    "CASE WHEN s.subscription_id > 2147483647 "
    "THEN mod(s.subscription_id, 2147483647) ELSE s.subscription_id END"
)


class SubscriptionBusyError(Exception):
    """A subscriber holds the subscription: a change now would be overwritten."""


@dataclass(frozen=True)
class SubscriptionInfo:
    """One persistent subscription as stored, with how far behind its stream it is.

    ``lag`` is the number of events of the subscribed stream after the
    checkpoint (``head - last_seen``, never negative). ``parked`` is None when
    the schema lacks the parked-events table. ``holder_pid`` is the server
    process id of the session holding the subscription's lock (a running
    subscriber), or None when no subscriber runs anywhere. ``pending_age`` is
    how long the subscription has had work waiting: seconds since the oldest
    event after its checkpoint was appended (by the server's clock), None
    when it is caught up -- a stored view of how far behind it is in time,
    whichever process runs it.
    """

    subscription_id: int
    stream_uuid: str
    subscription_name: str
    last_seen: int
    head: int
    lag: int
    parked: int | None
    holder_pid: int | None
    created_at: datetime
    pending_age: float | None = None

    @property
    def running(self) -> bool:
        """True when a subscriber (in any process) holds the subscription now."""
        return self.holder_pid is not None


@dataclass(frozen=True)
class StoreOverview:
    """The schema at a glance: the head of ``$all``, how many streams, each subscription."""

    schema: str
    head: int
    streams: int
    subscriptions: list[SubscriptionInfo]


def _select(schema: str, with_parked: bool, where: str = "") -> str:
    s = quote_ident(schema)
    parked = (
        f"(SELECT count(*) FROM {s}.parked_events p WHERE p.subscription_id = s.subscription_id)"
        if with_parked
        else "NULL"
    )
    return f"""
SELECT s.subscription_id, s.stream_uuid, s.subscription_name, COALESCE(s.last_seen, 0),
       COALESCE(st.stream_version, 0), {parked},
       (SELECT l.pid FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND CAST(l.classid AS bigint) = CAST(CAST(CAST(%(table)s AS regclass) AS oid) AS bigint)
          AND CAST(l.objid AS bigint) = {_LOCK_KEY_ID}
        LIMIT 1),
       s.created_at,
       -- The oldest event after the checkpoint: the first row past it in the
       -- stream's (stream_id, stream_version) primary key, holes skipped.
       CAST(EXTRACT(EPOCH FROM now() - (
           SELECT e.created_at FROM {s}.stream_events se
           JOIN {s}.events e ON e.event_id = se.event_id
           WHERE se.stream_id = st.stream_id AND se.stream_version > COALESCE(s.last_seen, 0)
           ORDER BY se.stream_version LIMIT 1)) AS double precision)
FROM {s}.subscriptions s LEFT JOIN {s}.streams st ON st.stream_uuid = s.stream_uuid
{where}
ORDER BY s.stream_uuid, s.subscription_name
"""


def _info(row: Any) -> SubscriptionInfo:
    last_seen, head = int(row[3]), int(row[4])
    return SubscriptionInfo(
        subscription_id=int(row[0]),
        stream_uuid=str(row[1]),
        subscription_name=str(row[2]),
        last_seen=last_seen,
        head=head,
        lag=max(0, head - last_seen),
        parked=None if row[5] is None else int(row[5]),
        holder_pid=None if row[6] is None else int(row[6]),
        created_at=utc(row[7]),
        pending_age=None if row[8] is None else max(0.0, float(row[8])),
    )


def subscriptions(conn: Connection, schema: str) -> list[SubscriptionInfo]:
    """Every persistent subscription of the schema, by stream then name."""
    with_parked = not additions_missing(conn, schema)
    rows = conn.exec_driver_sql(
        _select(schema, with_parked), {"table": f"{quote_ident(schema)}.subscriptions"}
    ).all()
    return [_info(row) for row in rows]


def find_subscription(
    conn: Connection, schema: str, stream_uuid: str, name: str
) -> SubscriptionInfo | None:
    """One subscription, or None when there is no such subscription."""
    with_parked = not additions_missing(conn, schema)
    row = conn.exec_driver_sql(
        _select(
            schema,
            with_parked,
            "WHERE s.stream_uuid = %(stream_uuid)s AND s.subscription_name = %(name)s",
        ),
        {"table": f"{quote_ident(schema)}.subscriptions", "stream_uuid": stream_uuid, "name": name},
    ).first()
    return None if row is None else _info(row)


def store_overview(conn: Connection, schema: str) -> StoreOverview:
    """The head of ``$all``, the number of streams (``$all`` not counted), the subscriptions."""
    s = quote_ident(schema)
    row = conn.exec_driver_sql(
        f"""
SELECT COALESCE((SELECT stream_version FROM {s}.streams WHERE stream_uuid = '$all'), 0),
       (SELECT count(*) FROM {s}.streams WHERE stream_uuid <> '$all')
"""
    ).one()
    return StoreOverview(schema, int(row[0]), int(row[1]), subscriptions(conn, schema))


def _lock(conn: Connection, schema: str, info: SubscriptionInfo) -> None:
    """Take the subscription's advisory lock for this transaction, or raise SubscriptionBusyError.

    Transaction-level: the lock goes with the change's commit, so no
    subscriber starts between the check and the change.
    """
    got = conn.exec_driver_sql(
        f"""
SELECT pg_try_advisory_xact_lock(
    CAST(CAST(CAST(%(table)s AS regclass) AS oid) AS int),
    CAST({_LOCK_KEY_ID.replace("s.subscription_id", "%(id)s")} AS int))
""",
        {"table": f"{quote_ident(schema)}.subscriptions", "id": info.subscription_id},
    ).scalar()
    if not got:
        pid = f" (server process {info.holder_pid})" if info.holder_pid else ""
        raise SubscriptionBusyError(
            f'subscription "{info.subscription_name}" to {info.stream_uuid} is running{pid}: '
            "stop its subscriber first"
        )


def reset_subscription(conn: Connection, schema: str, info: SubscriptionInfo, to: int) -> None:
    """Move the checkpoint to ``to`` (back or forward); the subscriber resumes after it.

    Run inside a transaction. Raises SubscriptionBusyError when a subscriber
    holds the subscription.
    """
    _lock(conn, schema, info)
    conn.exec_driver_sql(
        f"UPDATE {quote_ident(schema)}.subscriptions SET last_seen = %(to)s "
        "WHERE subscription_id = %(id)s",
        {"to": to, "id": info.subscription_id},
    )


def delete_subscription(conn: Connection, schema: str, info: SubscriptionInfo) -> None:
    """Delete the subscription's row (and, by cascade, its parked events).

    Run inside a transaction. Raises SubscriptionBusyError when a subscriber
    holds the subscription.
    """
    _lock(conn, schema, info)
    conn.exec_driver_sql(
        f"DELETE FROM {quote_ident(schema)}.subscriptions WHERE subscription_id = %(id)s",
        {"id": info.subscription_id},
    )
