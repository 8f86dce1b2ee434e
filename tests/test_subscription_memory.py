"""The in-flight/acked bookkeeping is bounded by what is queued and in flight.

One subscriber holds the first event and never acks it; another acks every
later event as it comes. The checkpoint stays at 0 all along, yet the
subscription must not keep an entry per event read (filtered out) or per
event acked since (the checkpoint is "one below the lowest event still
pending": a heap of pending events, compacted). The figures over 1,000,000
events are in benchmarks/bench_subscription_catchup.py and RELIABILITY.md.
"""

from __future__ import annotations

from sqlalchemy_eventstore import ALL_STREAM, EventData

from .subscription_helpers import WAIT, checkpoint, eventually, numbers


def test_bookkeeping_stays_small_with_a_sparse_selector_and_an_unacked_event(
    make_store, admin_engine
):
    es = make_store()
    es.append_to_stream("s", 0, [EventData("Tick", {"i": i}) for i in range(30_000)])
    options = dict(concurrency_limit=2, max_size=500, selector=lambda e: e.event_number % 100 == 1)
    stuck = es.subscribe_to_all_streams("sparse", buffer_size=1, **options)
    assert stuck.wait_subscribed(WAIT)
    first = stuck.receive(timeout=WAIT)
    assert numbers(first) == [1]  # never acked until the end
    busy = es.subscribe_to_all_streams("sparse", buffer_size=10, **options)
    acked = 0
    while acked < 299:  # 101, 201, ..., 29901
        batch = busy.receive(timeout=WAIT)
        busy.ack(batch)
        acked += len(batch)
    runner = es._runner
    assert runner is not None
    state = runner._persistent[(ALL_STREAM, "sparse")].state
    assert state is not None
    assert eventually(lambda: state.last_received == 30_000)
    assert state.checkpoint == 0
    # Pending: event 1 and little else; nothing per filtered or acked event.
    assert state.bookkeeping_size <= 100
    assert stuck._in_flight_deliveries == 1 and busy._in_flight_deliveries == 0
    stuck.ack(first)
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "sparse") == 30_000)
