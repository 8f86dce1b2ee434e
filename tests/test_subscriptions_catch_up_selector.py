"""Catching up from storage, ``max_size``, selectors and mappers.

Ports the reference's subscription_catch_up_test, subscription_selector_test
(and the older susbcription_selector_test) -- whose SelectorSubscriber is a
handler that acks every batch after an optional delay.
"""

from __future__ import annotations

import threading
import time

import pytest

from .subscription_helpers import (
    WAIT,
    append,
    assert_quiet,
    checkpoint,
    collect,
    eventually,
    flatten,
    make_events,
    new_id,
    numbers,
    pluck,
)

# -- catch-up ---------------------------------------------------------------------------


def subscribe_all(store, name=None, **options):
    sub = store.subscribe_to_all_streams(name or new_id(), **options)
    assert sub.wait_subscribed(WAIT)
    return sub


def receive_and_ack(sub, expected_stream, first_number, count=10):
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == list(range(first_number, first_number + count))
    assert pluck(batch, "stream_uuid") == [expected_stream] * count
    sub.ack(batch)


def four_streams_of_ten(store):
    streams = [new_id() for _ in range(4)]
    for stream in streams:
        append(store, stream, 10, expected=0)
    return streams


def test_catch_up_receives_all_existing_events(make_store):
    es = make_store()
    s1, s2, s3, s4 = four_streams_of_ten(es)
    sub = subscribe_all(es, buffer_size=10)
    append(es, s1, 10, first=11, expected=10)  # while catching up
    for stream, first in ((s1, 1), (s2, 11), (s3, 21), (s4, 31)):
        receive_and_ack(sub, stream, first)
    append(es, s1, 10, first=21, expected=20)
    receive_and_ack(sub, s1, 41)
    receive_and_ack(sub, s1, 51)
    assert_quiet(sub)
    append(es, s1, 10, first=31, expected=30)
    receive_and_ack(sub, s1, 61)
    assert_quiet(sub)


def test_catch_up_receives_events_of_soft_deleted_streams(make_store):
    es = make_store(enable_hard_deletes=False)
    s1, s2, s3, s4 = four_streams_of_ten(es)
    es.delete_stream(s2, 10)
    sub = subscribe_all(es, buffer_size=10)
    append(es, s1, 10, first=11, expected=10)
    for stream, first in ((s1, 1), (s2, 11), (s3, 21), (s4, 31)):
        receive_and_ack(sub, stream, first)
    append(es, s1, 10, first=21, expected=20)
    receive_and_ack(sub, s1, 41)
    receive_and_ack(sub, s1, 51)
    assert_quiet(sub)


def test_catch_up_skips_events_of_hard_deleted_streams(make_store):
    es = make_store(enable_hard_deletes=True)
    s1, s2, s3, s4 = four_streams_of_ten(es)
    es.delete_stream(s2, 10, hard=True)
    sub = subscribe_all(es, buffer_size=10)
    append(es, s1, 10, first=11, expected=10)
    for stream, first in ((s1, 1), (s3, 21), (s4, 31)):
        receive_and_ack(sub, stream, first)
    append(es, s1, 10, first=21, expected=20)
    receive_and_ack(sub, s1, 41)
    receive_and_ack(sub, s1, 51)
    assert_quiet(sub)
    append(es, s1, 10, first=31, expected=30)
    receive_and_ack(sub, s1, 61)
    assert_quiet(sub)


def test_catch_up_batches_are_at_most_max_size(make_store, admin_engine):
    es = make_store()
    append(es, "s", 25)
    sub = subscribe_all(es, name="sub", buffer_size=10, max_size=4)
    batches = collect(sub, 25, ack=True)
    assert numbers(flatten(batches)) == list(range(1, 26))
    assert max(len(batch) for batch in batches) <= 4
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "sub") == 25)
    assert_quiet(sub)


def test_max_size_overflow_falls_back_to_storage_without_losing_events(make_store):
    es = make_store()
    sub = subscribe_all(es, buffer_size=2, max_size=3)
    for i in range(8):
        append(es, f"stream{i}", 3)  # far more than fits in memory
    first = sub.receive(timeout=WAIT)
    assert numbers(first) == [1, 2]
    assert_quiet(sub)  # back-pressure: nothing while unacked
    sub.ack(first)
    rest = collect(sub, 22, ack=True)
    assert numbers(flatten(rest)) == list(range(3, 25))
    assert max(len(batch) for batch in rest) <= 2
    assert_quiet(sub)


def test_large_catch_up_with_default_options(make_store, admin_engine):
    es = make_store()
    for i in range(3):
        append(es, f"stream{i}", 1000)
    seen = []
    sub = es.subscribe_to_all_streams(
        "sub", handler=lambda events: seen.extend(numbers(events)), buffer_size=500
    )
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: len(seen) >= 3000)
    assert seen == list(range(1, 3001))
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "sub") == 3000)


