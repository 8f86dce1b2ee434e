"""Attacks on the subscription core through the public API: handlers that
fail on one event (with and without ``max_retries``, with partitions), parked
events replayed or discarded under a handler, acks after unsubscribe and
close, and one subscription failing for ever beside a healthy one."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from sqlalchemy_eventstore import ANY_VERSION, EventData

from .subscription_helpers import WAIT, append, checkpoint, collect, eventually, flatten, numbers


def parked_numbers(es: Any, name: str) -> list[int]:
    return [p.event.event_number for p in es.parked_events(name)]


class Recorder:
    """A handler failing on event ``bad`` until ``fixed``; records what it handled."""

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.fixed = threading.Event()
        self.handled: list[int] = []
        self.attempts_on_bad = 0
        self.lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        if any(e.event_number == self.bad for e in batch) and not self.fixed.is_set():
            self.attempts_on_bad += 1
            raise ValueError(f"cannot handle {self.bad}")
        with self.lock:
            self.handled.extend(e.event_number for e in batch)


@pytest.mark.parametrize("buffer_size", [1, 10])
def test_a_handler_failing_for_ever_stalls_visibly_and_recovers_in_order(
    make_store, driver, admin_engine, buffer_size
):
    es = make_store(driver=driver)
    append(es, "s", 6)
    handler = Recorder(3)
    sub = es.subscribe_to_all_streams("h", handler=handler, buffer_size=buffer_size)
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: handler.attempts_on_bad >= 3)
    assert sub.status == "retrying"
    assert isinstance(sub.last_error, ValueError)
    # Nothing at or after 3 was acked: the checkpoint stays below it.
    assert (checkpoint(admin_engine, es.schema, "h") or 0) <= 2
    assert all(n < 3 for n in handler.handled) or buffer_size > 1
    handler.fixed.set()
    assert eventually(lambda: sorted(set(handler.handled)) == [1, 2, 3, 4, 5, 6])
    assert handler.handled == sorted(handler.handled)  # in order, no skips
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "h") == 6)
    assert eventually(lambda: sub.status == "subscribed" and sub.last_error is None)


@pytest.mark.parametrize("buffer_size", [1, 10])
def test_a_handler_failing_past_max_retries_parks_and_carries_on(
    make_store, driver, admin_engine, buffer_size
):
    es = make_store(driver=driver)
    append(es, "s", 6)
    handler = Recorder(3)
    sub = es.subscribe_to_all_streams("h", handler=handler, buffer_size=buffer_size, max_retries=1)
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: sorted(set(handler.handled)) == [1, 2, 4, 5, 6])
    assert eventually(lambda: parked_numbers(es, "h") == [3])
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "h") == 6)
    # The events after the parked one went through: no error is shown any more.
    assert sub.last_error is None
    assert sub.status == "subscribed"
    # Replay once fixed: the parked event is handled and unparked.
    handler.fixed.set()
    assert es.replay_parked("h") == 1
    assert eventually(lambda: 3 in handler.handled)
    assert eventually(lambda: parked_numbers(es, "h") == [])
    assert eventually(lambda: sub.status == "subscribed")


def test_a_partitioned_handler_parks_its_key_keeps_others_and_replays_in_order(
    make_store, driver, admin_engine
):
    es = make_store(driver=driver)
    fail = threading.Event()
    fail.set()
    handled: list[tuple[str, int]] = []

    def handler(batch: list[Any]) -> None:
        for e in batch:
            if fail.is_set() and e.stream_uuid == "x" and e.data["i"] == 0:
                raise ValueError("x0")
        handled.extend((e.stream_uuid, e.data["i"]) for e in batch)

    def put(stream: str, i: int) -> None:
        es.append_to_stream(stream, ANY_VERSION, [EventData("Tick", {"i": i})])

    for stream, i in (("x", 0), ("y", 0), ("x", 1), ("y", 1), ("x", 2), ("y", 2)):
        put(stream, i)
    sub = es.subscribe_to_all_streams(
        "part",
        handler=handler,
        buffer_size=10,
        partition_by=lambda e: e.stream_uuid,
        max_retries=0,
    )
    assert sub.wait_subscribed(WAIT)
    # y carries on; x0 is parked, and x1, x2 behind it (never out of order).
    assert eventually(lambda: [h for h in handled if h[0] == "y"] == [("y", 0), ("y", 1), ("y", 2)])
    assert eventually(lambda: parked_numbers(es, "part") == [1, 3, 5])
    assert [h for h in handled if h[0] == "x"] == []
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "part") == 6)
    put("x", 3)  # parked behind too
    assert eventually(lambda: parked_numbers(es, "part") == [1, 3, 5, 7])
    fail.clear()
    assert es.replay_parked("part") == 4
    assert eventually(lambda: [h for h in handled if h[0] == "x"] == [("x", i) for i in range(4)])
    assert eventually(lambda: parked_numbers(es, "part") == [])
    put("x", 4)  # the key is free again
    assert eventually(lambda: ("x", 4) in handled)
    assert [h for h in handled if h[0] == "x"] == [("x", i) for i in range(5)]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "part") == 8)


def test_discarding_a_partitioned_handlers_parked_events_unblocks_the_key(make_store, admin_engine):
    es = make_store()
    handled: list[int] = []

    def handler(batch: list[Any]) -> None:
        for e in batch:
            if e.event_number == 1:
                raise ValueError("first")
        handled.extend(e.event_number for e in batch)

    sub = es.subscribe_to_all_streams(
        "disc", handler=handler, partition_by=lambda e: e.stream_uuid, max_retries=0
    )
    assert sub.wait_subscribed(WAIT)
    append(es, "x", 1)
    append(es, "x", 1, first=2)
    assert eventually(lambda: parked_numbers(es, "disc") == [1, 2])
    assert es.discard_parked("disc") == 2
    append(es, "x", 1, first=3)
    assert eventually(lambda: handled == [3])
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "disc") == 3)


def test_acks_after_unsubscribe_and_after_close(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    append(es, "s", 4)
    sub = es.subscribe_to_all_streams("late", buffer_size=2)
    assert sub.wait_subscribed(WAIT)
    first = sub.receive(WAIT)
    sub.ack(first)
    second = sub.receive(WAIT)
    sub.unsubscribe()
    sub.ack(second)  # after unsubscribe: ignored, the events come back later
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "late") == 2)
    again = es.subscribe_to_all_streams("late", buffer_size=2)
    got = flatten(collect(again, 2))
    assert numbers(got) == [3, 4]
    es.close()
    with pytest.raises(RuntimeError, match="closed"):
        again.ack(got[-1])
    assert checkpoint(admin_engine, es.schema, "late") == 2


def test_mapper_returning_the_same_value_acks_only_the_batch_named(
    make_store, driver, admin_engine
):
    for value in (None, True):
        es = make_store(driver=driver)
        name = f"same-{value}"
        sub = es.subscribe_to_all_streams(name, buffer_size=4, mapper=lambda e, v=value: v)
        assert sub.wait_subscribed(WAIT)
        head = es.stream_info("$all").stream_version
        append(es, "s", 2)
        one = sub.receive(WAIT)
        append(es, "s", 2)
        two = sub.receive(WAIT)
        assert one == [value, value] and two == [value, value]
        sub.ack(one)  # acks events head+1, head+2 only
        assert checkpoint(admin_engine, es.schema, name) == head + 2
        sub.ack(two)
        assert checkpoint(admin_engine, es.schema, name) == head + 4
        sub.unsubscribe()


@pytest.mark.parametrize("where", ["selector", "mapper"])
@pytest.mark.parametrize("buffer_size", [1, 10])
def test_failing_selector_or_mapper_parks_then_carries_on_in_order(
    make_store, admin_engine, where, buffer_size
):
    es = make_store()
    append(es, "s", 5)

    def failing(event: Any) -> Any:
        if event.event_number == 2:
            raise ValueError("two")
        return True if where == "selector" else event

    sub = es.subscribe_to_all_streams(
        "uc", buffer_size=buffer_size, max_retries=1, **{where: failing}
    )
    assert sub.wait_subscribed(WAIT)
    assert numbers(flatten(collect(sub, 4, ack=True))) == [1, 3, 4, 5]
    assert eventually(lambda: parked_numbers(es, "uc") == [2])
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "uc") == 5)
    assert sub.last_error is None and sub.status == "subscribed"


def test_a_replayed_event_failing_again_keeps_the_later_replays_of_its_key_parked(
    make_store, admin_engine
):
    es = make_store()
    handled: list[int] = []

    def handler(batch: list[Any]) -> None:
        if any(e.event_number == 1 for e in batch):
            raise ValueError("first")
        handled.extend(e.event_number for e in batch)

    for _ in range(3):
        append(es, "x", 1, first=len(handled) + 1)
    append(es, "y", 1)
    sub = es.subscribe_to_all_streams(
        "again",
        handler=handler,
        buffer_size=10,
        partition_by=lambda e: e.stream_uuid,
        max_retries=0,
    )
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: parked_numbers(es, "again") == [1, 2, 3])
    assert eventually(lambda: handled == [4])
    assert es.replay_parked("again") == 3
    # 1 fails again: 2 and 3 (same key, same replay batch) must not overtake it.
    time.sleep(1.0)
    assert handled == [4]
    assert parked_numbers(es, "again") == [1, 2, 3]
    assert eventually(lambda: sub.status == "subscribed")


def test_a_terminated_lock_session_withdraws_queued_batches_and_ignores_old_acks(
    make_store, driver, admin_engine
):
    es = make_store(driver=driver, subscription_retry_interval=0.2)
    sub = es.subscribe_to_all_streams("lk", buffer_size=4, max_size=10)
    assert sub.wait_subscribed(WAIT)
    append(es, "s", 2)
    first = sub.receive(WAIT)
    append(es, "s", 2, first=3)  # a second batch waits in the mailbox, not received
    time.sleep(0.3)
    with admin_engine.connect() as conn:
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :app"
            ),
            {"app": f"eventstore-locks-{es.schema}"},
        ).scalar()
    assert killed == 1
    deadline = time.monotonic() + WAIT
    while sub.status != "disconnected":  # brief: it retakes its free lock at once
        assert time.monotonic() < deadline
        time.sleep(0.001)
    sub.ack(first)  # from the lost lifetime: quiet, and it counts for nothing
    assert sub.wait_subscribed(WAIT)
    again = flatten(collect(sub, 4))
    assert numbers(again) == [1, 2, 3, 4]  # the queued batch was withdrawn, all redelivered
    sub.ack(first)  # still quiet after the re-lock, never matched against the new lifetime
    assert (checkpoint(admin_engine, es.schema, "lk") or 0) == 0
    sub.ack(again[-1])
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "lk") == 4)
