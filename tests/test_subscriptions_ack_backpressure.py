"""Acknowledgements, checkpoints and back-pressure.

Ports the reference's subscription_acknowledgement_test and
subscription_back_pressure_test, plus the ack forms of the spec (a batch, one
event, an event_number), UnexpectedAckError, and acks racing unsubscribe and
close.
"""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from sqlalchemy_eventstore.errors import UnexpectedAckError

from .subscription_helpers import (
    MODES,
    WAIT,
    HandlerSubscriber,
    append,
    assert_quiet,
    checkpoint,
    collect,
    eventually,
    flatten,
    numbers,
    pluck,
)


@pytest.fixture(params=sorted(MODES))
def mode(request):
    return request.param


@pytest.fixture
def subscribers():
    made = []
    yield made
    for subscriber in made:
        subscriber.abandon()


@pytest.fixture
def es(make_store, subscribers):
    return make_store()


def subscribe_all(es, subscribers, mode, name="subscription", **options):
    subscriber = MODES[mode]()
    subscribers.append(subscriber)
    return subscriber.subscribe(es, "$all", name, **options)


def receive_and_ack(subscriber, expected_stream, expected_numbers):
    batch = subscriber.receive(timeout=WAIT)
    assert numbers(batch) == expected_numbers
    assert pluck(batch, "stream_uuid") == [expected_stream] * len(expected_numbers)
    subscriber.ack(batch)
    return batch


# -- checkpoints -------------------------------------------------------------------------


def test_checkpoint_after_each_event_by_default(es, subscribers, mode, admin_engine):
    subscriber = subscribe_all(es, subscribers, mode, buffer_size=1)
    append(es, "stream1", 3)
    for number in (1, 2, 3):
        receive_and_ack(subscriber, "stream1", [number])
        assert eventually(lambda n=number: checkpoint(admin_engine, es.schema, "subscription") == n)
    assert_quiet(subscriber)


def test_checkpoint_after_reaching_the_threshold(es, subscribers, mode, admin_engine):
    def stored():
        return checkpoint(admin_engine, es.schema, "subscription")

    subscriber = subscribe_all(es, subscribers, mode, buffer_size=3, checkpoint_threshold=6)
    append(es, "stream1", 3)
    receive_and_ack(subscriber, "stream1", [1, 2, 3])
    append(es, "stream2", 3)
    # The second batch only arrives once the first ack is recorded.
    receive_and_ack(subscriber, "stream2", [4, 5, 6])
    assert eventually(lambda: stored() == 6)  # six acked: written

    append(es, "stream3", 1)
    receive_and_ack(subscriber, "stream3", [7])
    assert_quiet(subscriber)  # also gives a handler's ack time to be recorded
    assert stored() == 6  # one more ack: below the threshold


def test_below_the_threshold_nothing_is_written(es, admin_engine):
    sub = es.subscribe_to_all_streams("subscription", buffer_size=3, checkpoint_threshold=6)
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 3)
    sub.ack(sub.receive(timeout=WAIT))  # mailbox: returns once the ack is recorded
    assert checkpoint(admin_engine, es.schema, "subscription") == 0
    append(es, "stream2", 3)
    sub.ack(sub.receive(timeout=WAIT))
    assert checkpoint(admin_engine, es.schema, "subscription") == 6


def test_checkpoint_after_inactivity(es, subscribers, mode, admin_engine):
    subscriber = subscribe_all(
        es, subscribers, mode, buffer_size=3, checkpoint_after=0.3, checkpoint_threshold=100
    )
    append(es, "stream1", 3)
    receive_and_ack(subscriber, "stream1", [1, 2, 3])
    append(es, "stream2", 3)
    receive_and_ack(subscriber, "stream2", [4, 5, 6])
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "subscription") == 6)
    assert_quiet(subscriber)


def test_checkpoint_after_is_not_immediate(es, admin_engine):
    sub = es.subscribe_to_all_streams(
        "subscription", buffer_size=3, checkpoint_after=2.0, checkpoint_threshold=100
    )
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 3)
    sub.ack(sub.receive(timeout=WAIT))
    assert checkpoint(admin_engine, es.schema, "subscription") == 0
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "subscription") == 3)


def test_checkpoint_when_the_subscriber_unsubscribes(es, subscribers, mode, admin_engine):
    subscriber = subscribe_all(es, subscribers, mode, buffer_size=3, checkpoint_threshold=100)
    append(es, "stream1", 3)
    receive_and_ack(subscriber, "stream1", [1, 2, 3])
    subscriber.unsubscribe()
    assert checkpoint(admin_engine, es.schema, "subscription") == 3


