"""The statements of polling mode: stream versions, parked events' counts, a probe NOTIFY.

Polling mode replaces LISTEN where it cannot work (see
``subscriptions.polling``): each interval, the scheduler reads the version of
every stream it follows and the counts of its subscriptions' parked events,
and compares them with what it saw last. Plain statements, no session state,
so they run through a transaction-mode pooler. Written as operations
(:mod:`.steps`), so the sync and the async store run the same ones.
"""

from __future__ import annotations

from .schema import quote_ident
from .steps import Op, Query

__all__ = ["notify_op", "parked_counts_op", "stream_versions_op"]


def stream_versions_op(schema: str, stream_uuids: list[str]) -> Op[dict[str, int]]:
    """The version of each stream that exists (``$all``: its head), by uuid.

    One index scan of ``streams`` by ``stream_uuid``; a soft-deleted stream
    keeps its version, a hard-deleted one is missing.
    """
    if not stream_uuids:
        return {}
    rows = yield Query(
        f"SELECT stream_uuid, stream_version FROM {quote_ident(schema)}.streams "
        "WHERE stream_uuid = ANY(%(uuids)s)",
        {"uuids": list(stream_uuids)},
    )
    return {str(row[0]): int(row[1] or 0) for row in rows}


def parked_counts_op(schema: str, subscription_ids: list[int]) -> Op[dict[int, tuple[int, int]]]:
    """(parked, replay requested) per subscription that has parked events.

    A replay request, a discard or an unpark changes one of the two; the
    scheduler reloads the subscription's parked events when they change.
    """
    if not subscription_ids:
        return {}
    rows = yield Query(
        "SELECT subscription_id, count(*), count(*) FILTER (WHERE replay_requested) "
        f"FROM {quote_ident(schema)}.parked_events "
        "WHERE subscription_id = ANY(%(ids)s) GROUP BY subscription_id",
        {"ids": list(subscription_ids)},
    )
    return {int(row[0]): (int(row[1]), int(row[2])) for row in rows}


def notify_op(channel: str) -> Op[None]:
    """An empty NOTIFY on ``channel`` (the listener's check that LISTEN holds)."""
    yield Query("SELECT pg_notify(%(channel)s, '')", {"channel": channel})
