"""Polling mode on a direct connection (``listen=False``): subscriptions get every event.

Advisory locks work here, so persistent subscriptions run as usual --
checkpoints, parked events and replays included -- with every change found
by polling rather than notified. (Polling behind a real PgBouncer, found out
by itself: tests/test_pgbouncer.py.)
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from sqlalchemy_eventstore import ALL_STREAM, EventData

from .subscription_helpers import WAIT, append, checkpoint, collect, eventually, flatten, new_id


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "async-psycopg", "async-asyncpg"])
def test_subscriptions_poll_without_listen(
    make_store: Any, admin_engine: Any, caplog: pytest.LogCaptureFixture, driver: str
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlalchemy_eventstore")
    store = make_store(driver=driver, listen=False, poll_interval=0.1)
    stream = new_id()
    append(store, stream, 2)

    everything = store.subscribe(ALL_STREAM)
    one_stream = store.subscribe(stream)
    projector = store.subscribe_to_all_streams("projector", buffer_size=10)
    assert projector.wait_subscribed(WAIT)
    assert store.stats().notification_mode == "poll"
    # A poll has seen both streams (a transient subscription's head comes from polls).
    assert eventually(lambda: everything.stats.head == 2 and one_stream.stats.head == 2)

    # The catch-up, then live events of an existing stream, a new stream and a link.
    assert [e.event_number for e in flatten(collect(projector, 2, ack=True))] == [1, 2]
    append(store, stream, 3, first=3)
    other = new_id()
    append(store, other, 1)
    linked = store.read_stream_forward(other)
    store.link_to_stream(stream, 5, linked)
    assert [e.event_number for e in flatten(collect(projector, 4, ack=True))] == [3, 4, 5, 6]
    assert [e.event_number for e in flatten(collect(everything, 4))] == [3, 4, 5, 6]
    assert [e.event_number for e in flatten(collect(one_stream, 4))] == [3, 4, 5, 6]
    assert [e.event_id for e in flatten(collect(one_stream, 0))] == []
    assert eventually(lambda: checkpoint(admin_engine, store.schema, "projector") == 6)
    stats = store.stats()
    assert stats.notifications >= 2 and stats.notification_lag is not None
    assert eventually(lambda: projector.stats.lag == 0 and projector.stats.head == 6)

    # Why, once; and no LISTEN connection anywhere.
    why = [r.getMessage() for r in caplog.records if "poll for new events" in r.getMessage()]
    assert len(why) == 1 and "listen=False" in why[0], why
    with admin_engine.connect() as conn:
        listeners = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %(name)s",
            {"name": f"eventstore-listener-{store.schema}"},
        ).scalar()
    assert listeners == 0


@pytest.mark.parametrize("driver", ["psycopg2", "async-asyncpg"])
def test_replays_of_parked_events_are_polled(make_store: Any, driver: str) -> None:
    store = make_store(driver=driver, listen=False, poll_interval=0.1)
    failing = {2}
    handled: list[int] = []

    def handler(events: list[Any]) -> None:
        for event in events:
            if event.event_number in failing:
                raise RuntimeError("not now")
            handled.append(event.event_number)

    sub = store.subscribe_to_all_streams("worker", handler=handler, max_retries=0)
    assert sub.wait_subscribed(WAIT)
    store.append_to_stream(new_id(), 0, [EventData("E", {"n": n}) for n in range(3)])
    assert eventually(lambda: handled == [1, 3] and sub.stats.parked == 1)
    assert [p.event.event_number for p in store.parked_events("worker")] == [2]

    failing.clear()
    assert store.replay_parked("worker") == 1  # no NOTIFY reaches us: the poll finds it
    assert eventually(lambda: handled == [1, 3, 2])
    assert eventually(lambda: store.parked_events("worker") == [] and sub.stats.parked == 0)