def test_checkpoint_when_the_store_closes(es, subscribers, mode, admin_engine):
    subscriber = subscribe_all(es, subscribers, mode, buffer_size=3, checkpoint_threshold=100)
    append(es, "stream1", 3)
    receive_and_ack(subscriber, "stream1", [1, 2, 3])
    es.close()
    assert checkpoint(admin_engine, es.schema, "subscription") == 3


def test_acks_from_many_threads_then_close(make_store, admin_engine):
    es = make_store()
    append(es, "stream1", 20)
    sub = es.subscribe_to_all_streams("subscription", buffer_size=20, checkpoint_threshold=1000)
    assert sub.wait_subscribed(WAIT)
    batch = flatten(collect(sub, 20))
    assert numbers(batch) == list(range(1, 21))
    refused: list[int] = []

    def ack(event):
        try:
            sub.ack(event)
        except UnexpectedAckError:
            refused.append(event.event_number)  # already covered by a later ack (SPEC.md)

    threads = [threading.Thread(target=ack, args=(event,)) for event in batch]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    es.close()
    assert checkpoint(admin_engine, es.schema, "subscription") == 20


# -- ack forms ---------------------------------------------------------------------------


def test_ack_forms_batch_event_and_event_number(es, admin_engine):
    sub = es.subscribe_to_all_streams("subscription", buffer_size=6)
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 6)
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == [1, 2, 3, 4, 5, 6]

    def stored():
        return checkpoint(admin_engine, es.schema, "subscription")

    sub.ack(batch[1])  # one RecordedEvent: it and every earlier one
    assert stored() == 2
    sub.ack(4)  # an event_number
    assert stored() == 4
    sub.ack(batch[3:5])  # a batch: its last event
    assert stored() == 5
    sub.ack([])  # nothing
    sub.ack(batch)  # already partly acked: fine
    assert stored() == 6
    with pytest.raises(UnexpectedAckError):
        sub.ack(batch)  # already acked: not in flight any more (SPEC.md)
    assert stored() == 6


def test_ack_of_something_else_is_a_type_error(es):
    sub = es.subscribe_to_all_streams("subscription", buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 1)
    sub.receive(timeout=WAIT)
    with pytest.raises(TypeError, match="ack"):
        sub.ack("1")


def test_unexpected_ack_error(es):
    sub = es.subscribe_to_all_streams("subscription", buffer_size=5, max_size=5)
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 5)
    batch = sub.receive(timeout=WAIT)
    with pytest.raises(UnexpectedAckError) as raised:
        sub.ack(999)
    error = raised.value
    assert error.reason == "unexpected_ack"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is UnexpectedAckError
    assert copy.reason == "unexpected_ack"
    sub.ack(batch)  # the subscription carries on


def test_mapper_values_are_acked_by_event_number(es, admin_engine):
    sub = es.subscribe_to_all_streams(
        "subscription", buffer_size=3, mapper=lambda e: e.data["event"] * 100
    )
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 3)
    assert sub.receive(timeout=WAIT) == [100, 200, 300]
    sub.ack(3)
    assert checkpoint(admin_engine, es.schema, "subscription") == 3


def test_handler_with_a_mapper_to_plain_values_is_acked(es, admin_engine):
    # The mapped values are ints that are not event numbers: the automatic
    # ack must still acknowledge the events the batch came from.
    seen = []
    sub = es.subscribe_to_all_streams(
        "subscription",
        handler=seen.extend,
        buffer_size=2,
        mapper=lambda e: e.data["event"] + 1000,
    )
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 5)
    assert eventually(lambda: len(seen) == 5)
    assert seen == [1001, 1002, 1003, 1004, 1005]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "subscription") == 5)


def test_handler_with_a_mapper_to_one_shared_value_is_acked(es, admin_engine):
    seen = []
    sub = es.subscribe_to_all_streams(
        "subscription", handler=seen.extend, buffer_size=2, mapper=lambda e: None
    )
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 5)
    assert eventually(lambda: len(seen) == 5)
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "subscription") == 5)


def test_a_failing_handler_gets_the_batch_again(es, admin_engine):
    calls = []

    def handler(events):
        calls.append(numbers(events))
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    sub = es.subscribe_to_all_streams("subscription", handler=handler, buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 3)
    assert eventually(lambda: len(calls) >= 2)
    assert calls[:2] == [[1, 2, 3], [1, 2, 3]]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "subscription") == 3)
    append(es, "stream2", 1)
    assert eventually(lambda: calls[-1] == [4])


def test_mailbox_only_methods(es):
    sub = es.subscribe_to_all_streams("subscription", handler=lambda events: None)
    with pytest.raises(RuntimeError):
        sub.receive(timeout=0.1)


def test_receive_times_out(es):
    sub = es.subscribe_to_all_streams("subscription")
    assert sub.wait_subscribed(WAIT)
    with pytest.raises(TimeoutError):
        sub.receive(timeout=0.1)


