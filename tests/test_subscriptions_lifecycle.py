"""Unsubscribing, deleting subscriptions, and closing the store.

Ports of the "unsubscribe from stream" and "delete subscription" parts of
the reference's subscribe_to_stream_test.exs and of
monitor_subscription_test.exs (a stopped subscriber stops its subscription
and nothing else), plus what close() must leave behind: no threads, no
database sessions.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, CURRENT, ORIGIN, EventData, EventStore

from .subscription_helpers import WAIT, eventually
from .test_subscriptions_locking import ForeignLock, subscription_id


def append(store: EventStore, stream: str, n: int, first: int = 1) -> list[EventData]:
    events = [EventData("Tick", {"n": first + i}) for i in range(n)]
    store.append_to_stream(stream, ANY_VERSION, events)
    return events


def numbers(batch: list[Any]) -> list[int]:
    return [e.event_number for e in batch]


def data(batch: list[Any]) -> list[Any]:
    return [e.data for e in batch]


def assert_quiet(*subs, wait: float = 0.4) -> None:
    time.sleep(wait)
    for sub in subs:
        with pytest.raises(TimeoutError):
            sub.receive(timeout=0)


def subscription_rows(admin_engine: Engine, schema: str) -> list[tuple[str, str, int | None]]:
    with admin_engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT stream_uuid, subscription_name, last_seen "
                    f'FROM "{schema}".subscriptions ORDER BY subscription_id'
                )
            )
        ]


def checkpoint(admin_engine: Engine, schema: str, name: str) -> int | None:
    for _, row_name, last_seen in subscription_rows(admin_engine, schema):
        if row_name == name:
            return last_seen
    return None


def handler_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"eventstore-handler-{name}"]


class Recorder:
    """A handler that records the batches it is given."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self._lock = threading.Lock()

    def __call__(self, events: list[Any]) -> None:
        with self._lock:
            self.batches.append(list(events))

    @property
    def numbers(self) -> list[int]:
        with self._lock:
            return [e.event_number for batch in self.batches for e in batch]


# -- unsubscribe ----------------------------------------------------------------------------


def test_unsubscribe_from_stream_keeps_the_checkpoint_and_resubscribing_resumes(
    make_store, admin_engine
):
    store = make_store()
    initial = append(store, "s", 1)
    later = append(store, "s", 1, first=2)
    sub = store.subscribe_to_stream("s", "sub")
    assert sub.wait_subscribed(WAIT)
    batch = sub.receive(timeout=WAIT)
    assert data(batch) == [e.data for e in initial]
    sub.ack(batch)
    batch = sub.receive(timeout=WAIT)
    assert data(batch) == [e.data for e in later]

    store.unsubscribe_from_stream("s", "sub")  # event 2 was never acknowledged
    assert checkpoint(admin_engine, store.schema, "sub") == 1
    append(store, "s", 1, first=3)
    assert_quiet(sub)

    again = store.subscribe_to_stream("s", "sub", start_from=CURRENT)  # ignored: it exists
    assert again.wait_subscribed(WAIT)
    batch = again.receive(timeout=WAIT)
    assert data(batch) == [e.data for e in later]
    again.ack(batch)
    assert numbers(again.receive(timeout=WAIT)) == [3]
    assert checkpoint(admin_engine, store.schema, "sub") == 2


@pytest.mark.parametrize("how", ["handle", "store"])
def test_unsubscribe_from_all_streams_resumes_after_the_last_ack(make_store, admin_engine, how):
    store = make_store()
    append(store, "a", 3)
    append(store, "b", 3)
    sub = store.subscribe_to_all_streams("all", buffer_size=4)
    assert sub.wait_subscribed(WAIT)
    assert numbers(sub.receive(timeout=WAIT)) == [1, 2, 3, 4]
    sub.ack(2)
    if how == "handle":
        sub.unsubscribe()
    else:
        store.unsubscribe_from_all_streams("all")
    assert checkpoint(admin_engine, store.schema, "all") == 2
    again = store.subscribe_to_all_streams("all", buffer_size=10)
    assert numbers(again.receive(timeout=WAIT)) == [3, 4, 5, 6]


def test_unsubscribe_stops_a_handler_subscriber(make_store):
    store = make_store()
    recorder = Recorder()
    sub = store.subscribe_to_stream("s", "handled", handler=recorder)
    assert sub.wait_subscribed(WAIT)
    append(store, "s", 1)
    assert eventually(lambda: recorder.numbers == [1])
    assert len(handler_threads("handled")) == 1
    store.unsubscribe_from_stream("s", "handled")
    assert eventually(lambda: not handler_threads("handled"))
    append(store, "s", 1, first=2)
    time.sleep(0.4)
    assert recorder.numbers == [1]


