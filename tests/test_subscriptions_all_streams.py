"""Persistent subscriptions to ``$all``.

Ports the reference's all_streams_subscription_test (its
StreamSubscriptionTestCase on ``$all``, in both subscriber modes), the
all-streams parts of subscribe_to_stream_test and the persistent
subscription tests of event_store_test.
"""

from __future__ import annotations

import threading

import pytest

from sqlalchemy_eventstore import ALL_STREAM, CURRENT, ORIGIN, EventData
from sqlalchemy_eventstore.errors import SubscriptionAlreadyExistsError

from .subscription_helpers import (
    WAIT,
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


class TestAllStreamsSubscriptionMailbox(MailboxAckContract):
    mode = "mailbox"
    all_streams = True


class TestAllStreamsSubscriptionHandler(StreamSubscriptionContract):
    mode = "handler"
    all_streams = True


def subscribe_all(store, name="sub", **options):
    sub = store.subscribe_to_all_streams(name, **options)
    assert sub.wait_subscribed(WAIT)
    return sub


def test_receives_the_events_of_every_stream_in_order(store):
    one, two = new_id(), new_id()
    sub = subscribe_all(store, buffer_size=1)
    sent1 = append(store, one, 1, expected=0)
    sent2 = append(store, two, 1, expected=0)

    first = sub.receive(timeout=WAIT)
    assert numbers(first) == [1]
    assert pluck(first, "stream_uuid") == [one]
    assert pluck(first, "stream_version") == [1]
    assert_same_events(first, sent1)
    assert_quiet(sub)  # buffer_size=1: the second waits for the ack
    sub.ack(first)

    second = sub.receive(timeout=WAIT)
    assert numbers(second) == [2]
    assert pluck(second, "stream_uuid") == [two]
    assert pluck(second, "stream_version") == [1]
    assert_same_events(second, sent2)


def test_start_from_an_event_number_receives_only_later_events(make_store):
    es = make_store()
    one, two = new_id(), new_id()
    append(es, one, 1)
    append(es, two, 1)
    sub = subscribe_all(es, buffer_size=1, start_from=2)
    new1 = append(es, one, 1, first=2)
    new2 = append(es, two, 1, first=2)
    first = sub.receive(timeout=WAIT)
    sub.ack(first)
    second = sub.receive(timeout=WAIT)
    assert numbers(first) == [3]
    assert numbers(second) == [4]
    assert_same_events(first, new1)
    assert_same_events(second, new2)


def test_start_from_current_receives_only_new_events(make_store):
    es = make_store()
    stream = new_id()
    append(es, stream, 1)
    sub = subscribe_all(es, start_from=CURRENT)
    new = append(es, stream, 1, first=2)
    batch = sub.receive(timeout=WAIT)
    assert numbers(batch) == [2]
    assert_same_events(batch, new)
    sub.ack(batch)
    assert_quiet(sub)
    es.unsubscribe_from_all_streams("sub")


def test_start_from_origin_is_the_default(make_store, admin_engine):
    es = make_store()
    append(es, new_id(), 2)
    explicit = subscribe_all(es, name="explicit", start_from=ORIGIN, buffer_size=5)
    default = subscribe_all(es, name="default", buffer_size=5)
    assert numbers(explicit.receive(timeout=WAIT)) == [1, 2]
    assert numbers(default.receive(timeout=WAIT)) == [1, 2]


def test_catch_up_then_live_events(store):
    stream = new_id()
    events = append(store, stream, 3, expected=0)
    sub = subscribe_all(store, buffer_size=10)

    caught_up = sub.receive(timeout=WAIT)
    sub.ack(caught_up)
    assert numbers(caught_up) == [1, 2, 3]
    assert pluck(caught_up, "stream_uuid") == [stream] * 3
    assert pluck(caught_up, "stream_version") == [1, 2, 3]
    assert_same_events(caught_up, events)

    new_events = append(store, stream, 3, first=4, expected=3)
    live = sub.receive(timeout=WAIT)
    sub.ack(live)
    assert numbers(live) == [4, 5, 6]
    assert pluck(live, "stream_version") == [4, 5, 6]
    assert_same_events(live, new_events)
    store.unsubscribe_from_all_streams("sub")


def test_ack_by_event_number(make_store):
    es = make_store()
    sub = subscribe_all(es, buffer_size=1)
    assert_quiet(sub)
    sent1 = append(es, new_id(), 1)
    sent2 = append(es, new_id(), 1)
    first = sub.receive(timeout=WAIT)
    sub.ack(1)
    second = sub.receive(timeout=WAIT)
    assert_same_events(first, sent1)
    assert_same_events(second, sent2)


def test_partial_ack_then_the_rest(make_store):
    es = make_store()
    stream = new_id()
    sub = subscribe_all(es, buffer_size=3)
    initial = append(es, stream, 3)
    received = sub.receive(timeout=WAIT)
    assert_same_events(received, initial)

    sub.ack(received[0])  # the first event only
    assert_quiet(sub)
    remaining = append(es, stream, 3, first=4)
    # One slot is free: exactly one more event, then the rest after the ack.
    assert numbers(sub.receive(timeout=WAIT)) == [4]
    sub.ack(received)
    rest = collect(sub, 2)
    assert numbers(flatten(rest)) == [5, 6]
    assert_same_events(flatten(rest), remaining[1:])


def test_single_and_all_stream_subscriptions_both_receive(make_store):
    es = make_store()
    append(es, new_id(), 3)  # global numbers now differ from stream versions
    stream = new_id()
    single = es.subscribe_to_stream(stream, "sub-single", buffer_size=3)
    every = subscribe_all(es, name="sub-all", buffer_size=3, start_from=3)
    assert single.wait_subscribed(WAIT)
    events = append(es, stream, 3, expected=0)

    from_single = single.receive(timeout=WAIT)
    from_all = every.receive(timeout=WAIT)
    for batch, expected in ((from_single, [1, 2, 3]), (from_all, [4, 5, 6])):
        assert numbers(batch) == expected
        assert pluck(batch, "stream_uuid") == [stream] * 3
        assert pluck(batch, "stream_version") == [1, 2, 3]
        assert_same_events(batch, events)
    assert_quiet(single)
    assert_quiet(every)


def test_many_subscriptions_all_receive_every_event(make_store):
    es = make_store()
    lock = threading.Lock()
    received: dict[str, list[int]] = {}

    def collector(name):
        def handler(events):
            with lock:
                received.setdefault(name, []).extend(numbers(events))

        return handler

    names = [f"sub-{i}" for i in range(4)]
    for name in names:
        assert subscribe_all(es, name=name, handler=collector(name)).subscribed
    append(es, new_id(), 3)
    append(es, new_id(), 3)
    assert eventually(lambda: sum(len(v) for v in received.values()) == 4 * 6)
    assert received == {name: [1, 2, 3, 4, 5, 6] for name in names}


def test_subscribe_to_stream_with_all_stream_is_subscribe_to_all_streams(make_store, admin_engine):
    es = make_store()
    append(es, new_id(), 2)
    sub = es.subscribe_to_stream(ALL_STREAM, "sub", buffer_size=5)
    assert sub.wait_subscribed(WAIT)
    sub.ack(sub.receive(timeout=WAIT))
    assert subscription_rows(admin_engine, es.schema) == [(ALL_STREAM, "sub", 2)]
    # Both spellings name one subscription.
    with pytest.raises(SubscriptionAlreadyExistsError):
        es.subscribe_to_all_streams("sub")
    es.unsubscribe_from_all_streams("sub")
    assert_quiet(sub)

    again = subscribe_all(es, buffer_size=5)
    append(es, new_id(), 1)
    assert numbers(again.receive(timeout=WAIT)) == [3]


def test_unsubscribe_from_all_streams_keeps_the_checkpoint(make_store, admin_engine):
    es = make_store()
    append(es, new_id(), 2)
    sub = subscribe_all(es, buffer_size=1)
    sub.ack(sub.receive(timeout=WAIT))
    assert numbers(sub.receive(timeout=WAIT)) == [2]
    es.unsubscribe_from_all_streams("sub")
    assert checkpoint(admin_engine, es.schema, "sub") == 1

    again = subscribe_all(es, buffer_size=1)
    assert numbers(again.receive(timeout=WAIT)) == [2]


def test_delete_all_streams_subscription(make_store, admin_engine):
    es = make_store()
    append(es, new_id(), 2)
    sub = subscribe_all(es, buffer_size=5)
    sub.ack(sub.receive(timeout=WAIT))
    es.delete_all_streams_subscription("sub")
    assert subscription_rows(admin_engine, es.schema) == []
    append(es, new_id(), 1)
    assert_quiet(sub)

    again = subscribe_all(es, buffer_size=5)  # from the origin again
    assert numbers(flatten(collect(again, 3))) == [1, 2, 3]


def test_subscriptions_of_two_stores_on_separate_schemas_are_independent(make_store):
    one, two = make_store(), make_store()
    sub1 = subscribe_all(one, buffer_size=5)
    sub2 = subscribe_all(two, buffer_size=5)
    append(one, "s", 1)
    append(two, "s", 2)
    assert numbers(sub1.receive(timeout=WAIT)) == [1]
    assert numbers(sub2.receive(timeout=WAIT)) == [1, 2]
    assert_quiet(sub1)
    assert_quiet(sub2)


def test_events_appended_in_a_caller_transaction_arrive_after_commit(make_store):
    es = make_store()
    sub = subscribe_all(es, buffer_size=5)
    with es.engine.connect() as conn:
        with conn.begin():
            es.append_to_stream("s", 0, [_event()], conn=conn)
            assert_quiet(sub)  # not committed yet
        batch = sub.receive(timeout=WAIT)
        assert numbers(batch) == [1]
        sub.ack(batch)
        trans = conn.begin()
        es.append_to_stream("t", 0, [_event()], conn=conn)
        trans.rollback()
    assert_quiet(sub)


def _event():
    return EventData("Tick", {"event": 0})