def test_unsubscribe_and_ack_after_close_do_not_hang(make_store):
    es = make_store()
    append(es, "stream1", 2)
    sub = es.subscribe_to_all_streams("subscription")
    assert sub.wait_subscribed(WAIT)
    batch = sub.receive(timeout=WAIT)
    es.close()
    started = time.monotonic()
    sub.unsubscribe()  # nothing left to stop
    with pytest.raises(RuntimeError, match="closed"):
        sub.ack(batch)
    assert time.monotonic() - started < 3.0
    with pytest.raises(RuntimeError, match="closed"):
        es.subscribe_to_all_streams("another")


def test_closing_while_a_handler_is_busy_acks_its_batch(make_store, admin_engine):
    es = make_store()
    started = threading.Event()

    def slow(events):
        started.set()
        time.sleep(0.5)

    sub = es.subscribe_to_all_streams("subscription", handler=slow, buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    append(es, "stream1", 3)
    assert started.wait(WAIT)
    es.close()  # waits for the running handler, which then acks
    assert checkpoint(admin_engine, es.schema, "subscription") == 3


# -- back-pressure -----------------------------------------------------------------------


def test_pending_events_arrive_once_caught_up(es, subscribers, mode):
    subscriber = subscribe_all(es, subscribers, mode, buffer_size=5, max_size=5)
    for stream in ("stream1", "stream2", "stream3", "stream4"):
        append(es, stream, 5)
    receive_and_ack(subscriber, "stream1", [1, 2, 3, 4, 5])
    receive_and_ack(subscriber, "stream2", [6, 7, 8, 9, 10])
    receive_and_ack(subscriber, "stream3", [11, 12, 13, 14, 15])
    receive_and_ack(subscriber, "stream4", [16, 17, 18, 19, 20])
    assert_quiet(subscriber)


def test_appended_events_arrive_once_caught_up(es, subscribers, mode):
    subscriber = subscribe_all(es, subscribers, mode, buffer_size=5, max_size=5)
    for stream in ("stream1", "stream2", "stream3"):
        append(es, stream, 5)
    receive_and_ack(subscriber, "stream1", [1, 2, 3, 4, 5])
    receive_and_ack(subscriber, "stream2", [6, 7, 8, 9, 10])
    append(es, "stream4", 5)
    receive_and_ack(subscriber, "stream3", [11, 12, 13, 14, 15])
    receive_and_ack(subscriber, "stream4", [16, 17, 18, 19, 20])
    assert_quiet(subscriber)


def test_many_small_appends_with_a_small_buffer(es, subscribers, mode):
    subscriber = subscribe_all(es, subscribers, mode, buffer_size=3)
    for i in range(5):
        append(es, f"stream{i + 1}", 3)
    for i in range(5):
        receive_and_ack(subscriber, f"stream{i + 1}", [3 * i + 1, 3 * i + 2, 3 * i + 3])
    assert_quiet(subscriber)


def test_in_flight_never_exceeds_buffer_size(es):
    # A handler that records how many events it holds unacknowledged: with
    # one handler thread that is at most one batch, itself <= buffer_size.
    sizes = []
    sub = es.subscribe_to_all_streams(
        "subscription", handler=lambda events: sizes.append(len(events)), buffer_size=4
    )
    assert sub.wait_subscribed(WAIT)
    for i in range(10):
        append(es, f"stream{i}", 3)
    assert eventually(lambda: sum(sizes) == 30)
    assert max(sizes) <= 4


def test_a_slow_mailbox_consumer_holds_at_most_buffer_size_events(es):
    sub = es.subscribe_to_all_streams("subscription", buffer_size=4, max_size=10)
    assert sub.wait_subscribed(WAIT)
    for i in range(20):
        append(es, f"stream{i}", 2)
    held = flatten(collect(sub, 4))
    assert numbers(held) == [1, 2, 3, 4]
    assert_quiet(sub)
    sub.ack(2)
    more = flatten(collect(sub, 2))
    assert numbers(more) == [5, 6]
    assert_quiet(sub)
    sub.ack(6)
    rest = flatten(collect(sub, 34, ack=True))
    assert numbers(rest) == list(range(7, 41))


def test_unacked_handler_batch_is_redelivered_after_unsubscribe(es, admin_engine):
    subscriber = HandlerSubscriber()
    subscriber.subscribe(es, "$all", "subscription", buffer_size=3)
    append(es, "stream1", 3)
    assert numbers(subscriber.receive()) == [1, 2, 3]
    subscriber.unsubscribe()  # the held call raises: not acknowledged
    assert checkpoint(admin_engine, es.schema, "subscription") == 0

    again = HandlerSubscriber(hold=False)
    again.subscribe(es, "$all", "subscription", buffer_size=3)
    assert numbers(again.receive()) == [1, 2, 3]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "subscription") == 3)