def test_unsubscribing_an_unknown_subscription_is_harmless(make_store):
    store = make_store()
    store.unsubscribe_from_stream("s", "nobody")
    store.unsubscribe_from_all_streams("nobody")
    sub = store.subscribe_to_all_streams("somebody")
    store.unsubscribe_from_all_streams("nobody")
    append(store, "s", 1)
    assert numbers(sub.receive(timeout=WAIT)) == [1]


# -- a subscriber stopping leaves the others alone (monitor_subscription_test.exs) ----------


@pytest.mark.parametrize("stream", [ALL_STREAM, "single"])
def test_stopping_one_subscriber_leaves_other_subscriptions_running(make_store, stream):
    store = make_store()
    first, second = Recorder(), Recorder()
    s1 = store.subscribe_to_stream(stream, "sub-1", handler=first, buffer_size=3)
    s2 = store.subscribe_to_stream(stream, "sub-2", handler=second, buffer_size=3)
    assert s1.wait_subscribed(WAIT)
    assert s2.wait_subscribed(WAIT)
    s1.unsubscribe()
    assert eventually(lambda: not handler_threads("sub-1"))
    events = append(store, "single", 1)
    assert eventually(lambda: len(second.batches) == 1)
    time.sleep(0.3)
    assert [data(batch) for batch in second.batches] == [[e.data for e in events]]
    assert first.batches == []
    assert handler_threads("sub-2")


def test_a_failing_handler_does_not_stop_its_subscription_or_others(make_store):
    # Where an Elixir subscriber crashes, a Python handler raises: its batch is
    # not acknowledged and is retried; other subscriptions are unaffected.
    store = make_store()
    attempts: list[int] = []
    other = Recorder()

    def flaky(events: list[Any]) -> None:
        attempts.extend(numbers(events))
        if len(attempts) < 3:
            raise RuntimeError("handler failure (expected by the test)")

    store.subscribe_to_all_streams("flaky", handler=flaky)
    store.subscribe_to_all_streams("steady", handler=other)
    append(store, "s", 2)
    assert eventually(lambda: other.numbers == [1, 2])
    assert eventually(lambda: attempts[-1:] == [2])
    assert attempts == [1, 1, 1, 2]


# -- delete subscription ------------------------------------------------------------------------


def test_delete_subscription_removes_it_and_stops_its_subscriber(make_store, admin_engine):
    store = make_store()
    recorder = Recorder()
    sub = store.subscribe_to_stream("s", "doomed", handler=recorder)
    keep = store.subscribe_to_stream("s", "kept")
    assert sub.wait_subscribed(WAIT)
    assert keep.wait_subscribed(WAIT)
    append(store, "s", 1)
    assert eventually(lambda: recorder.numbers == [1])
    assert eventually(lambda: checkpoint(admin_engine, store.schema, "doomed") == 1)

    store.delete_subscription("s", "doomed")
    assert [row[1] for row in subscription_rows(admin_engine, store.schema)] == ["kept"]
    assert eventually(lambda: not handler_threads("doomed"))
    append(store, "s", 1, first=2)
    assert numbers(keep.receive(timeout=WAIT)) == [1]
    time.sleep(0.3)
    assert recorder.numbers == [1]


@pytest.mark.parametrize(
    ("start_from", "expected"), [(ORIGIN, [1, 2, 3, 4]), (CURRENT, [4]), (2, [3, 4])]
)
def test_a_deleted_subscription_starts_again_per_start_from(
    make_store, admin_engine, start_from, expected
):
    store = make_store()
    append(store, "s", 3)
    sub = store.subscribe_to_all_streams("again", buffer_size=10)
    assert numbers(sub.receive(timeout=WAIT)) == [1, 2, 3]
    sub.ack(3)
    store.delete_all_streams_subscription("again")
    assert subscription_rows(admin_engine, store.schema) == []
    assert_quiet(sub)

    fresh = store.subscribe_to_all_streams("again", buffer_size=10, start_from=start_from)
    assert fresh.wait_subscribed(WAIT)
    append(store, "s", 1, first=4)
    got: list[int] = []
    while len(got) < len(expected):
        got.extend(numbers(fresh.receive(timeout=WAIT)))
    assert got == expected
    assert_quiet(fresh)


