"""A subscription's observable state follows the reference's state machine."""

from __future__ import annotations

from sqlalchemy_eventstore import ANY_VERSION, EventData

from .subscription_helpers import WAIT, eventually


def test_status_through_back_pressure_lock_contention_and_unsubscribe(make_store):
    store = make_store(subscription_retry_interval=0.2)
    store.append_to_stream("s", ANY_VERSION, [EventData("T", {"i": i}) for i in range(3)])
    sub = store.subscribe_to_all_streams("status", buffer_size=1)
    assert sub.wait_subscribed(WAIT)
    first = sub.receive(timeout=WAIT)
    # One event in flight, two waiting for the only (full) subscriber.
    assert eventually(lambda: sub.status == "max_capacity")

    # The same subscription in another store (another lock session) waits.
    other = make_store(schema=store.schema, init=False, subscription_retry_interval=0.2)
    waiting = other.subscribe_to_all_streams("status")
    assert eventually(lambda: waiting.status == "disconnected")
    assert not waiting.subscribed

    sub.ack(first)
    sub.ack(sub.receive(timeout=WAIT))
    sub.ack(sub.receive(timeout=WAIT))
    assert eventually(lambda: sub.status == "subscribed")
    sub.unsubscribe()
    assert sub.status == "unsubscribed"
    assert not sub.subscribed
    # The lock is free now: the waiting instance takes over.
    assert waiting.wait_subscribed(WAIT)
    assert eventually(lambda: waiting.status == "subscribed")