def test_resume_after_restart_mid_catch_up(make_store):
    first = make_store()
    append(first, "s", 10)
    sub = first.subscribe_to_all_streams("sub", buffer_size=3, max_size=4)
    assert sub.wait_subscribed(WAIT)
    sub.ack(sub.receive(timeout=WAIT))  # 1..3
    assert numbers(sub.receive(timeout=WAIT)) == [4, 5, 6]  # never acked
    first.close()

    second = make_store(schema=first.schema, init=False)
    again = second.subscribe_to_all_streams("sub", buffer_size=3, max_size=4)
    assert again.wait_subscribed(WAIT)
    assert numbers(flatten(collect(again, 7, ack=True))) == list(range(4, 11))


# -- selector (the reference's SelectorSubscriber) --------------------------------------


def is_odd_event(event):
    return event.data["event"] % 2 == 1


class SelectorSubscriber:
    """Subscribes with an odd-events selector; records each batch, then acks
    it (the handler returns) after ``delay`` seconds."""

    def __init__(self, store, stream_uuid, delay=0.0):
        self.batches = []
        self.lock = threading.Lock()
        self.delay = delay
        self.sub = store.subscribe_to_stream(
            stream_uuid, new_id(), handler=self.handle, selector=is_odd_event
        )
        assert self.sub.wait_subscribed(WAIT)

    def handle(self, events):
        with self.lock:
            self.batches.append([e.data["event"] for e in events])
        if self.delay:
            time.sleep(self.delay)

    def received(self):
        with self.lock:
            return list(self.batches)

    def wait_for(self, count):
        assert eventually(lambda: len(self.received()) >= count)
        time.sleep(0.3)  # and nothing more
        return self.received()


def append_one_by_one(store, stream, first, last):
    for i in range(first, last + 1):
        store.append_to_stream(stream, i - 1, make_events(1, first=i))


def odd(first, last):
    return [[i] for i in range(first, last + 1) if i % 2 == 1]


@pytest.mark.parametrize("delay", [0.0, 0.01])
def test_selector_catch_up_receives_only_selected_events(make_store, delay):
    es = make_store()
    stream = new_id()
    append_one_by_one(es, stream, 1, 100)
    subscriber = SelectorSubscriber(es, stream, delay)
    assert subscriber.wait_for(50) == odd(1, 100)


@pytest.mark.parametrize("delay", [0.0, 0.01])
def test_selector_catch_up_then_resume_receiving_only_selected_events(make_store, delay):
    es = make_store()
    stream = new_id()
    append_one_by_one(es, stream, 1, 100)
    subscriber = SelectorSubscriber(es, stream, delay)
    assert subscriber.wait_for(50) == odd(1, 100)
    append_one_by_one(es, stream, 101, 200)
    assert subscriber.wait_for(100) == odd(1, 200)


@pytest.mark.parametrize("delay", [0.0, 0.01])
def test_selector_subscriber_receives_only_selected_live_events(make_store, delay):
    es = make_store()
    stream = new_id()
    subscriber = SelectorSubscriber(es, stream, delay)
    append_one_by_one(es, stream, 1, 100)
    assert subscriber.wait_for(50) == odd(1, 100)


def test_selector_rejecting_everything_still_moves_the_checkpoint(make_store, admin_engine):
    es = make_store()
    append(es, "s", 5)
    sub = subscribe_all(es, name="sub", selector=lambda e: False)
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "sub") == 5)
    assert_quiet(sub)
    append(es, "s", 3, first=6)
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "sub") == 8)
    assert_quiet(sub)


def test_filtered_events_count_towards_the_checkpoint_threshold(make_store, admin_engine):
    es = make_store()
    sub = subscribe_all(
        es,
        name="sub",
        buffer_size=10,
        checkpoint_threshold=4,
        selector=lambda e: e.data["event"] == 4,
    )
    append(es, "s", 3)  # all filtered out: 3 counted, below the threshold
    assert_quiet(sub)
    assert checkpoint(admin_engine, es.schema, "sub") == 0
    append(es, "s", 1, first=4)
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == [4]
    sub.ack(batch)  # 4 acknowledged (3 filtered + 1): written
    assert checkpoint(admin_engine, es.schema, "sub") == 4


def test_filtered_events_between_unacked_ones_wait_for_them(make_store, admin_engine):
    es = make_store()
    sub = subscribe_all(es, name="sub", buffer_size=3, selector=lambda e: e.event_number != 2)
    append(es, "s", 4)
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == [1, 3, 4]
    assert checkpoint(admin_engine, es.schema, "sub") == 0  # 1 is not acked
    sub.ack(1)
    assert checkpoint(admin_engine, es.schema, "sub") == 2  # 1, and the filtered 2
    sub.ack(batch)
    assert checkpoint(admin_engine, es.schema, "sub") == 4


def test_selector_and_mapper_see_recorded_events(make_store):
    es = make_store()
    selected, mapped = [], []

    def selector(event):
        selected.append(type(event).__name__)
        return event.event_number != 2

    def mapper(event):
        mapped.append(event.event_number)
        return {"n": event.event_number, "type": event.event_type}

    sub = subscribe_all(es, buffer_size=5, selector=selector, mapper=mapper)
    append(es, "s", 3)
    batch = flatten(collect(sub, 2))
    assert batch == [{"n": 1, "type": "Tick"}, {"n": 3, "type": "Tick"}]
    assert set(selected) == {"RecordedEvent"}
    assert mapped == [1, 3]  # the mapper only sees selected events
    sub.ack(batch)
    assert_quiet(sub)
