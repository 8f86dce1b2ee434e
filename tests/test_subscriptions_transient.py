"""Transient subscriptions: ``subscribe`` (no acks, nothing persisted) and
``subscribe_to_stream(..., transient=True)`` (acks, but no checkpoint).

Ports the transient subscription tests of the reference's event_store_test and
the "restarting a transient subscription" tests of subscribe_to_stream_test.
"""

from __future__ import annotations

import queue

import pytest

from sqlalchemy_eventstore import ALL_STREAM, EventData
from sqlalchemy_eventstore.errors import SubscriptionAlreadyExistsError

from .subscription_helpers import (
    WAIT,
    append,
    assert_quiet,
    assert_same_events,
    checkpoint,
    collect,
    eventually,
    flatten,
    new_id,
    numbers,
    subscription_rows,
)

# -- subscribe(): transient ---------------------------------------------------------------


class Collector:
    """A handler for ``subscribe(handler=...)`` with the mailbox's receive()."""

    def __init__(self) -> None:
        self.batches: queue.Queue[list] = queue.Queue()

    def __call__(self, events: list) -> None:
        self.batches.put(events)

    def receive(self, timeout: float = WAIT) -> list:
        try:
            return self.batches.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None


@pytest.fixture(params=["mailbox", "handler"])
def transient(request):
    """``transient(store, stream, **options)`` -> something with receive()."""

    def subscribe(store, stream_uuid, **options):
        if request.param == "mailbox":
            sub = store.subscribe(stream_uuid, **options)
            assert sub.subscribed  # subscribe() returns once listening
            return sub
        collector = Collector()
        sub = store.subscribe(stream_uuid, handler=collector, **options)
        collector.sub = sub
        return collector

    return subscribe


def test_notifies_events_persisted_after_subscribing(store, transient):
    stream = new_id()
    sub = transient(store, stream)
    sent = append(store, stream, 1, expected=0)
    batch = sub.receive(timeout=WAIT)
    assert_same_events(batch, sent)
    assert numbers(batch) == [1]


def test_ignores_events_persisted_before_subscribing(make_store, driver, transient):
    es = make_store(driver=driver)
    stream = new_id()
    append(es, stream, 1, expected=0)
    sub = transient(es, stream)
    assert_quiet(sub)
    append(es, stream, 2, first=2, expected=1)
    assert numbers(sub.receive(timeout=WAIT)) == [2, 3]


def test_ignores_events_of_another_stream(make_store, driver, transient):
    es = make_store(driver=driver)
    sub = transient(es, new_id())
    append(es, new_id(), 1)
    assert_quiet(sub)


def test_all_stream_subscriber_gets_every_append_as_a_batch(store, transient):
    sub = transient(store, ALL_STREAM)
    append(store, new_id(), 1)
    append(store, new_id(), 2)
    assert numbers(sub.receive(timeout=WAIT)) == [1]
    assert numbers(sub.receive(timeout=WAIT)) == [2, 3]


def test_mapper(make_store, transient):
    es = make_store()
    stream = new_id()
    sub = transient(es, stream, mapper=lambda e: e.event_number)
    append(es, stream, 1)
    assert sub.receive(timeout=WAIT) == [1]


def test_selector(make_store, transient):
    es = make_store()
    stream = new_id()
    sub = transient(es, stream, selector=lambda e: e.event_number % 2 == 0)
    append(es, stream, 4)
    assert numbers(sub.receive(timeout=WAIT)) == [2, 4]


def test_selector_and_mapper(make_store, driver, transient):
    es = make_store(driver=driver)
    stream = new_id()
    sub = transient(
        es, stream, selector=lambda e: e.event_number % 2 == 0, mapper=lambda e: e.event_number
    )
    append(es, stream, 4)
    assert sub.receive(timeout=WAIT) == [2, 4]
    append(es, stream, 1, first=5)  # all filtered out: no empty batch
    assert_quiet(sub)


def test_a_filtered_out_append_sends_no_batch(make_store, transient):
    es = make_store()
    sub = transient(es, ALL_STREAM, selector=lambda e: e.stream_uuid == "wanted")
    append(es, "other", 2)
    append(es, "wanted", 1)
    assert numbers(sub.receive(timeout=WAIT)) == [3]
    assert_quiet(sub)


