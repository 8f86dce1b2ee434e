"""Persistent subscriptions to one stream.

Ports the reference's single_stream_subscription_test (its
StreamSubscriptionTestCase, in both subscriber modes),
linked_event_stream_subscription_test and the single-stream parts of
subscribe_to_stream_test.
"""

from __future__ import annotations

import pytest

from sqlalchemy_eventstore import CURRENT
from sqlalchemy_eventstore.errors import SubscriptionAlreadyExistsError

from .subscription_helpers import (
    WAIT,
    HandlerSubscriber,
    MailboxAckContract,
    StreamSubscriptionContract,
    append,
    assert_quiet,
    assert_same_events,
    checkpoint,
    collect,
    eventually,
    flatten,
    new_id,
    numbers,
    pluck,
    subscription_rows,
)


class TestSingleStreamSubscriptionMailbox(MailboxAckContract):
    mode = "mailbox"
    all_streams = False


class TestSingleStreamSubscriptionHandler(StreamSubscriptionContract):
    mode = "handler"
    all_streams = False


@pytest.fixture
def es(make_store):
    store = make_store()
    # Events in another stream first, so stream versions differ from global numbers.
    append(store, new_id(), 3)
    return store


def subscribe(store, stream_uuid, name="sub", **options):
    options.setdefault("buffer_size", 3)
    sub = store.subscribe_to_stream(stream_uuid, name, **options)
    assert sub.wait_subscribed(WAIT)
    return sub


def receive_and_ack(sub, expected_numbers):
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == expected_numbers
    sub.ack(batch)
    return batch


def test_subscribe_from_origin_receives_all_the_stream_events(store):
    append(store, new_id(), 3)
    stream = new_id()
    sub = subscribe(store, stream)
    sent = append(store, stream, 3, expected=0)
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == [1, 2, 3]
    assert pluck(batch, "stream_uuid") == [stream] * 3
    assert pluck(batch, "stream_version") == [1, 2, 3]
    assert_same_events(batch, sent)


def test_subscribe_from_a_stream_version_receives_only_later_events(es):
    stream = new_id()
    append(es, stream, 1, expected=0)
    sub = subscribe(es, stream, start_from=1)
    later = append(es, stream, 1, first=2, expected=1)
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == [2]
    assert pluck(batch, "stream_version") == [2]
    assert_same_events(batch, later)


def test_subscribing_twice_with_the_same_name_raises(es):
    stream = new_id()
    es.subscribe_to_stream(stream, "sub")
    with pytest.raises(SubscriptionAlreadyExistsError) as raised:
        es.subscribe_to_stream(stream, "sub")
    assert raised.value.reason == "subscription_already_exists"


def test_the_same_name_on_another_stream_is_another_subscription(es, admin_engine):
    one, two = new_id(), new_id()
    sub1 = subscribe(es, one)
    sub2 = subscribe(es, two)
    append(es, one, 1)
    append(es, two, 2)
    assert pluck(sub1.receive(timeout=WAIT), "stream_uuid") == [one]
    assert pluck(sub2.receive(timeout=WAIT), "stream_uuid") == [two, two]
    assert {(r[0], r[1]) for r in subscription_rows(admin_engine, es.schema)} == {
        (one, "sub"),
        (two, "sub"),
    }


def test_events_of_other_streams_are_ignored(es):
    interested, other = new_id(), new_id()
    sub = subscribe(es, interested)
    sent = append(es, interested, 1)
    append(es, other, 1)
    batch = sub.receive(timeout=WAIT)
    assert_same_events(batch, sent)
    sub.ack(batch)
    assert_quiet(sub)


def test_mapper_receives_mapped_events(es):
    stream = new_id()
    sub = subscribe(es, stream, mapper=lambda e: e.event_number)
    append(es, stream, 3)
    assert sub.receive(timeout=WAIT) == [1, 2, 3]


def test_selector_receives_only_selected_events(es):
    stream = new_id()
    sub = subscribe(es, stream, selector=lambda e: e.event_number % 2 == 0)
    append(es, stream, 4)
    receive_and_ack(sub, [2, 4])
    assert_quiet(sub)


