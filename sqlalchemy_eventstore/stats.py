"""What a running store counts: :class:`StoreStats` and :class:`SubscriptionStats`.

Plain frozen snapshots, read with :meth:`EventStore.stats` and
:attr:`Subscription.stats`; :mod:`sqlalchemy_eventstore.otel` exports the
same numbers through OpenTelemetry. Every number is this process's view:
counters start at zero when the store is made, and a subscription's figures
are those of its subscribers in this process. (``eventstore status`` shows
the stored view of every subscription, whichever process runs it.)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StoreStats", "SubscriptionStats"]


@dataclass(frozen=True)
class SubscriptionStats:
    """One subscription as this process runs it, at one moment.

    Attributes:
        stream_uuid: The subscribed stream (``$all`` for all streams).
        subscription_name: The subscription's name; None for a transient
            :meth:`EventStore.subscribe`.
        status: As :attr:`Subscription.status` (``"subscribed"``,
            ``"catching_up"``, ``"retrying"``, ``"disconnected"``, ...).
        subscribers: Its subscribers in this process.
        head: The last event number of the subscribed stream this process
            knows of (from notifications, polls and reads); None before it
            has looked.
        checkpoint: The last position handled: every event up to it was
            acknowledged, filtered out or parked (persistent subscriptions,
            while this process holds the subscription; else None). May be
            ahead of :attr:`stored_checkpoint` by the acks not yet written.
        stored_checkpoint: The checkpoint as last read or written by this
            process (None for a transient subscription or before it started).
        lag: Events of the stream after :attr:`checkpoint` (after the last
            event delivered, for a transient subscription): ``head -
            checkpoint``, never negative; None while either is unknown.
        checkpoint_age: Seconds since the stored checkpoint last moved
            forward in this process -- or since this process took the
            subscription, if it has not moved since. A subscription that is
            caught up (``lag == 0``) and idle ages too; together with a lag
            above zero, a growing age means it is stuck. None when not held.
        in_flight: Events sent to its subscribers here and not acknowledged yet.
        queued: Events read and waiting in memory to be sent.
        parked: Parked events of the subscription (rows of ``parked_events``
            as last loaded, plus those this process parked since); None when
            not held here.
        retries: How many times, since this process subscribed, an event was
            tried again because user code (handler, selector, mapper,
            ``partition_by``) or the serializer failed on it.
    """

    stream_uuid: str
    subscription_name: str | None
    status: str
    subscribers: int
    head: int | None
    checkpoint: int | None
    stored_checkpoint: int | None
    lag: int | None
    checkpoint_age: float | None
    in_flight: int
    queued: int
    parked: int | None
    retries: int


@dataclass(frozen=True)
class StoreStats:
    """The store's counters since it was made, and its subscriptions here.

    Attributes:
        appends: Calls of ``append_to_stream`` that returned without raising
            (with ``conn=``, the caller's transaction may still roll back).
        events_appended: Events those calls appended.
        notifications: Notifications of new events this process received
            (NOTIFYs, or stream changes found by polling).
        listener_reconnects: Times the LISTEN connection was lost and made again.
        notification_lag: Seconds from the ``created_at`` of the newest event
            read after its notification -- the server's clock at the start of
            the appending transaction -- to the moment this process had read
            it (this machine's clock), as measured for the last stream
            published live to a subscriber here. It covers the transaction's
            duration, the commit-to-notification delay, the poll interval in
            polling mode and the read, plus any clock difference between
            server and client. None until an event was published live.
        notification_mode: ``"listen"`` (PostgreSQL LISTEN/NOTIFY),
            ``"poll"`` (polling, see ``poll_interval``) or None before the
            first subscription started the listener.
        subscriptions: :class:`SubscriptionStats` of each persistent
            subscription this process subscribes to, by stream then name.
    """

    appends: int
    events_appended: int
    notifications: int
    listener_reconnects: int
    notification_lag: float | None
    notification_mode: str | None
    subscriptions: tuple[SubscriptionStats, ...]


for _cls in (StoreStats, SubscriptionStats):
    _cls.__module__ = "sqlalchemy_eventstore"