def test_many_transient_subscribers_each_get_every_event(make_store):
    es = make_store()
    subs = [es.subscribe(ALL_STREAM) for _ in range(3)] + [es.subscribe("s") for _ in range(2)]
    append(es, "s", 2)
    append(es, "t", 1)
    for sub in subs[:3]:
        assert numbers(flatten(collect(sub, 3))) == [1, 2, 3]
    for sub in subs[3:]:
        assert numbers(sub.receive(timeout=WAIT)) == [1, 2]
        assert_quiet(sub)


def test_ack_is_accepted_and_nothing_is_persisted(make_store, admin_engine):
    es = make_store()
    sub = es.subscribe(ALL_STREAM, mapper=lambda e: e.data)
    append(es, "s", 2)
    batch = sub.receive(timeout=WAIT)
    sub.ack(batch)  # nothing to acknowledge: a no-op
    sub.ack(12345)
    assert subscription_rows(admin_engine, es.schema) == []


def test_unsubscribe_stops_delivery(make_store, driver):
    es = make_store(driver=driver)
    sub = es.subscribe("s")
    other = es.subscribe("s")
    sub.unsubscribe()
    append(es, "s", 1)
    assert numbers(other.receive(timeout=WAIT)) == [1]
    assert_quiet(sub)


def test_resubscribing_ignores_events_appended_while_unsubscribed(make_store, driver):
    es = make_store(driver=driver)
    first = es.subscribe("s")
    every = es.subscribe(ALL_STREAM)
    append(es, "s", 1)
    assert numbers(first.receive(timeout=WAIT)) == [1]
    assert numbers(every.receive(timeout=WAIT)) == [1]
    first.unsubscribe()
    every.unsubscribe()

    append(es, "s", 2, first=2)  # nobody subscribed
    assert eventually(lambda: es.stream_info("s").stream_version == 3)
    again = es.subscribe("s")
    every_again = es.subscribe(ALL_STREAM)
    append(es, "s", 1, first=4)
    assert numbers(again.receive(timeout=WAIT)) == [4]
    assert numbers(every_again.receive(timeout=WAIT)) == [4]
    assert_quiet(again)


def test_resubscribing_after_notifications_nobody_wanted(make_store):
    es = make_store()
    first = es.subscribe("s")
    first.unsubscribe()
    append(es, "s", 2)
    # Give the listener time to see (and drop) the notification nobody wants.
    assert_quiet(es.subscribe("unrelated"))
    again = es.subscribe("s")
    append(es, "s", 1, first=3)
    assert numbers(again.receive(timeout=WAIT)) == [3]
    assert_quiet(again)


def test_a_failing_mapper_does_not_hold_up_other_subscribers(make_store):
    es = make_store()

    def broken(event):
        raise ValueError("this mapper fails")

    bad = es.subscribe("s", mapper=broken)
    good = es.subscribe("s")
    append(es, "s", 2)
    assert numbers(good.receive(timeout=WAIT)) == [1, 2]
    append(es, "s", 1, first=3)
    assert numbers(good.receive(timeout=WAIT)) == [3]  # and nothing twice
    assert_quiet(good)
    assert_quiet(bad)


def test_a_transient_subscriber_beside_a_persistent_one(make_store):
    es = make_store()
    persistent = es.subscribe_to_stream("s", "p", buffer_size=10)
    assert persistent.wait_subscribed(WAIT)
    append(es, "s", 2)
    persistent.ack(persistent.receive(timeout=WAIT))

    transient = es.subscribe("s")
    append(es, "s", 1, first=3)
    assert numbers(transient.receive(timeout=WAIT)) == [3]
    assert numbers(persistent.receive(timeout=WAIT)) == [3]
    assert_quiet(transient)


def test_commit_in_a_caller_transaction_notifies(make_store):
    es = make_store()
    sub = es.subscribe(ALL_STREAM)
    with es.engine.connect() as conn:
        with conn.begin():
            es.append_to_stream("s", 0, [EventData("Tick", {"event": 1})], conn=conn)
            assert_quiet(sub)
        assert numbers(sub.receive(timeout=WAIT)) == [1]
        trans = conn.begin()
        es.append_to_stream("t", 0, [EventData("Tick", {"event": 2})], conn=conn)
        trans.rollback()
    assert_quiet(sub)


def test_subscribe_rejects_bad_arguments(make_store):
    es = make_store()
    with pytest.raises((TypeError, ValueError), match="stream_uuid"):
        es.subscribe("")
    with pytest.raises(TypeError, match="mapper"):
        es.subscribe("s", mapper=42)
    with pytest.raises(TypeError, match="handler"):
        es.subscribe("s", handler="not callable")


# -- subscribe_to_stream(transient=True) ---------------------------------------------------


