"""Competing consumers: concurrency_limit, round-robin, partition_by.

Ports of the reference's concurrent_subscription_test.exs,
subscription_partitioning_test.exs, partition_key_test.exs and
subscription_partition_subscriber_down_test.exs -- the last one inverted:
the reference demonstrates that a subscriber going down breaks partition
ordering; here every partition must stay in order.

Subscribers are mailboxes driven by the test thread (acks are synchronous,
so what each one receives is deterministic) or handlers on their own threads.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

import pytest

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore, RecordedEvent
from sqlalchemy_eventstore.errors import (
    AlreadySubscribedError,
    SubscriptionAlreadyExistsError,
    TooManySubscribersError,
)

from .mailbox_helpers import assert_quiet, checkpoint, collect, next_numbers, numbers
from .subscription_helpers import WAIT, eventually


def append(store: EventStore, stream: str, n: int, first: int = 1) -> None:
    """Append n events whose data "n" counts from ``first`` (the reference's EventFactory)."""
    store.append_to_stream(
        stream, ANY_VERSION, [EventData("Tick", {"n": first + i}) for i in range(n)]
    )


def subscribe_all(store: EventStore, name: str, **options: Any):
    sub = store.subscribe_to_all_streams(name, **options)
    assert sub.wait_subscribed(WAIT)
    return sub


def handler_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"eventstore-handler-{name}"]


# -- who may subscribe ---------------------------------------------------------------


def test_allows_as_many_subscribers_as_the_concurrency_limit(make_store):
    store = make_store()
    s1 = subscribe_all(store, "c", concurrency_limit=2)
    s2 = subscribe_all(store, "c", concurrency_limit=2)
    assert s1 is not s2
    assert s1.subscription_name == s2.subscription_name == "c"


def test_refuses_a_second_subscriber_by_default(make_store):
    store = make_store()
    first = subscribe_all(store, "single")
    with pytest.raises(SubscriptionAlreadyExistsError) as raised:
        store.subscribe_to_all_streams("single")
    assert raised.value.reason == "subscription_already_exists"
    # Also for a single stream, and also while the first has a handler.
    store.subscribe_to_stream("s", "single-stream", handler=lambda events: None)
    with pytest.raises(SubscriptionAlreadyExistsError):
        store.subscribe_to_stream("s", "single-stream", handler=lambda events: None)
    # The refused handler's worker thread does not linger.
    assert eventually(lambda: len(handler_threads("single-stream")) == 1)
    # The first subscriber is unaffected.
    append(store, "s", 1)
    assert next_numbers(first) == [1]


def test_a_refused_subscription_can_subscribe_once_the_first_unsubscribed(make_store):
    store = make_store()
    append(store, "s", 2)
    first = subscribe_all(store, "single")
    assert next_numbers(first) == [1]
    first.ack(1)
    first.unsubscribe()
    second = subscribe_all(store, "single")
    assert next_numbers(second) == [2]


def test_too_many_subscribers(make_store, driver):
    store = make_store(driver=driver)
    s1 = subscribe_all(store, "c", concurrency_limit=2)
    subscribe_all(store, "c", concurrency_limit=2)
    with pytest.raises(TooManySubscribersError) as raised:
        store.subscribe_to_all_streams("c", concurrency_limit=2)
    assert raised.value.reason == "too_many_subscribers"
    # A freed place can be taken again.
    s1.unsubscribe()
    assert subscribe_all(store, "c", concurrency_limit=2).subscribed


def test_the_same_handler_cannot_subscribe_twice(make_store, driver):
    store = make_store(driver=driver)
    seen: list[int] = []

    def handler(events):
        seen.extend(numbers(events))

    store.subscribe_to_all_streams("c", handler=handler, concurrency_limit=3)
    with pytest.raises(AlreadySubscribedError) as raised:
        store.subscribe_to_all_streams("c", handler=handler, concurrency_limit=3)
    assert raised.value.reason == "already_subscribed"
    # Another handler is welcome; the refused subscription takes no events.
    other: list[int] = []
    store.subscribe_to_all_streams(
        "c", handler=lambda e: other.extend(numbers(e)), concurrency_limit=3
    )
    append(store, "s", 6)
    assert eventually(lambda: sorted(seen + other) == [1, 2, 3, 4, 5, 6])
    assert seen and other


