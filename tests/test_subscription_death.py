"""A subscriber that dies must not break (or stall) per-partition ordering.

The reference's third known defect: here a handler whose worker thread dies
(an exception outside ``Exception``), or a mailbox whose consumer thread (the
one that last called ``receive()``) ended with events unacknowledged, leaves
the subscription like one that unsubscribed: its unacknowledged events go,
first, to the other subscribers, each partition still in order.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sqlalchemy_eventstore import ANY_VERSION, EventData

from .subscription_helpers import WAIT, checkpoint, eventually


class WorkerKilled(BaseException):
    """Outside ``Exception``: ends the handler's worker thread."""


def test_a_dead_handler_thread_hands_its_partitions_on_in_order(make_store, admin_engine):
    es = make_store()
    lock = threading.Lock()
    received: dict[str, list[int]] = {}
    killed = threading.Event()

    def dying(batch: list[Any]) -> None:
        killed.set()
        raise WorkerKilled("the worker thread dies")

    def healthy(batch: list[Any]) -> None:
        with lock:
            for e in batch:
                received.setdefault(e.stream_uuid, []).append(e.data["i"])

    opts: dict[str, Any] = dict(
        concurrency_limit=2, buffer_size=3, partition_by=lambda e: e.stream_uuid
    )
    dead = es.subscribe_to_all_streams("parts", handler=dying, **opts)
    alive = es.subscribe_to_all_streams("parts", handler=healthy, **opts)
    assert dead.wait_subscribed(WAIT) and alive.wait_subscribed(WAIT)
    for round_ in range(5):
        for stream in ("a", "b", "c", "d"):
            es.append_to_stream(stream, ANY_VERSION, [EventData("Tick", {"i": round_})])
    assert killed.wait(WAIT)
    assert eventually(lambda: dead.status == "unsubscribed")
    assert isinstance(dead.last_error, WorkerKilled)
    # Every partition reaches the healthy subscriber, complete and in order.
    assert eventually(
        lambda: all(received.get(s) == [0, 1, 2, 3, 4] for s in ("a", "b", "c", "d"))
    ), received
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "parts") == 20)


# -- mailboxes: "dies" means the thread that last called receive() has ended --

MAILBOX: dict[str, Any] = dict(
    concurrency_limit=2, buffer_size=3, partition_by=lambda e: e.stream_uuid
)
STREAMS = ("a", "b", "c", "d")


def _append_rounds(es: Any, rounds: int = 5) -> None:
    for round_ in range(rounds):
        for stream in STREAMS:
            es.append_to_stream(stream, ANY_VERSION, [EventData("Tick", {"i": round_})])


def _drain(sub: Any, received: dict[str, list[int]], until: Any, seconds: float = WAIT) -> None:
    """Receive and ack on the calling thread until ``until()`` or the deadline."""
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        try:
            batch = sub.receive(timeout=0.2)
        except TimeoutError:
            continue
        for e in batch:
            received.setdefault(e.stream_uuid, []).append(e.data["i"])
        sub.ack(batch)


def _complete(received: dict[str, list[int]]) -> bool:
    return all(received.get(s) == [0, 1, 2, 3, 4] for s in STREAMS)


@pytest.mark.sync_only  # the async API's consumer is a task: tests/test_asyncio_subscriptions.py
def test_a_mailbox_whose_consumer_thread_ends_hands_its_partitions_on(
    make_store, admin_engine, driver
):
    es = make_store(driver=driver)
    dead = es.subscribe_to_all_streams("parts", **MAILBOX)
    alive = es.subscribe_to_all_streams("parts", **MAILBOX)
    assert dead.wait_subscribed(WAIT) and alive.wait_subscribed(WAIT)
    _append_rounds(es)
    taken: list[Any] = []
    # The consumer takes one batch and ends without acking it.
    consumer = threading.Thread(target=lambda: taken.append(dead.receive(timeout=WAIT)))
    consumer.start()
    consumer.join(WAIT)
    assert taken and taken[0], "the dying consumer received nothing"
    received: dict[str, list[int]] = {}
    _drain(alive, received, lambda: _complete(received))
    # Every partition reaches the other subscriber, complete and in order,
    # the dead consumer's events included.
    assert _complete(received), received
    assert {e.stream_uuid for e in taken[0]} <= set(received)
    assert dead.status == "unsubscribed"
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "parts") == 20)


def test_a_slow_but_living_mailbox_consumer_keeps_its_events(make_store, admin_engine, driver):
    es = make_store(driver=driver)
    slow = es.subscribe_to_all_streams("parts", **MAILBOX)
    other = es.subscribe_to_all_streams("parts", **MAILBOX)
    assert slow.wait_subscribed(WAIT) and other.wait_subscribed(WAIT)
    _append_rounds(es)
    slow_got: dict[str, list[int]] = {}
    go_on = threading.Event()
    first: list[Any] = []

    def consume() -> None:
        batch = slow.receive(timeout=WAIT)
        first.append(batch)
        go_on.wait(WAIT)  # alive, holding the batch unacked over several passes
        for e in batch:
            slow_got.setdefault(e.stream_uuid, []).append(e.data["i"])
        slow.ack(batch)
        _drain(slow, slow_got, lambda: go_on.is_set() and _both_done(), seconds=WAIT)

    other_got: dict[str, list[int]] = {}

    def _both_done() -> bool:
        merged = {s: slow_got.get(s, []) + other_got.get(s, []) for s in STREAMS}
        return sum(map(len, merged.values())) == 20

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert eventually(lambda: bool(first))
    held = {e.stream_uuid for e in first[0]}
    # Over several scheduler passes (at least one a second) the slow consumer
    # keeps its partitions: the other subscriber gets none of their events.
    _drain(other, other_got, lambda: False, seconds=2.5)
    assert slow.status != "unsubscribed"
    assert not held & set(other_got), (held, other_got)
    go_on.set()
    _drain(other, other_got, _both_done)
    consumer.join(WAIT)
    # Each event once, each partition in order, split between the two.
    for s in STREAMS:
        assert sorted(slow_got.get(s, []) + other_got.get(s, [])) == [0, 1, 2, 3, 4]
        for got in (slow_got, other_got):
            assert got.get(s, []) == sorted(got.get(s, []))
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "parts") == 20)


def test_the_main_thread_and_unreceived_mailboxes_are_never_dead(make_store, admin_engine, driver):
    es = make_store(driver=driver)
    main = es.subscribe_to_all_streams("parts", **MAILBOX)
    idle = es.subscribe_to_all_streams("parts", **MAILBOX)
    assert main.wait_subscribed(WAIT) and idle.wait_subscribed(WAIT)
    _append_rounds(es, rounds=2)
    batch = main.receive(timeout=WAIT)  # the main thread: always alive
    time.sleep(2.5)  # several scheduler passes with events unacked on both
    assert main.status != "unsubscribed" and idle.status != "unsubscribed"
    main.ack(batch)
    received: dict[str, list[int]] = {}
    for e in batch:
        received.setdefault(e.stream_uuid, []).append(e.data["i"])
    deadline = time.monotonic() + WAIT
    while sum(map(len, received.values())) < 8 and time.monotonic() < deadline:
        for sub in (main, idle):
            _drain(sub, received, lambda: False, seconds=0.3)
    assert sorted(i for got in received.values() for i in got) == [0] * 4 + [1] * 4
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "parts") == 8)
