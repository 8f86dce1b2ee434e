"""A named subscription in this process, and its storage I/O.

Starting (the row, then the lock, then the checkpoint re-read), checkpoint
writes by subscription id, and the parked events' rows: every database call
of a persistent subscription except event reads lives here. The scheduler
(``runner``) decides when to call them.
"""

from __future__ import annotations

import logging
import zlib
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..storage import parked as parked_rows
from ..storage import subscriptions as rows
from .options import PersistentOptions
from .reading import Backend, Unreadable
from .state import ParkRequest, SubscriptionState

if TYPE_CHECKING:
    from .handle import Subscription

__all__ = ["Persistent"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
T = TypeVar("T")


@dataclass(eq=False)
class Persistent:
    """A named subscription in this process: its options, subscribers and state."""

    stream_uuid: str
    name: str
    options: PersistentOptions
    handles: list[Subscription] = field(default_factory=list)
    # Each subscriber's own buffer_size (its subscribe call's), by id(handle).
    buffer_sizes: dict[int, int] = field(default_factory=dict)
    subscription_id: int | None = None
    state: SubscriptionState | None = None
    # The lock session generation the lock was taken on, and this process's
    # lifetime counter of the subscription (bumped at every start).
    lock_generation: int = -1
    epoch: int = 0
    next_attempt: float = 0.0
    start_failures: int = 0
    # Storage failures while running: retried with backoff, not every pass.
    io_failures: int = 0
    io_retry_at: float = 0.0
    last_ack_at: float = 0.0
    next_checkpoint_write: float = 0.0
    # The next page of a catch-up (raw rows), read ahead while the current one
    # is converted and delivered: (start, count, its future). Used only when
    # it starts where the next read would and came back full.
    prefetch: tuple[int, int, Future[list[Any]]] | None = None
    logged: str | None = None
    # The status last shown to the subscribers.
    status: str = "initial"
    # The parked rows changed (a replay or discard request): reload them.
    parked_dirty: bool = False
    # For stats: parked rows as last loaded (plus parks written since), when
    # the stored checkpoint last moved (monotonic), and the retries of the
    # lifetimes that ended (the state counts the current one's).
    parked_count: int = 0
    checkpoint_moved_at: float = 0.0
    retries: int = 0

    @property
    def transient(self) -> bool:
        return self.options.transient

    def transient_lock_id(self) -> int:
        """Nothing is persisted, so the lock cannot key on a row id: a negative
        key from the name keeps processes exclusive without clashing with
        persistent subscriptions' (positive) ids."""
        return -(zlib.crc32(f"{self.stream_uuid}\x00{self.name}".encode()) & 0x7FFFFFFF) - 1


def read_row(backend: Backend, sub: Persistent) -> rows.SubscriptionRow:
    """The subscription's row, created at ``start_from`` when missing."""
    return backend.io.transact(
        lambda: rows.subscribe_op(backend.schema, sub.stream_uuid, sub.name, sub.options.start_from)
    )


def write_checkpoint(backend: Backend, sub: Persistent, position: int, *, durable: bool) -> bool:
    """Write the checkpoint by id; False when the row is gone (deleted)."""
    subscription_id = sub.subscription_id
    assert subscription_id is not None
    return backend.io.autocommit(
        lambda: rows.store_checkpoint_op(backend.schema, subscription_id, position, durable=durable)
    )


def park(backend: Backend, sub: Persistent, requests: list[ParkRequest]) -> None:
    """Write the park requests' rows (nothing for a transient subscription)."""
    if sub.transient or not requests:
        return
    assert sub.subscription_id is not None
    park_rows = [
        parked_rows.ParkRow(
            event_number=r.event.event_number,
            event_id=r.event.event_id,
            reason=r.reason,
            partition_key=r.partition_key,
        )
        for r in requests
    ]
    subscription_id = sub.subscription_id
    backend.io.transact(lambda: parked_rows.park_op(backend.schema, subscription_id, park_rows))
    for request in requests:
        what = "unreadable event" if isinstance(request.event, Unreadable) else "event"
        logger.warning(
            "subscription %r parked %s %d: %s",
            sub.name,
            what,
            request.event.event_number,
            request.reason,
        )


def load_parked(backend: Backend, sub: Persistent) -> tuple[dict[str, int], list[int]]:
    """The partition keys held back by parked events (key -> first parked
    number), and the numbers whose replay was requested."""
    if sub.transient or sub.subscription_id is None:
        return {}, []
    subscription_id = sub.subscription_id
    schema = backend.schema
    refs = backend.io.transact(lambda: parked_rows.parked_summary_op(schema, subscription_id))
    sub.parked_count = len(refs)
    blocked: dict[str, int] = {}
    for ref in refs:
        if ref.partition_key is not None:
            blocked.setdefault(ref.partition_key, ref.event_number)
    return blocked, [ref.event_number for ref in refs if ref.replay_requested]


def unpark(backend: Backend, sub: Persistent, numbers: list[int]) -> None:
    """Replayed events were acked: they are parked no more."""
    if sub.transient or sub.subscription_id is None or not numbers:
        return
    subscription_id = sub.subscription_id
    removed = backend.io.transact(
        lambda: parked_rows.remove_parked_op(backend.schema, subscription_id, numbers)
    )
    sub.parked_count = max(0, sub.parked_count - removed)