def test_delete_subscription_without_a_subscriber(make_store, admin_engine):
    store = make_store()
    append(store, "s", 2)
    sub = store.subscribe_to_stream("s", "idle", buffer_size=2)
    sub.ack(sub.receive(timeout=WAIT))
    sub.unsubscribe()
    assert checkpoint(admin_engine, store.schema, "idle") == 2
    other = make_store(schema=store.schema, init=False)  # no runner, no subscriber
    other.delete_subscription("s", "idle")
    assert subscription_rows(admin_engine, store.schema) == []
    # Gone: subscribing again starts from the origin.
    again = store.subscribe_to_stream("s", "idle", buffer_size=2)
    assert numbers(again.receive(timeout=WAIT)) == [1, 2]


def test_delete_subscription_of_one_stream_leaves_the_same_name_on_another(
    make_store, admin_engine
):
    store = make_store()
    for stream in ("a", "b", ALL_STREAM):
        sub = store.subscribe_to_stream(stream, "name")
        assert sub.wait_subscribed(WAIT)
        sub.unsubscribe()
    assert len(subscription_rows(admin_engine, store.schema)) == 3
    store.delete_subscription("a", "name")
    assert sorted(row[0] for row in subscription_rows(admin_engine, store.schema)) == [
        "$all",
        "b",
    ]
    store.delete_all_streams_subscription("name")
    assert [row[0] for row in subscription_rows(admin_engine, store.schema)] == ["b"]


# -- close ----------------------------------------------------------------------------------------


def store_backends(admin_engine: Engine, names: list[str]) -> list[str]:
    with admin_engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT application_name FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = ANY(:names)"
                ),
                {"names": names},
            ).scalars()
        )


def eventstore_threads(exclude: set[threading.Thread]) -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith("eventstore-") and t not in exclude and t.is_alive()
    ]


def test_close_stops_everything_quickly_and_leaves_nothing_behind(
    make_store, admin_engine, database_url
):
    before = set(threading.enumerate())
    name = f"close-{uuid.uuid4().hex[:8]}"
    store = make_store(name=name, subscription_retry_interval=0.2)
    app_names = [name, f"eventstore-listener-{store.schema}", f"eventstore-locks-{store.schema}"]

    # A subscription whose lock another session holds: retrying when closed.
    first = store.subscribe_to_all_streams("contended")
    assert first.wait_subscribed(WAIT)
    first.unsubscribe()
    lock = ForeignLock(
        database_url, store.schema, subscription_id(admin_engine, store.schema, "contended")
    )
    try:
        assert lock.try_take()
        waiting = store.subscribe_to_all_streams("contended")
        # Busy handlers, a mailbox with unacknowledged events, a transient one.
        recorder = Recorder()

        def slow(events: list[Any]) -> None:
            time.sleep(0.2)
            recorder(events)

        store.subscribe_to_all_streams("slow", handler=slow, buffer_size=5)
        store.subscribe_to_stream("s", "handled", handler=Recorder())
        mailbox = store.subscribe_to_all_streams("mailbox", buffer_size=5)
        transient = store.subscribe(ALL_STREAM, handler=Recorder())
        assert mailbox.wait_subscribed(WAIT)
        assert transient.wait_subscribed(WAIT)
        for _ in range(5):
            append(store, "s", 2)
        assert eventually(lambda: len(recorder.batches) >= 1)
        mailbox.receive(timeout=WAIT)
        assert not waiting.subscribed
        assert eventstore_threads(before)
        assert len(store_backends(admin_engine, app_names)) >= 3  # pool, listener, locks

        started = time.monotonic()
        store.close()
        elapsed = time.monotonic() - started
    finally:
        lock.release()
    assert elapsed < 5.0, f"close() took {elapsed:.1f} s"
    assert eventually(lambda: not eventstore_threads(before), timeout=5), eventstore_threads(before)
    assert eventually(lambda: not store_backends(admin_engine, app_names), timeout=5), (
        store_backends(admin_engine, app_names)
    )
    store.close()  # idempotent
    assert store not in EventStore.all_instances()
    with pytest.raises(RuntimeError):
        store.subscribe_to_all_streams("late")


def test_close_of_a_store_that_never_subscribed_is_instant(make_store, admin_engine):
    before = set(threading.enumerate())
    name = f"idle-{uuid.uuid4().hex[:8]}"
    store = make_store(name=name)
    append(store, "s", 1)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 1.0
    assert not eventstore_threads(before)
    assert eventually(lambda: not store_backends(admin_engine, [name]), timeout=5)
