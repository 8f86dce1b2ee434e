"""A named subscription runs at most once across stores and processes.

Ports of the reference's subscription_locking_test.exs, the "duplicate
subscriptions" part of subscribe_to_stream_test.exs and
subscription_recovery_test.exs. Two EventStore objects on one schema are two
advisory-lock sessions, as two nodes would be. Where the reference sends its
subscription a fake "lock released" message, here the lock session's backend
is terminated for real and a session of the test's own takes the lock before
the store can retake it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore

from .mailbox_helpers import assert_quiet, checkpoint, collect, next_numbers, numbers
from .subscription_helpers import WAIT, eventually


def append(store: EventStore, stream: str, n: int) -> None:
    store.append_to_stream(stream, ANY_VERSION, [EventData("Tick", {"i": i}) for i in range(n)])


def subscription_id(admin_engine: Engine, schema: str, name: str) -> int:
    with admin_engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    f'SELECT subscription_id FROM "{schema}".subscriptions '
                    "WHERE subscription_name = :n"
                ),
                {"n": name},
            ).scalar_one()
        )


def terminate_lock_session(admin_engine: Engine, schema: str) -> int:
    """Terminate the advisory-lock backend of the store(s) on ``schema``."""
    with admin_engine.connect() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :app"
                ),
                {"app": f"eventstore-locks-{schema}"},
            ).all()
        )


class ForeignLock:
    """A session of the test's own that holds a subscription's advisory lock
    (the reference's key: the subscriptions table's oid and the row's id)."""

    def __init__(self, database_url: URL, schema: str, subscription_id: int) -> None:
        self._engine = create_engine(database_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._conn = self._engine.connect()
        self._params = {"table": f'"{schema}".subscriptions', "id": subscription_id}

    def try_take(self) -> bool:
        return bool(
            self._conn.execute(
                text(
                    "SELECT pg_try_advisory_lock("
                    "CAST(CAST(CAST(:table AS regclass) AS oid) AS int), CAST(:id AS int))"
                ),
                self._params,
            ).scalar()
        )

    def release(self) -> None:
        self._conn.close()
        self._engine.dispose()


def steal_lock(database_url: URL, admin_engine: Engine, schema: str, name: str) -> ForeignLock:
    """Terminate the store's lock session and take the subscription's lock
    before the store retakes it (it notices the loss within a lock check)."""
    lock = ForeignLock(database_url, schema, subscription_id(admin_engine, schema, name))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        terminate_lock_session(admin_engine, schema)
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            if lock.try_take():
                return lock
    lock.release()
    pytest.fail("could not take the subscription's lock from the store")


@pytest.fixture
def foreign_locks() -> Any:
    held: list[ForeignLock] = []
    yield held
    for lock in held:
        lock.release()


# -- two stores, one subscription ---------------------------------------------------------


def test_only_one_of_two_stores_runs_a_named_subscription(make_store):
    a = make_store(subscription_retry_interval=0.2)
    b = make_store(schema=a.schema, init=False, subscription_retry_interval=0.2)
    sa = a.subscribe_to_all_streams("shared", buffer_size=10)
    assert sa.wait_subscribed(WAIT)
    sb = b.subscribe_to_all_streams("shared", buffer_size=10)
    assert not sb.wait_subscribed(1.0)  # five retry intervals
    append(a, "s", 5)
    assert next_numbers(sa) == [1, 2, 3, 4, 5]
    assert_quiet(sb)
    assert not sb.subscribed


def test_two_stores_subscribing_at_once_give_exactly_one_subscriber(make_store, start_gate):
    a = make_store(subscription_retry_interval=0.2)
    b = make_store(schema=a.schema, init=False, subscription_retry_interval=0.2)
    stores = [a, b]
    subs = start_gate(2, lambda i: stores[i].subscribe_to_all_streams("race", buffer_size=10))
    assert eventually(lambda: any(s.subscribed for s in subs))
    time.sleep(1.0)
    assert [s.subscribed for s in subs].count(True) == 1
    append(a, "s", 3)
    holder, other = subs if subs[0].subscribed else subs[::-1]
    assert next_numbers(holder) == [1, 2, 3]
    assert_quiet(other)


@pytest.mark.parametrize("release", ["close", "unsubscribe", "unsubscribe_from_all_streams"])
def test_the_other_store_takes_over_from_the_last_ack(make_store, admin_engine, release):
    a = make_store(subscription_retry_interval=0.2)
    b = make_store(schema=a.schema, init=False, subscription_retry_interval=0.2)
    sa = a.subscribe_to_all_streams("shared", buffer_size=5)
    assert sa.wait_subscribed(WAIT)
    sb = b.subscribe_to_all_streams("shared", buffer_size=10)
    append(a, "s", 8)
    assert next_numbers(sa) == [1, 2, 3, 4, 5]
    sa.ack(3)  # 4 and 5 are in flight, unacknowledged
    assert not sb.subscribed
    started = time.monotonic()
    if release == "close":
        a.close()
    elif release == "unsubscribe":
        sa.unsubscribe()
    else:
        a.unsubscribe_from_all_streams("shared")
    assert time.monotonic() - started < 5
    assert checkpoint(admin_engine, a.schema, "shared") == 3
    assert sb.wait_subscribed(WAIT)
    append(b, "s", 2)
    assert collect(sb, 7) == [4, 5, 6, 7, 8, 9, 10]
    assert_quiet(sb)


def test_handlers_of_two_stores_between_them_handle_every_event(make_store):
    """Appends continue while the holder is closed: the other store's handler
    picks up where the holder's acknowledgements stopped, nothing is lost."""
    a = make_store(subscription_retry_interval=0.2)
    b = make_store(schema=a.schema, init=False, subscription_retry_interval=0.2)
    writer = make_store(schema=a.schema, init=False)
    got: dict[str, list[int]] = {"a": [], "b": []}
    lock = threading.Lock()

    def handler_for(which: str) -> Callable[[list[Any]], None]:
        def handler(events: list[Any]) -> None:
            with lock:
                got[which].extend(numbers(events))

        return handler

    ha = a.subscribe_to_all_streams("shared", handler=handler_for("a"), buffer_size=5)
    assert ha.wait_subscribed(WAIT)
    hb = b.subscribe_to_all_streams("shared", handler=handler_for("b"), buffer_size=5)
    for _ in range(10):
        append(writer, "s", 3)
    assert eventually(lambda: len(got["a"]) >= 30)
    closer = threading.Thread(target=a.close)
    closer.start()
    for _ in range(10):
        append(writer, "s", 3)
        time.sleep(0.01)
    closer.join(WAIT)
    assert hb.wait_subscribed(WAIT)
    assert eventually(lambda: set(got["a"]) | set(got["b"]) >= set(range(1, 61)))
    with lock:
        assert got["a"][:30] == list(range(1, 31))
        # b starts right after the last event a acknowledged: no gap, in order.
        assert got["b"] == list(range(got["b"][0], 61))
        assert got["b"][0] <= max(got["a"]) + 1


def test_a_subscription_locked_elsewhere_waits_then_catches_up(
    make_store, admin_engine, database_url, foreign_locks
):
    store = make_store(subscription_retry_interval=0.2)
    # Create the subscription's row, then hold its lock from another session.
    first = store.subscribe_to_all_streams("locked")
    assert first.wait_subscribed(WAIT)
    first.unsubscribe()
    lock = ForeignLock(
        database_url, store.schema, subscription_id(admin_engine, store.schema, "locked")
    )
    foreign_locks.append(lock)
    assert lock.try_take()

    sub = store.subscribe_to_all_streams("locked", buffer_size=3)
    assert not sub.wait_subscribed(1.0)
    append(store, "stream1", 1)
    assert_quiet(sub)  # not subscribed: no events

    lock.release()
    assert sub.wait_subscribed(WAIT)
    batch = sub.receive(timeout=WAIT)
    assert [(e.event_number, e.stream_uuid) for e in batch] == [(1, "stream1")]
    append(store, "stream2", 2)
    sub.ack(batch)
    batch = sub.receive(timeout=WAIT)
    assert [(e.event_number, e.stream_uuid) for e in batch] == [(2, "stream2"), (3, "stream2")]
    sub.ack(batch)
    assert_quiet(sub)


# -- the lock session is lost (subscription_locking_test.exs) -------------------------------


def lose_lock(sub, store, database_url, admin_engine, foreign_locks, name="locked") -> ForeignLock:
    lock = steal_lock(database_url, admin_engine, store.schema, name)
    foreign_locks.append(lock)
    assert eventually(lambda: not sub.subscribed), "the store did not notice its lost lock"
    return lock


def test_lost_lock_stops_delivery_and_resends_in_flight_events(
    make_store, admin_engine, database_url, foreign_locks
):
    store = make_store(subscription_retry_interval=0.2)
    sub = store.subscribe_to_all_streams("locked", buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    append(store, "s", 3)
    assert next_numbers(sub) == [1, 2, 3]

    lock = lose_lock(sub, store, database_url, admin_engine, foreign_locks)
    # Acknowledgements while not subscribed are ignored...
    sub.ack(1)
    sub.ack(2)
    sub.ack(3)
    assert checkpoint(admin_engine, store.schema, "locked") == 0
    # ... and nothing is delivered while another session holds the lock.
    append(store, "s", 2)
    assert_quiet(sub, wait=1.0)

    lock.release()
    assert sub.wait_subscribed(WAIT)
    # Sent but never acknowledged: sent again, then the rest.
    assert next_numbers(sub) == [1, 2, 3]
    sub.ack(3)
    assert next_numbers(sub) == [4, 5]


def test_lost_lock_does_not_resend_events_acked_before(
    make_store, admin_engine, database_url, foreign_locks
):
    store = make_store(subscription_retry_interval=0.2)
    sub = store.subscribe_to_all_streams("locked", buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    append(store, "s", 3)
    assert next_numbers(sub) == [1, 2, 3]
    sub.ack(1)
    assert_quiet(sub)
    lock = lose_lock(sub, store, database_url, admin_engine, foreign_locks)
    sub.ack(2)
    sub.ack(3)
    lock.release()
    assert sub.wait_subscribed(WAIT)
    assert next_numbers(sub) == [2, 3]


def test_lost_lock_does_not_resend_events_acked_by_another_instance(
    make_store, admin_engine, database_url, foreign_locks
):
    store = make_store(subscription_retry_interval=0.2)
    sub = store.subscribe_to_all_streams("locked", buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    append(store, "s", 3)
    assert next_numbers(sub) == [1, 2, 3]
    assert_quiet(sub)
    lock = lose_lock(sub, store, database_url, admin_engine, foreign_locks)
    # Whoever held the lock meanwhile acknowledged up to 2.
    with admin_engine.connect() as conn:
        conn.execute(
            text(
                f'UPDATE "{store.schema}".subscriptions SET last_seen = 2 '
                "WHERE subscription_name = :n"
            ),
            {"n": "locked"},
        )
    lock.release()
    assert sub.wait_subscribed(WAIT)
    assert next_numbers(sub) == [3]


def test_resubscribes_by_itself_after_its_lock_session_dies(make_store, admin_engine):
    store = make_store(subscription_retry_interval=0.2)
    sub = store.subscribe_to_all_streams("locked", buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    append(store, "s", 3)
    assert next_numbers(sub) == [1, 2, 3]
    assert terminate_lock_session(admin_engine, store.schema) == 1
    # Retaken on a new session: the unacknowledged events come again.
    assert next_numbers(sub) == [1, 2, 3]
    assert sub.subscribed
    sub.ack(3)
    append(store, "s", 1)
    assert next_numbers(sub) == [4]


def test_no_event_is_lost_while_the_lock_session_is_repeatedly_terminated(make_store, admin_engine):
    store = make_store(subscription_retry_interval=0.2)
    writer = make_store(schema=store.schema, init=False)
    received: list[int] = []
    lock = threading.Lock()

    def handler(events: list[Any]) -> None:
        with lock:
            received.extend(numbers(events))

    sub = store.subscribe_to_all_streams("locked", handler=handler, buffer_size=10)
    assert sub.wait_subscribed(WAIT)
    total = 0
    for round_ in range(4):
        for _ in range(10):
            append(writer, f"s{round_}", 5)
            total += 5
            time.sleep(0.005)
        terminate_lock_session(admin_engine, store.schema)
    assert eventually(lambda: set(received) >= set(range(1, total + 1)), timeout=2 * WAIT)
    assert eventually(lambda: checkpoint(admin_engine, store.schema, "locked") == total)
    with lock:
        # At least once, in order: a redelivery only repeats earlier events.
        highest = 0
        for number in received:
            assert number <= highest + 1, (number, highest)
            highest = max(highest, number)


# -- the listener's connection is lost (subscription_recovery_test.exs) -------------------------


def test_receives_events_after_the_listener_connection_is_killed(make_store, admin_engine):
    store = make_store()
    append(store, "stream1", 10)
    sub = store.subscribe_to_all_streams("recovery", buffer_size=10)
    assert sub.wait_subscribed(WAIT)
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == list(range(1, 11))
    sub.ack(batch)

    with admin_engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :app"
            ),
            {"app": f"eventstore-listener-{store.schema}"},
        ).all()
    assert len(killed) == 1
    append(store, "stream1", 10)
    append(store, "stream1", 10)
    got: list[Any] = []
    while len(got) < 20:
        batch = sub.receive(timeout=WAIT)
        assert all(e.stream_uuid == "stream1" for e in batch)
        got.extend(batch)
        sub.ack(batch)
    assert numbers(got) == list(range(11, 31))
    assert_quiet(sub)