# -- round-robin --------------------------------------------------------------------


def test_sends_events_to_all_subscribers(make_store):
    store = make_store()
    subs = [subscribe_all(store, "c", concurrency_limit=3) for _ in range(3)]
    append(store, "s", 3)
    assert [next_numbers(sub) for sub in subs] == [[1], [2], [3]]
    assert_quiet(*subs)


def test_sends_the_next_event_to_the_next_available_subscriber_after_ack(make_store, driver):
    store = make_store(driver=driver)
    s1, s2 = (subscribe_all(store, "c", concurrency_limit=2) for _ in range(2))
    append(store, "s", 6)
    assert next_numbers(s1) == [1]
    assert next_numbers(s2) == [2]
    s2.ack(2)
    assert next_numbers(s2) == [3]
    s2.ack(3)
    assert next_numbers(s2) == [4]
    s2.ack(4)
    assert next_numbers(s2) == [5]
    s1.ack(1)
    assert next_numbers(s1) == [6]
    assert_quiet(s1, s2)


def test_catch_up_sends_the_next_event_to_the_next_available_subscriber(make_store):
    store = make_store()
    append(store, "s", 3)
    s1, s2 = (subscribe_all(store, "c", concurrency_limit=2) for _ in range(2))
    append(store, "s", 3, first=4)
    assert next_numbers(s1) == [1]
    assert next_numbers(s2) == [2]
    s2.ack(2)
    assert next_numbers(s2) == [3]
    s2.ack(3)
    assert next_numbers(s2) == [4]
    s2.ack(4)
    assert next_numbers(s2) == [5]
    s1.ack(1)
    assert next_numbers(s1) == [6]
    assert_quiet(s1, s2)


def test_checkpoint_follows_acks_in_event_order(make_store, driver, admin_engine):
    store = make_store(driver=driver)
    s1, s2, s3 = (subscribe_all(store, "c", concurrency_limit=3) for _ in range(3))
    append(store, "s", 8)

    def last_seen() -> int | None:
        return checkpoint(admin_engine, store.schema, "c")

    assert [next_numbers(s) for s in (s1, s2, s3)] == [[1], [2], [3]]
    s1.ack(1)
    assert next_numbers(s1) == [4]
    assert last_seen() == 1
    s2.ack(2)
    assert next_numbers(s2) == [5]
    assert last_seen() == 2
    s3.ack(3)
    assert next_numbers(s3) == [6]
    assert last_seen() == 3
    # 6 is acknowledged but 4 and 5 are not: the checkpoint stays at 3.
    s3.ack(6)
    assert next_numbers(s3) == [7]
    assert last_seen() == 3
    s2.ack(5)
    assert next_numbers(s2) == [8]
    assert last_seen() == 3
    s1.ack(4)
    assert last_seen() == 6
    assert_quiet(s1, s2, s3)
    s3.ack(7)
    assert last_seen() == 7
    s2.ack(8)
    assert last_seen() == 8
    assert_quiet(s1, s2, s3)


def test_resends_in_flight_events_when_a_subscriber_unsubscribes(make_store, driver, admin_engine):
    store = make_store(driver=driver)
    s1, s2 = (subscribe_all(store, "c", concurrency_limit=2) for _ in range(2))
    append(store, "s", 6)
    assert next_numbers(s1) == [1]
    assert next_numbers(s2) == [2]
    s1.unsubscribe()
    assert checkpoint(admin_engine, store.schema, "c") == 0
    s2.ack(2)
    assert next_numbers(s2) == [1]
    assert checkpoint(admin_engine, store.schema, "c") == 0
    s2.ack(1)
    assert next_numbers(s2) == [3]
    assert checkpoint(admin_engine, store.schema, "c") == 2
    assert_quiet(s1, s2)


