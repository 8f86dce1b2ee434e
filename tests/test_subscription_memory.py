"""The in-flight/acked bookkeeping is bounded by what is queued and in flight.

A sparse selector and one unacknowledged event must not make a subscription
keep an entry per event it read (the checkpoint is "one below the lowest
event still pending": a heap of pending events, nothing per filtered one).
The figures over 1,000,000 events are in benchmarks/bench_subscriptions.py.
"""

from __future__ import annotations

from sqlalchemy_eventstore import ALL_STREAM, EventData

from .subscription_helpers import WAIT, checkpoint, eventually, numbers


def test_bookkeeping_stays_small_with_a_sparse_selector_and_an_unacked_event(
    make_store, admin_engine
):
    es = make_store()
    es.append_to_stream("s", 0, [EventData("Tick", {"i": i}) for i in range(12_000)])
    sub = es.subscribe_to_all_streams(
        "sparse", buffer_size=5, max_size=500, selector=lambda e: e.event_number % 1000 == 1
    )
    assert sub.wait_subscribed(WAIT)
    first = sub.receive(timeout=WAIT)
    assert numbers(first)[0] == 1  # not acked until the end: the checkpoint stays at 0
    runner = es._runner
    assert runner is not None
    persistent = runner._persistent[(ALL_STREAM, "sparse")]
    assert eventually(lambda: persistent.state is not None and not persistent.state.behind, 30)
    state = persistent.state
    assert state is not None
    assert state.last_received == 12_000
    # Pending: the few selected events queued or in flight; nothing per filtered event.
    assert state.bookkeeping_size <= 20
    assert state.checkpoint == 0
    assert sub._in_flight_deliveries <= 5
    sub.ack(first)
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "sparse") >= 1000)