def subscribe_transient(store, stream, name, **options):
    sub = store.subscribe_to_stream(stream, name, transient=True, **options)
    assert sub.wait_subscribed(WAIT)
    return sub


def test_restarted_transient_subscription_receives_every_event_again(
    make_store, driver, admin_engine
):
    es = make_store(driver=driver)
    stream = new_id()
    initial = append(es, stream, 1)
    sub = subscribe_transient(es, stream, "sub")
    batch = sub.receive(timeout=WAIT)
    assert_same_events(batch, initial)
    sub.ack(batch)
    sub.unsubscribe()

    append(es, stream, 1, first=2)
    again = subscribe_transient(es, stream, "sub")
    assert_same_events(again.receive(timeout=WAIT), initial)
    assert subscription_rows(admin_engine, es.schema) == []


def test_restarted_transient_subscription_starts_from_start_from(make_store):
    es = make_store()
    stream = new_id()
    append(es, stream, 1)
    new = append(es, stream, 1, first=2)
    sub = subscribe_transient(es, stream, "sub")
    sub.ack(sub.receive(timeout=WAIT))
    assert_same_events(sub.receive(timeout=WAIT), new)
    sub.unsubscribe()

    append(es, stream, 1, first=3)
    again = subscribe_transient(es, stream, "sub", start_from=1)
    assert_same_events(again.receive(timeout=WAIT), new)


def test_transient_then_persistent_with_the_same_name(make_store):
    es = make_store()
    stream = new_id()
    initial = append(es, stream, 1)
    sub = subscribe_transient(es, stream, "sub")
    sub.ack(sub.receive(timeout=WAIT))
    sub.unsubscribe()

    append(es, stream, 1, first=2)
    persistent = es.subscribe_to_stream(stream, "sub", transient=False)
    assert persistent.wait_subscribed(WAIT)
    assert_same_events(persistent.receive(timeout=WAIT), initial)


def test_persistent_then_transient_then_persistent_with_the_same_name(make_store, admin_engine):
    es = make_store()
    stream = new_id()
    initial = append(es, stream, 1)
    persistent = es.subscribe_to_stream(stream, "sub")
    assert persistent.wait_subscribed(WAIT)
    persistent.ack(persistent.receive(timeout=WAIT))
    persistent.unsubscribe()
    assert checkpoint(admin_engine, es.schema, "sub", stream) == 1

    new = append(es, stream, 1, first=2)
    sub = subscribe_transient(es, stream, "sub")
    assert_same_events(sub.receive(timeout=WAIT), initial)  # from start_from, not the checkpoint
    sub.ack(1)
    sub.ack(sub.receive(timeout=WAIT))
    sub.unsubscribe()
    assert checkpoint(admin_engine, es.schema, "sub", stream) == 1  # untouched

    again = es.subscribe_to_stream(stream, "sub")
    assert again.wait_subscribed(WAIT)
    assert_same_events(again.receive(timeout=WAIT), new)


def test_transient_subscription_persists_nothing_even_at_close(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    append(es, "s", 3)
    sub = es.subscribe_to_all_streams("sub", transient=True, buffer_size=3, checkpoint_after=0.05)
    assert sub.wait_subscribed(WAIT)
    sub.ack(sub.receive(timeout=WAIT))
    assert_quiet(sub)
    es.close()
    assert subscription_rows(admin_engine, es.schema) == []


def test_transient_subscription_keeps_acks_and_back_pressure(make_store, driver):
    es = make_store(driver=driver)
    append(es, "s", 5)
    sub = es.subscribe_to_all_streams("sub", transient=True, buffer_size=2)
    assert sub.wait_subscribed(WAIT)
    first = sub.receive(timeout=WAIT)
    assert numbers(first) == [1, 2]
    assert_quiet(sub)
    sub.ack(first)
    assert numbers(flatten(collect(sub, 3, ack=True))) == [3, 4, 5]


def test_one_name_cannot_be_both_transient_and_persistent_in_one_process(make_store, driver):
    es = make_store(driver=driver)
    subscribe_transient(es, ALL_STREAM, "sub")
    with pytest.raises(SubscriptionAlreadyExistsError):
        es.subscribe_to_all_streams("sub")


def test_transient_handler_subscription(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    append(es, "s", 4)
    seen = []
    sub = es.subscribe_to_all_streams(
        "sub", transient=True, handler=lambda events: seen.extend(numbers(events)), buffer_size=3
    )
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: seen == [1, 2, 3, 4])
    assert subscription_rows(admin_engine, es.schema) == []