def test_an_ack_after_unsubscribing_is_ignored(make_store):
    store = make_store()
    s1, s2 = (subscribe_all(store, "c", concurrency_limit=2) for _ in range(2))
    append(store, "s", 3)
    assert next_numbers(s1) == [1]
    assert next_numbers(s2) == [2]
    s1.unsubscribe()
    s1.ack(1)  # too late: event 1 went back to the queue
    s2.ack(2)
    assert next_numbers(s2) == [1]


def test_the_subscription_is_released_when_all_its_subscribers_are_gone(
    make_store, driver, admin_engine
):
    store = make_store(driver=driver, subscription_retry_interval=0.2)
    # The other store is a sync one: the two APIs share the subscription's lock.
    other = make_store(schema=store.schema, init=False, subscription_retry_interval=0.2)
    s1, s2 = (subscribe_all(store, "c", concurrency_limit=2) for _ in range(2))
    waiting = other.subscribe_to_all_streams("c", concurrency_limit=2, buffer_size=10)
    append(store, "s", 6)
    assert next_numbers(s1) == [1]
    assert next_numbers(s2) == [2]
    s1.ack(1)
    assert next_numbers(s1) == [3]
    assert not waiting.subscribed
    s1.unsubscribe()
    assert not waiting.wait_subscribed(0.6)  # s2 still holds the subscription
    s2.unsubscribe()
    # Its lock is released: the other store's subscriber takes over from the
    # checkpoint (1), so 2 and 3, never acknowledged, come again.
    assert waiting.wait_subscribed(WAIT)
    assert next_numbers(waiting) == [2, 3, 4, 5, 6]
    assert checkpoint(admin_engine, store.schema, "c") == 1


def test_sends_pending_events_to_newly_connected_subscribers(make_store):
    store = make_store()
    s1 = subscribe_all(store, "c", concurrency_limit=3)
    append(store, "s", 6)
    assert next_numbers(s1) == [1]
    s1.ack(1)
    assert next_numbers(s1) == [2]
    s2 = subscribe_all(store, "c", concurrency_limit=3)
    assert next_numbers(s2) == [3]
    s3 = subscribe_all(store, "c", concurrency_limit=3)
    assert next_numbers(s3) == [4]
    s2.ack(3)
    assert next_numbers(s2) == [5]
    s1.ack(2)
    assert next_numbers(s1) == [6]
    assert_quiet(s1, s2, s3)


def test_excludes_events_filtered_by_the_selector(make_store, admin_engine):
    store = make_store()

    def every_third(event: RecordedEvent) -> bool:
        return event.event_number % 3 == 0

    s1, s2 = (
        subscribe_all(store, "c", concurrency_limit=2, selector=every_third) for _ in range(2)
    )
    append(store, "s", 12)
    assert next_numbers(s1) == [3]
    assert next_numbers(s2) == [6]
    s1.ack(3)
    assert checkpoint(admin_engine, store.schema, "c") == 5
    assert next_numbers(s1) == [9]
    s1.ack(9)
    assert checkpoint(admin_engine, store.schema, "c") == 5
    assert next_numbers(s1) == [12]
    s2.ack(6)
    assert checkpoint(admin_engine, store.schema, "c") == 11
    assert_quiet(s1, s2)
    s1.ack(12)
    assert checkpoint(admin_engine, store.schema, "c") == 12
    assert_quiet(s1, s2)


def test_a_subscriber_sets_its_own_buffer_size(make_store):
    store = make_store()
    s1 = subscribe_all(store, "c", concurrency_limit=2, buffer_size=2)
    append(store, "s", 6)
    assert next_numbers(s1) == [1, 2]
    s1.ack(2)
    assert next_numbers(s1) == [3, 4]
    s1.ack(4)
    assert next_numbers(s1) == [5, 6]
    s1.ack(6)
    assert_quiet(s1)


