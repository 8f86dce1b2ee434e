"""Locks are tied to the session that took them; deletion and lost locks stop
delivery; acks from before a loss never count in the new lifetime.

Two EventStore objects on one schema are two advisory-lock sessions, as two
processes would be.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from sqlalchemy_eventstore import ALL_STREAM

from .subscription_helpers import WAIT, append, checkpoint, eventually, numbers
from .test_subscriptions_locking import foreign_locks, steal_lock, terminate_lock_session

__all__ = ["foreign_locks"]  # the fixture, imported for these tests


def lock_holder(admin_engine, schema: str, name: str) -> int | None:
    """The pid holding the subscription's advisory lock (None: nobody)."""
    with admin_engine.connect() as conn:
        return conn.execute(
            text(
                f"""SELECT l.pid FROM pg_locks l JOIN "{schema}".subscriptions s
                    ON l.objid = s.subscription_id
                    WHERE l.locktype = 'advisory' AND l.granted
                      AND l.classid = CAST(CAST(CAST(:t AS regclass) AS oid) AS int)
                      AND s.subscription_name = :n"""
            ),
            {"t": f'"{schema}".subscriptions', "n": name},
        ).scalar()


def test_a_replaced_lock_session_drops_the_subscriptions_that_held_locks_on_it(
    make_store, driver, admin_engine
):
    es = make_store(driver=driver, subscription_retry_interval=0.1)
    a = es.subscribe_to_all_streams("a")
    assert a.wait_subscribed(WAIT)
    assert lock_holder(admin_engine, es.schema, "a") is not None
    # The lock session dies; another subscription starting at once replaces
    # it before the next lock check.
    terminate_lock_session(admin_engine, es.schema)
    b = es.subscribe_to_all_streams("b")
    assert b.wait_subscribed(WAIT)
    # "a" may say it is subscribed only while it really holds its lock again.
    assert eventually(
        lambda: a.subscribed and lock_holder(admin_engine, es.schema, "a") is not None
    )
    for _ in range(10):
        if a.subscribed:
            assert lock_holder(admin_engine, es.schema, "a") is not None
        time.sleep(0.05)


def test_acks_from_before_a_lost_lock_are_ignored_and_queued_batches_withdrawn(
    make_store, driver, database_url, admin_engine, foreign_locks
):
    es = make_store(driver=driver, subscription_retry_interval=0.2)
    sub = es.subscribe_to_all_streams("locked", buffer_size=2, max_size=10)
    assert sub.wait_subscribed(WAIT)
    append(es, "s", 4)
    first = sub.receive(timeout=WAIT)
    assert numbers(first) == [1, 2]
    lock = steal_lock(database_url, admin_engine, es.schema, "locked")
    foreign_locks.append(lock)
    assert eventually(lambda: not sub.subscribed)
    assert sub.status == "disconnected"
    sub.ack(first)  # from the lost lifetime: ignored quietly, no error
    assert checkpoint(admin_engine, es.schema, "locked") == 0
    lock.release()
    assert sub.wait_subscribed(WAIT)
    again = sub.receive(timeout=WAIT)
    assert numbers(again) == [1, 2]  # redelivered: the old ack did not count
    sub.ack(first)  # still the old batch: ignored, not matched against [1, 2] anew
    assert checkpoint(admin_engine, es.schema, "locked") == 0
    with pytest.raises(TimeoutError):
        sub.receive(timeout=0.3)  # 3 and 4 wait for the ack of the new batch
    sub.ack(again)
    assert numbers(sub.receive(timeout=WAIT)) == [3, 4]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "locked") == 2)


def test_deleting_a_subscription_stops_it_in_every_process_and_spares_its_successor(
    make_store, driver, admin_engine
):
    running = make_store(driver=driver)
    other = make_store(driver=driver, schema=running.schema, init=False)
    append(running, "s", 3)
    old = running.subscribe_to_all_streams("shared", buffer_size=3)
    assert old.wait_subscribed(WAIT)
    batch = old.receive(timeout=WAIT)
    assert numbers(batch) == [1, 2, 3]
    other.delete_all_streams_subscription("shared")
    assert eventually(lambda: old.status == "unsubscribed")
    new = other.subscribe_to_all_streams("shared", buffer_size=3)
    assert new.wait_subscribed(WAIT)
    assert numbers(new.receive(timeout=WAIT)) == [1, 2, 3]
    old.ack(batch)  # the old process's ack must not move the new row
    time.sleep(0.3)
    assert checkpoint(admin_engine, running.schema, "shared") == 0


def test_a_takeover_through_a_stale_pooled_connection_retries_at_once(make_store, admin_engine):
    holder = make_store(name="holder")
    standby = make_store(
        schema=holder.schema, init=False, name="standby", subscription_retry_interval=3.0
    )
    a = holder.subscribe_to_all_streams("taken")
    assert a.wait_subscribed(WAIT)
    b = standby.subscribe_to_all_streams("taken")
    assert eventually(lambda: b.status == "disconnected")
    tried_at = time.monotonic()
    # The standby's pooled connections die (a restart, a terminated backend).
    with admin_engine.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'standby'"
            )
        )
    holder.close()
    assert b.wait_subscribed(WAIT)
    # Its next attempt (within one retry interval) succeeds, stale pool or not.
    assert time.monotonic() - tried_at < 3.0 + 1.5


def test_a_new_subscription_whose_first_start_fails_retries_soon(make_store):
    es = make_store(init=False, subscription_retry_interval=60.0)
    sub = es.subscribe_to_stream(ALL_STREAM, "early")
    assert eventually(lambda: sub.status == "disconnected")
    assert not sub.subscribed  # no tables yet
    es.init()
    assert sub.wait_subscribed(10)  # backoff, not a 60 s retry interval
