"""``store.stats()`` and ``sub.stats``: the figures of a running store, on a real database."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from sqlalchemy import text

from sqlalchemy_eventstore import (
    ALL_STREAM,
    EventData,
    StoreStats,
    SubscriptionStats,
    WrongExpectedVersionError,
)

from .subscription_helpers import WAIT, append, collect, eventually, flatten, new_id


def test_store_counts_appends_and_events(make_store: Any) -> None:
    store = make_store()
    empty = store.stats()
    assert isinstance(empty, StoreStats)
    assert (empty.appends, empty.events_appended, empty.notifications) == (0, 0, 0)
    assert empty.notification_mode is None and empty.subscriptions == ()
    stream = new_id()
    append(store, stream, 3)
    append(store, stream, 2)
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(stream, 1, [EventData("Late", {})])
    with pytest.raises(ValueError):
        store.append_to_stream(stream, 5, [])
    with store.engine.begin() as conn:
        store.append_to_stream(new_id(), 0, [EventData("InTx", {})] * 4, conn=conn)
    stats = store.stats()
    assert (stats.appends, stats.events_appended) == (3, 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.appends = 0  # type: ignore[misc]


@pytest.mark.parametrize("driver", ["psycopg2", "async-asyncpg"])
def test_lag_in_flight_queued_and_checkpoint_of_a_mailbox(make_store: Any, driver: str) -> None:
    store = make_store(driver=driver)
    stream = new_id()
    append(store, stream, 10)
    sub = store.subscribe_to_all_streams("projector", buffer_size=3)
    assert sub.wait_subscribed(WAIT)

    def settled() -> SubscriptionStats:
        stats: SubscriptionStats = sub.stats
        return stats

    # Three sent, seven waiting in memory, nothing acked: ten behind.
    assert eventually(lambda: settled().in_flight == 3 and settled().queued == 7)
    stats = settled()
    assert isinstance(stats, SubscriptionStats)
    assert (stats.subscription_name, stats.stream_uuid) == ("projector", ALL_STREAM)
    assert (stats.head, stats.checkpoint, stats.stored_checkpoint, stats.lag) == (10, 0, 0, 10)
    assert stats.status == "max_capacity" and stats.subscribers == 1
    assert (stats.parked, stats.retries) == (0, 0)
    assert stats.checkpoint_age is not None and stats.checkpoint_age >= 0
    (listed,) = store.stats().subscriptions
    assert (listed.subscription_name, listed.lag, listed.in_flight) == ("projector", 10, 3)

    before = time.monotonic()
    delivered = flatten(collect(sub, 10, ack=True))
    assert [e.event_number for e in delivered] == list(range(1, 11))
    assert eventually(lambda: settled().stored_checkpoint == 10)
    stats = settled()
    assert (stats.lag, stats.in_flight, stats.queued, stats.checkpoint) == (0, 0, 0, 10)
    assert stats.status == "subscribed"
    # The age counts from the write that moved it, after `before`.
    assert stats.checkpoint_age is not None
    assert stats.checkpoint_age <= time.monotonic() - before

    # Live events: the head moves with the notification, the lag with it.
    append(store, stream, 2, first=11)
    assert eventually(lambda: settled().head == 12 and settled().in_flight == 2)
    assert settled().lag == 2
    overall = store.stats()
    assert overall.notification_mode == "listen"
    assert overall.notifications >= 1
    assert overall.notification_lag is not None
    assert [s.subscription_name for s in overall.subscriptions] == ["projector"]
    sub.ack(collect(sub, 2)[-1])
    assert eventually(lambda: settled().lag == 0)

    sub.unsubscribe()
    gone = sub.stats
    assert gone.status == "unsubscribed" and gone.lag is None
    assert store.stats().subscriptions == ()


def test_lag_of_a_subscription_to_one_stream(make_store: Any) -> None:
    store = make_store()
    stream, other = new_id(), new_id()
    append(store, stream, 4)
    append(store, other, 6)
    sub = store.subscribe_to_stream(stream, "audit", buffer_size=10)
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: sub.stats.in_flight == 4)
    assert (sub.stats.head, sub.stats.lag) == (4, 4)
    sub.ack(collect(sub, 4)[-1])
    assert eventually(lambda: sub.stats.lag == 0)
    append(store, other, 3)  # another stream: no lag here
    append(store, stream, 1, first=5)
    assert eventually(lambda: sub.stats.head == 5)
    assert sub.stats.lag == 1


@pytest.mark.parametrize("driver", ["psycopg2", "async-psycopg"])
def test_retries_and_parked_events_of_a_failing_handler(make_store: Any, driver: str) -> None:
    store = make_store(driver=driver)
    handled: list[int] = []

    def handler(events: list[Any]) -> None:
        for event in events:
            if event.data["event"] == 2:
                raise RuntimeError("cannot handle event 2")
            handled.append(event.event_number)

    sub = store.subscribe_to_all_streams("failing", handler=handler, max_retries=2)
    assert sub.wait_subscribed(WAIT)
    append(store, new_id(), 3)
    assert eventually(lambda: handled == [1, 3])
    # Two retries, then parked (a third failure is not retried).
    assert eventually(lambda: sub.stats.parked == 1 and sub.stats.lag == 0)
    assert sub.stats.retries == 2
    assert [p.event.event_number for p in store.parked_events("failing")] == [2]

    assert store.discard_parked("failing") == 1
    assert eventually(lambda: sub.stats.parked == 0)


def test_retries_of_a_failing_selector(make_store: Any) -> None:
    store = make_store()
    failures = iter([True, True, True])

    def selector(event: Any) -> bool:
        if next(failures, False):
            raise ValueError("not yet")
        return True

    sub = store.subscribe_to_all_streams("picky", selector=selector)
    assert sub.wait_subscribed(WAIT)
    append(store, new_id(), 1)
    batches = collect(sub, 1, ack=True)
    assert [e.event_number for e in flatten(batches)] == [1]
    assert sub.stats.retries == 3
    assert sub.stats.parked == 0


@pytest.mark.parametrize("driver", ["psycopg2", "async-psycopg", "async-asyncpg"])
def test_listener_reconnects_are_counted(make_store: Any, admin_engine: Any, driver: str) -> None:
    store = make_store(driver=driver)
    sub = store.subscribe(ALL_STREAM)
    assert sub.stats.subscription_name is None and sub.stats.status == "subscribed"
    assert store.stats().listener_reconnects == 0
    with admin_engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": f"eventstore-listener-{store.schema}"},
        ).all()
    assert killed == [(True,)]
    assert eventually(lambda: store.stats().listener_reconnects == 1)
    append(store, new_id(), 2)
    assert [e.event_number for e in flatten(collect(sub, 2))] == [1, 2]
    assert sub.stats.head == 2 and sub.stats.lag == 0