def test_round_robin_respects_each_subscribers_buffer_size(make_store):
    store = make_store()
    s1 = subscribe_all(store, "c", concurrency_limit=2, buffer_size=2)
    s2 = subscribe_all(store, "c", concurrency_limit=2, buffer_size=3)
    append(store, "s", 12)
    assert next_numbers(s1) == [1, 3]
    assert next_numbers(s2) == [2, 4, 5]
    s1.ack(1)
    assert next_numbers(s1) == [6]
    s2.ack(5)
    assert next_numbers(s2) == [7, 8, 9]
    s1.ack(6)
    assert next_numbers(s1) == [10, 11]
    s2.ack(7)
    assert next_numbers(s2) == [12]
    s2.ack(12)
    assert_quiet(s1, s2)


def test_handlers_share_the_work_round_robin(make_store, driver):
    store = make_store(driver=driver)
    got: dict[int, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def handler_for(i: int) -> Callable[[list[RecordedEvent]], None]:
        def handler(events: list[RecordedEvent]) -> None:
            time.sleep(0.001)
            with lock:
                got[i].extend(numbers(events))

        return handler

    for i in range(3):
        store.subscribe_to_all_streams(
            "c", handler=handler_for(i), concurrency_limit=3, buffer_size=2
        )
    for start in range(1, 91, 10):
        append(store, f"s{start % 4}", 10, first=start)
    assert eventually(lambda: sum(len(v) for v in got.values()) >= 90)
    with lock:
        assert sorted(n for v in got.values() for n in v) == list(range(1, 91))
        assert all(len(got[i]) >= 10 for i in range(3)), {i: len(v) for i, v in got.items()}


# -- partitioning ---------------------------------------------------------------------


def by_n(modulus: int) -> Callable[[RecordedEvent], int]:
    return lambda event: event.data["n"] % modulus


def test_partitions_events_with_partition_by(make_store):
    store = make_store()
    subs = [
        subscribe_all(store, "p", concurrency_limit=3, buffer_size=3, partition_by=by_n(2))
        for _ in range(3)
    ]
    append(store, "s", 9)
    assert next_numbers(subs[0]) == [1, 3, 5]
    assert next_numbers(subs[1]) == [2, 4, 6]
    assert_quiet(*subs)


def test_sends_new_events_of_a_partition_to_the_same_subscriber_after_ack(make_store, driver):
    store = make_store(driver=driver)
    s1, s2, s3 = (
        subscribe_all(store, "p", concurrency_limit=3, buffer_size=2, partition_by=by_n(3))
        for _ in range(3)
    )
    append(store, "s", 9)
    assert next_numbers(s1) == [1, 4]
    assert next_numbers(s2) == [2, 5]
    assert next_numbers(s3) == [3, 6]
    s1.ack(4)
    assert next_numbers(s1) == [7]
    s1.ack(7)
    assert_quiet(s1)
    s2.ack(5)
    assert next_numbers(s2) == [8]
    s3.ack(6)
    assert next_numbers(s3) == [9]


class PartitionChecker:
    """Test-side bookkeeping of what each mailbox subscriber holds unacknowledged.

    On every batch it asserts the partition contract: an event goes to a
    subscriber only while no *other* subscriber holds unacknowledged events of
    its partition, and each partition's events arrive in order with no gap --
    after a subscriber went away, its partition resumes at the oldest event it
    left unacknowledged. ``rank(event)`` numbers a partition's events 1, 2, 3...
    """

    def __init__(
        self,
        key: Callable[[RecordedEvent], Hashable] = lambda e: e.stream_uuid,
        rank: Callable[[RecordedEvent], int] = lambda e: e.stream_version,
    ) -> None:
        self.key = key
        self.rank = rank
        self.unacked: dict[int, list[RecordedEvent]] = {}
        self.acked: dict[Hashable, int] = defaultdict(int)
        self.received: dict[int, list[int]] = defaultdict(list)

    def join(self, index: int) -> None:
        self.unacked[index] = []

    def batch(self, index: int, events: list[RecordedEvent]) -> None:
        for event in events:
            key = self.key(event)
            for other, pending in self.unacked.items():
                if other != index:
                    assert all(self.key(p) != key for p in pending), (
                        f"partition {key!r} sent to subscriber {index} while subscriber "
                        f"{other} holds {[self.rank(p) for p in pending if self.key(p) == key]}"
                    )
            mine = [p for p in self.unacked[index] if self.key(p) == key]
            expected = (self.rank(mine[-1]) if mine else self.acked[key]) + 1
            assert self.rank(event) == expected, (
                f"partition {key!r}: got #{self.rank(event)}, expected #{expected}"
            )
            self.unacked[index].append(event)
            self.received[index].append(event.event_number)

    def ack(self, index: int) -> int | None:
        """Forget what ``index`` holds; the event number to acknowledge, if any."""
        pending = self.unacked[index]
        for event in pending:
            key = self.key(event)
            self.acked[key] = max(self.acked[key], self.rank(event))
        self.unacked[index] = []
        return max((e.event_number for e in pending), default=None)

    def leave(self, index: int) -> list[RecordedEvent]:
        return self.unacked.pop(index)


def drive(subs: dict[int, Any], checker: PartitionChecker, done: Callable[[], bool]) -> None:
    """Round after round, each subscriber acks what it holds and takes what comes."""
    deadline = time.monotonic() + WAIT
    while not done():
        assert time.monotonic() < deadline, f"stuck: acked {dict(checker.acked)}"
        for index, sub in subs.items():
            number = checker.ack(index)
            if number is not None:
                sub.ack(number)
            with contextlib.suppress(TimeoutError):
                checker.batch(index, sub.receive(timeout=0.02))


def test_redistributes_partitions_once_acknowledged_and_to_a_new_subscriber(make_store):
    # The reference's third partitioning test: partition n % 4, buffer 2, a third
    # subscriber joining mid-way. Which subscriber gets which partition first is
    # this implementation's business; the contract is what is checked: one
    # subscriber per partition at a time, each partition in order, and the
    # newcomer takes a share of the work.
    store = make_store()
    checker = PartitionChecker(key=lambda e: e.data["n"] % 4, rank=lambda e: (e.data["n"] + 3) // 4)
    options: dict[str, Any] = dict(concurrency_limit=3, buffer_size=2, partition_by=by_n(4))
    subs = {i: subscribe_all(store, "p", **options) for i in range(2)}
    for i in subs:
        checker.join(i)
    append(store, "s", 16)
    for i, sub in subs.items():
        checker.batch(i, sub.receive(timeout=WAIT))
        assert len(checker.unacked[i]) == 2
    subs[2] = subscribe_all(store, "p", **options)
    checker.join(2)
    drive(subs, checker, lambda: sum(checker.acked.values()) == 16)
    assert sorted(n for got in checker.received.values() for n in got) == list(range(1, 17))
    assert checker.received[2], "the new subscriber was given nothing"
    assert_quiet(*subs.values())


# -- a partitioned subscriber going away (the reference's known defect) ---------------


def test_a_partitioned_subscriber_going_away_hands_its_events_on_in_order(make_store, driver):
    # subscription_partition_subscriber_down_test.exs, first case: buffer 1,
    # two events in each of two streams.
    store = make_store(driver=driver)
    options: dict[str, Any] = dict(
        concurrency_limit=2, buffer_size=1, partition_by=lambda e: e.stream_uuid
    )
    s1, s2 = (subscribe_all(store, "p", **options) for _ in range(2))
    append(store, "stream-a", 2)
    append(store, "stream-b", 2)
    assert next_numbers(s1) == [1]  # stream-a v1
    assert next_numbers(s2) == [3]  # stream-b v1
    s1.unsubscribe()  # stream-a v1 unacknowledged
    s2.ack(3)
    received = []
    for _ in range(3):
        batch = s2.receive(timeout=WAIT)
        received.extend((e.stream_uuid, e.stream_version) for e in batch)
        s2.ack(batch)
    assert received == [("stream-a", 1), ("stream-a", 2), ("stream-b", 2)]
    assert_quiet(s2)


def test_requeued_events_of_a_departed_subscriber_keep_partition_order(make_store):
    # Second case: buffer 2, four events in each of two streams.
    store = make_store()
    options: dict[str, Any] = dict(
        concurrency_limit=2, buffer_size=2, partition_by=lambda e: e.stream_uuid
    )
    s1, s2 = (subscribe_all(store, "p", **options) for _ in range(2))
    append(store, "stream-a", 4)
    append(store, "stream-b", 4)
    first = s1.receive(timeout=WAIT)
    second = s2.receive(timeout=WAIT)
    assert {e.stream_uuid for e in first} == {"stream-a"}
    assert {e.stream_uuid for e in second} == {"stream-b"}
    s1.unsubscribe()
    s2.ack(second)
    by_stream: dict[str, list[int]] = defaultdict(list)
    for e in second:
        by_stream[e.stream_uuid].append(e.stream_version)
    while sum(map(len, by_stream.values())) < 8:
        batch = s2.receive(timeout=WAIT)
        for e in batch:
            by_stream[e.stream_uuid].append(e.stream_version)
        s2.ack(batch)
    assert by_stream == {"stream-a": [1, 2, 3, 4], "stream-b": [1, 2, 3, 4]}
    assert_quiet(s2)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_partition_stays_in_order_when_subscribers_go_away(make_store, seed):
    """Many streams, many events, four subscribers; two leave at random moments
    while holding unacknowledged events. Every partition stays in order, is
    only ever held by one subscriber, and every event is acknowledged once."""
    rng = random.Random(seed)
    store = make_store()
    streams = [f"stream-{i:02d}" for i in range(12)]
    versions = dict.fromkeys(streams, 0)
    for _ in range(60):  # interleaved appends of 1-6 events: 200-ish events
        stream = rng.choice(streams)
        count = rng.randint(1, 6)
        append(store, stream, count)
        versions[stream] += count
    total = sum(versions.values())
    options: dict[str, Any] = dict(
        concurrency_limit=4, buffer_size=3, partition_by=lambda e: e.stream_uuid
    )
    subs = {i: subscribe_all(store, "p", **options) for i in range(4)}
    checker = PartitionChecker()
    for i in subs:
        checker.join(i)
    leave_at = sorted(rng.sample(range(total // 5, total * 3 // 4), 2))
    left: list[tuple[int, RecordedEvent]] = []
    deadline = time.monotonic() + 3 * WAIT
    while any(checker.acked[s] < v for s, v in versions.items()):
        assert time.monotonic() < deadline, f"stuck: {dict(checker.acked)} of {versions}"
        for index in list(subs):
            sub = subs[index]
            with contextlib.suppress(TimeoutError):
                checker.batch(index, sub.receive(timeout=0.02))
            acked_so_far = sum(checker.acked.values())
            if leave_at and acked_so_far >= leave_at[0] and checker.unacked[index]:
                leave_at.pop(0)
                left.extend((index, event) for event in checker.leave(index))
                del subs[index]
                sub.unsubscribe()
                continue
            if rng.random() < 0.6:  # ack now, or keep holding for another round
                number = checker.ack(index)
                if number is not None:
                    sub.ack(number)
    assert not leave_at and left, "no subscriber left while holding events"
    assert len(subs) == 2
    # Whatever a departed subscriber held went to another one (the checker
    # already proved that each partition resumed exactly there).
    for index, event in left:
        assert any(
            event.event_number in got for other, got in checker.received.items() if other != index
        ), event.event_number
    assert sum(checker.acked.values()) == total
    assert_quiet(*subs.values())


def test_partitioned_handlers_process_each_stream_serially_and_in_order(make_store, driver):
    """Four handler threads, twenty streams, events appended before and while
    they run: no stream is ever processed by two handlers at once, and each
    stream's events are processed once each, in order."""
    store = make_store(driver=driver)
    rng = random.Random(7)
    streams = [f"stream-{i:02d}" for i in range(20)]
    lock = threading.Lock()
    active: dict[str, int] = {}
    log: list[tuple[str, int, int]] = []
    violations: list[str] = []

    def handler_for(index: int) -> Callable[[list[RecordedEvent]], None]:
        def handler(events: list[RecordedEvent]) -> None:
            with lock:
                for e in events:
                    holder = active.get(e.stream_uuid)
                    if holder not in (None, index):
                        violations.append(f"{e.stream_uuid} on {index} while on {holder}")
                    active[e.stream_uuid] = index
                    log.append((e.stream_uuid, e.stream_version, index))
            time.sleep(rng.random() * 0.003)
            with lock:
                for e in events:
                    active.pop(e.stream_uuid, None)

        return handler

    def write(appends: int) -> int:
        written = 0
        for _ in range(appends):
            count = rng.randint(1, 4)
            append(store, rng.choice(streams), count)
            written += count
        return written

    total = write(60)
    for index in range(4):
        store.subscribe_to_all_streams(
            "p",
            handler=handler_for(index),
            concurrency_limit=4,
            buffer_size=3,
            partition_by=lambda e: e.stream_uuid,
        )
    total += write(60)
    assert eventually(lambda: len(log) >= total, timeout=3 * WAIT), (len(log), total)
    time.sleep(0.2)
    with lock:
        assert violations == []
        assert len(log) == total
        per_stream: dict[str, list[int]] = defaultdict(list)
        for stream, version, _ in log:
            per_stream[stream].append(version)
        for stream, seen in per_stream.items():
            assert seen == list(range(1, len(seen) + 1)), stream
        assert {index for _, _, index in log} == {0, 1, 2, 3}


# -- partition keys (partition_key_test.exs) -------------------------------------------


def test_partition_by_is_given_the_recorded_event_and_its_value_is_the_key(make_store):
    store = make_store()
    calls: list[Any] = []

    def partition_by(event: RecordedEvent) -> str:
        calls.append(event)
        return "some_key"

    s1, s2 = (
        subscribe_all(store, "p", concurrency_limit=2, buffer_size=5, partition_by=partition_by)
        for _ in range(2)
    )
    append(store, "a", 2)
    append(store, "b", 2)
    # One key: one subscriber gets all four, in order; the other nothing.
    assert collect(s1, 4) == [1, 2, 3, 4]
    assert_quiet(s2)
    assert calls and all(isinstance(e, RecordedEvent) for e in calls)


def test_without_partition_by_events_are_spread_regardless_of_stream(make_store):
    store = make_store()
    s1, s2 = (subscribe_all(store, "p", concurrency_limit=2, buffer_size=2) for _ in range(2))
    append(store, "a", 4)
    assert next_numbers(s1) == [1, 3]
    assert next_numbers(s2) == [2, 4]


def test_a_none_partition_key_is_a_partition_like_any_other(make_store):
    # EventStore v1.4 uses whatever partition_by returns, nil included (the
    # random "$default.N" partitions came later): None-keyed events stay in
    # order on one subscriber at a time.
    store = make_store()
    checker = PartitionChecker(key=lambda e: None if e.stream_uuid == "none" else e.stream_uuid)
    options: dict[str, Any] = dict(
        concurrency_limit=2,
        buffer_size=2,
        partition_by=lambda e: None if e.stream_uuid == "none" else e.stream_uuid,
    )
    subs = {i: subscribe_all(store, "p", **options) for i in range(2)}
    for i in subs:
        checker.join(i)
    for _ in range(3):
        append(store, "none", 3)
        append(store, "other", 2)
    drive(subs, checker, lambda: checker.acked[None] == 9 and checker.acked["other"] == 6)
    assert_quiet(*subs.values())


def test_a_subscription_name_may_be_a_uuid(make_store):
    # As in the reference's tests, which name every subscription UUID.uuid4().
    store = make_store()
    name = str(uuid.uuid4())
    s1, s2 = (subscribe_all(store, name, concurrency_limit=2) for _ in range(2))
    append(store, "s", 2)
    assert next_numbers(s1) == [1]
    assert next_numbers(s2) == [2]