def test_selector_keeps_filtering_later_events(es):
    stream = new_id()
    sub = subscribe(es, stream, selector=lambda e: e.event_number % 2 == 0)
    append(es, stream, 3)
    receive_and_ack(sub, [2])
    append(es, stream, 3, first=4, expected=3)
    receive_and_ack(sub, [4, 6])
    assert_quiet(sub)


def test_selector_during_catch_up_keeps_filtering(es):
    stream = new_id()
    append(es, stream, 3, expected=0)
    append(es, stream, 3, first=4, expected=3)
    sub = subscribe(es, stream, buffer_size=2, selector=lambda e: e.event_number % 2 == 0)
    receive_and_ack(sub, [2, 4])
    receive_and_ack(sub, [6])
    assert_quiet(sub)


def test_selector_and_mapper_together(es):
    stream = new_id()
    sub = subscribe(
        es, stream, selector=lambda e: e.event_number % 2 == 0, mapper=lambda e: e.event_number
    )
    append(es, stream, 4)
    assert sub.receive(timeout=WAIT) == [2, 4]


def test_keeps_receiving_after_each_ack(es):
    stream = new_id()
    initial = append(es, stream, 1, expected=0)
    new = append(es, stream, 1, first=2, expected=1)
    sub = subscribe(es, stream, buffer_size=1)
    assert_same_events(receive_and_ack(sub, [1]), initial)
    assert_same_events(receive_and_ack(sub, [2]), new)
    assert_quiet(sub)


def test_ack_by_stream_version(es, admin_engine):
    stream = new_id()
    append(es, stream, 2)
    sub = subscribe(es, stream, buffer_size=1)
    assert numbers(sub.receive(timeout=WAIT)) == [1]
    sub.ack(1)
    assert numbers(sub.receive(timeout=WAIT)) == [2]
    sub.ack(2)
    assert checkpoint(admin_engine, es.schema, "sub", stream) == 2
    assert_quiet(sub)


def test_catch_up_from_unseen_events_in_buffer_sized_batches(es):
    stream = new_id()
    for count, version in ((1, 0), (2, 1), (3, 3), (4, 6)):
        append(es, stream, count, expected=version)
    sub = subscribe(es, stream)
    for expected in ([1, 2, 3], [4, 5, 6], [7, 8, 9], [10]):
        receive_and_ack(sub, expected)
    append(es, stream, 5, first=11, expected=10)
    receive_and_ack(sub, [11, 12, 13])
    receive_and_ack(sub, [14, 15])
    assert_quiet(sub)


def test_restart_receives_only_unacknowledged_events(es):
    stream = new_id()
    append(es, stream, 1)
    sub = subscribe(es, stream)
    receive_and_ack(sub, [1])
    sub.unsubscribe()
    new = append(es, stream, 1, first=2)
    again = subscribe(es, stream)
    assert_same_events(receive_and_ack(again, [2]), new)
    assert_quiet(again)


def test_restart_after_close_resumes_from_the_checkpoint_in_a_new_store(make_store):
    first = make_store()
    stream = new_id()
    append(first, stream, 3)
    sub = subscribe(first, stream, buffer_size=2)
    receive_and_ack(sub, [1, 2])
    assert numbers(sub.receive(timeout=WAIT)) == [3]  # sent, never acked
    first.close()

    second = make_store(schema=first.schema, init=False)
    append(second, stream, 1, first=4)
    again = subscribe(second, stream, buffer_size=2)
    receive_and_ack(again, [3, 4])
    assert_quiet(again)


def test_unsubscribe_from_stream_stops_the_subscriber_and_keeps_the_checkpoint(es, admin_engine):
    stream = new_id()
    append(es, stream, 2)
    sub = subscribe(es, stream, buffer_size=1)
    receive_and_ack(sub, [1])
    assert numbers(sub.receive(timeout=WAIT)) == [2]  # not acked

    es.unsubscribe_from_stream(stream, "sub")
    append(es, stream, 1, first=3)
    assert_quiet(sub)  # stopped: nothing more arrives
    assert checkpoint(admin_engine, es.schema, "sub", stream) == 1

    again = subscribe(es, stream, buffer_size=1)
    receive_and_ack(again, [2])
    receive_and_ack(again, [3])
    assert_quiet(again)


