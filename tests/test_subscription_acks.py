"""Acks cover exactly what they name, in sending order; stray acks raise.

A batch is known by identity (the very list ``receive`` returned), whatever
the mapper made of its events; a batch acks its last event in sending order;
an ack of something not in flight raises UnexpectedAckError (SPEC.md).
"""

from __future__ import annotations

import pytest

from sqlalchemy_eventstore import ALL_STREAM
from sqlalchemy_eventstore.errors import UnexpectedAckError

from .subscription_helpers import WAIT, append, checkpoint, eventually, numbers


def test_acking_a_mapped_batch_acks_only_that_batch(make_store, driver, admin_engine):
    """Mapper returning a shared value (None): ack(batch_1) must not ack batch 2."""
    es = make_store(driver=driver)
    sub = es.subscribe_to_all_streams("mapped", buffer_size=4, mapper=lambda e: None)
    assert sub.wait_subscribed(WAIT)
    append(es, "s", 2)
    batch_1 = sub.receive(timeout=WAIT)
    assert batch_1 == [None, None]
    append(es, "s", 2)
    batch_2 = sub.receive(timeout=WAIT)
    assert batch_2 == [None, None]
    sub.ack(batch_1)
    # Only batch 1 is acked: the checkpoint is 2, never 4.
    assert checkpoint(admin_engine, es.schema, "mapped") == 2
    es.close()
    assert checkpoint(admin_engine, es.schema, "mapped") == 2


def test_a_batch_received_while_the_previous_is_unacked_is_not_acked_with_it(
    make_store, driver, admin_engine
):
    es = make_store(driver=driver)
    append(es, "s", 4)
    sub = es.subscribe_to_all_streams("two", buffer_size=4, max_size=2, mapper=lambda e: True)
    assert sub.wait_subscribed(WAIT)
    batch_1 = sub.receive(timeout=WAIT)
    batch_2 = sub.receive(timeout=WAIT)
    assert len(batch_1) + len(batch_2) == 4
    sub.ack(batch_1)
    assert checkpoint(admin_engine, es.schema, "two") == len(batch_1)
    es.close()
    assert checkpoint(admin_engine, es.schema, "two") == len(batch_1)


@pytest.mark.parametrize("stray", [0, -1, 99])
def test_acking_an_event_never_sent_raises(make_store, driver, stray):
    es = make_store(driver=driver)
    append(es, "s", 2)
    sub = es.subscribe_to_all_streams("stray", buffer_size=2)
    assert sub.wait_subscribed(WAIT)
    assert numbers(sub.receive(timeout=WAIT)) == [1, 2]
    with pytest.raises(UnexpectedAckError):
        sub.ack(stray)


def test_acking_an_already_acked_event_raises(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    append(es, "s", 3)
    sub = es.subscribe_to_all_streams("twice", buffer_size=3)
    assert sub.wait_subscribed(WAIT)
    batch = sub.receive(timeout=WAIT)
    sub.ack(2)
    with pytest.raises(UnexpectedAckError):
        sub.ack(2)
    with pytest.raises(UnexpectedAckError):
        sub.ack(batch[0])  # covered by the ack of 2
    sub.ack(batch)
    with pytest.raises(UnexpectedAckError):
        sub.ack(batch)
    assert checkpoint(admin_engine, es.schema, "twice") == 3


def test_requeued_events_are_acked_in_sending_order(make_store, driver, admin_engine):
    """A subscriber leaves with events in flight: they are requeued at the front,
    so the next batch of the other subscriber may be [4, 3]; acking that batch
    acks both, and the checkpoint follows."""
    es = make_store(driver=driver)
    opts = dict(concurrency_limit=2, buffer_size=2, partition_by=lambda e: e.stream_uuid)
    a = es.subscribe_to_all_streams("order", **opts)
    b = es.subscribe_to_all_streams("order", **opts)
    assert a.wait_subscribed(WAIT) and b.wait_subscribed(WAIT)
    # Stream x: events 1, 2 (to one subscriber); stream y: 3, 4.
    append(es, "x", 2)
    append(es, "y", 2)
    got: dict[str, tuple] = {}
    for sub in (a, b):
        batch = sub.receive(timeout=WAIT)
        got[batch[0].stream_uuid] = (sub, batch)
    holder_x, batch_x = got["x"]
    holder_y, batch_y = got["y"]
    assert numbers(batch_x) == [1, 2]
    assert numbers(batch_y) == [3, 4]
    holder_x.ack(batch_x)
    # y's subscriber leaves without acking: 3 and 4 go back to the queue front.
    holder_y.unsubscribe()
    again = holder_x.receive(timeout=WAIT)
    assert numbers(again) == [3, 4]
    holder_x.ack(again)
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "order") == 4)


def test_handler_mode_acks_each_batch_by_its_last_event(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    seen: list[list[int]] = []
    sub = es.subscribe_to_stream(
        ALL_STREAM,
        "handled",
        handler=lambda batch: seen.append(batch),
        buffer_size=3,
        mapper=lambda e: e.event_number,
    )
    assert sub.wait_subscribed(WAIT)
    append(es, "s", 7)
    assert eventually(lambda: sum(len(b) for b in seen) == 7)
    assert [n for b in seen for n in b] == list(range(1, 8))
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "handled") == 7)