def test_unsubscribe_from_a_stream_nobody_subscribed_is_a_no_op(es):
    es.unsubscribe_from_stream(new_id(), "nobody")
    es.unsubscribe_from_all_streams("nobody")


def test_delete_subscription_stops_it_and_removes_its_checkpoint(es, admin_engine):
    stream = new_id()
    append(es, stream, 2)
    sub = subscribe(es, stream)
    receive_and_ack(sub, [1, 2])
    assert checkpoint(admin_engine, es.schema, "sub", stream) == 2

    es.delete_subscription(stream, "sub")
    assert subscription_rows(admin_engine, es.schema) == []
    append(es, stream, 1, first=3)
    assert_quiet(sub)

    # The name is free again, with any start position.
    again = subscribe(es, stream, start_from=1)
    receive_and_ack(again, [2, 3])
    assert checkpoint(admin_engine, es.schema, "sub", stream) == 3


def test_delete_subscription_without_a_subscriber(es, admin_engine):
    stream = new_id()
    append(es, stream, 2)
    subscribe(es, stream).unsubscribe()
    assert checkpoint(admin_engine, es.schema, "sub", stream) == 0
    es.delete_subscription(stream, "sub")
    assert subscription_rows(admin_engine, es.schema) == []


def test_start_from_current_receives_only_new_events(es):
    stream = new_id()
    append(es, stream, 2)
    sub = subscribe(es, stream, start_from=CURRENT)
    assert_quiet(sub)
    new = append(es, stream, 1, first=3)
    assert_same_events(receive_and_ack(sub, [3]), new)


def test_start_from_current_on_a_stream_that_does_not_exist_yet(es):
    stream = new_id()
    sub = subscribe(es, stream, start_from=CURRENT)
    append(es, stream, 2)
    receive_and_ack(sub, [1, 2])


def test_start_from_is_ignored_when_the_subscription_exists(es):
    stream = new_id()
    append(es, stream, 3)
    sub = subscribe(es, stream, buffer_size=1)
    receive_and_ack(sub, [1])
    sub.unsubscribe()
    again = subscribe(es, stream, start_from=CURRENT)
    receive_and_ack(again, [2, 3])


def test_handler_subscriber_receives_and_auto_acks(es, admin_engine):
    stream = new_id()
    append(es, stream, 5)
    subscriber = HandlerSubscriber(hold=False)
    subscriber.subscribe(es, stream, "sub", buffer_size=2)
    assert numbers(flatten(collect(subscriber, 5))) == [1, 2, 3, 4, 5]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "sub", stream) == 5)


# -- linked events ---------------------------------------------------------------------


def link_events_in_stream(store, linked_stream, expected_version):
    source = new_id()
    events = append(store, source, 3, expected=0)
    read = store.read_stream_forward(source, 0, 3)
    store.link_to_stream(linked_stream, expected_version, read)
    return source, events


@pytest.mark.parametrize("mode", ["mailbox", "handler"])
def test_subscription_to_a_stream_of_linked_events(es, mode):
    linked = new_id()
    if mode == "mailbox":
        sub = subscribe(es, linked, name=new_id(), buffer_size=3)
    else:
        sub = HandlerSubscriber(hold=False).subscribe(es, linked, new_id(), buffer_size=3)

    links = [link_events_in_stream(es, linked, version) for version in (0, 3, 6)]
    batches = collect(sub, 9, ack=mode == "mailbox")
    assert [numbers(b) for b in batches] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    for batch, (source, events) in zip(batches, links, strict=True):
        assert pluck(batch, "stream_uuid") == [source] * 3
        assert pluck(batch, "stream_version") == [1, 2, 3]
        assert_same_events(batch, events)
    assert_quiet(sub)
