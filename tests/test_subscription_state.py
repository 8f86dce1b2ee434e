"""The subscription state machine's ordering and checkpoint rules, without I/O.

These pin the invariants the runner relies on; the end-to-end behaviour is
tested against PostgreSQL in the test_subscriptions_* modules.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sqlalchemy_eventstore import RecordedEvent
from sqlalchemy_eventstore.errors import UnexpectedAckError
from sqlalchemy_eventstore.subscriptions.state import SubscriptionState


def event(number: int, stream: str = "s") -> RecordedEvent:
    return RecordedEvent(
        event_number=number,
        event_id=f"00000000-0000-0000-0000-{number:012d}",
        stream_uuid=stream,
        stream_version=number,
        event_type="T",
        data={"n": number},
        metadata=None,
        causation_id=None,
        correlation_id=None,
        created_at=datetime.now(timezone.utc),
    )


def make(**options) -> SubscriptionState:
    defaults = dict(last_seen=0, buffer_size=1, max_size=10, checkpoint_threshold=1)
    defaults.update(options)
    return SubscriptionState(**defaults)


def numbers(batches) -> dict:
    return {d.slot.key: [e.event_number for e in d.events] for d in batches}


def test_reads_until_a_short_page_then_takes_live_events():
    state = make(max_size=3)
    assert state.wants_read() == 3
    state.receive_read([event(1), event(2), event(3)], 3)
    assert state.behind  # a full page: there may be more
    state.queue.clear()
    state.receive_read([event(4)], 3)
    assert not state.behind
    state.receive_published([event(5), event(6)])
    assert [e.event_number for e in state.queue] == [4, 5, 6]


def test_a_gap_in_live_events_falls_back_to_storage():
    state = make()
    state.receive_read([event(1)], 10)
    state.receive_published([event(3)])  # 2 was never seen
    assert state.behind
    assert [e.event_number for e in state.queue] == [1]


def test_live_events_beyond_max_size_are_dropped_and_read_later():
    state = make(max_size=2)
    state.receive_read([], 2)
    state.receive_published([event(1), event(2), event(3)])
    assert state.behind and not state.queue  # memory stays bounded
    assert state.wants_read() == 2


def test_buffer_size_bounds_events_in_flight():
    state = make(buffer_size=2)
    state.add_subscriber("a")
    state.receive_read([event(n) for n in range(1, 6)], 10)
    assert numbers(state.dispatch()) == {"a": [1, 2]}
    assert state.dispatch() == []
    state.ack("a", 1)
    assert numbers(state.dispatch()) == {"a": [3]}


def test_checkpoint_moves_only_over_acknowledged_events():
    state = make(buffer_size=1)
    state.add_subscriber("a")
    state.add_subscriber("b")
    state.receive_read([event(1), event(2), event(3)], 10)
    assert numbers(state.dispatch()) == {"a": [1], "b": [2]}
    state.ack("b", 2)
    assert state.checkpoint == 0  # 1 is still unacknowledged
    state.ack("a", 1)
    assert state.checkpoint == 2


def test_selector_filtered_events_count_as_acknowledged():
    state = make(selector=lambda e: e.event_number % 2 == 0)
    state.add_subscriber("a")
    state.receive_read([event(1), event(2), event(3)], 10)
    assert state.checkpoint == 1
    assert numbers(state.dispatch()) == {"a": [2]}
    state.ack("a", 2)
    assert state.checkpoint == 3


def test_ack_of_an_event_not_sent_to_that_subscriber_is_refused():
    state = make()
    state.add_subscriber("a")
    state.add_subscriber("b")
    state.receive_read([event(1), event(2)], 10)
    state.dispatch()
    with pytest.raises(UnexpectedAckError):
        state.ack("a", 2)


def test_partitions_stay_on_one_subscriber_in_order():
    state = make(buffer_size=2, partition_by=lambda e: e.stream_uuid)
    state.add_subscriber("a")
    state.add_subscriber("b")
    evs = [event(1, "x"), event(2, "y"), event(3, "x"), event(4, "x"), event(5, "y")]
    state.receive_read(evs, 10)
    first = numbers(state.dispatch())
    assert first == {"a": [1, 3], "b": [2, 5]}  # x -> a, y -> b; 4 waits for a
    state.ack("a", 3)
    assert numbers(state.dispatch()) == {"a": [4]}


def test_a_removed_subscribers_events_go_first_to_keep_partition_order():
    state = make(buffer_size=1, partition_by=lambda e: e.stream_uuid)
    state.add_subscriber("a")
    state.add_subscriber("b")
    state.receive_read([event(1, "x"), event(2, "y"), event(3, "x")], 10)
    assert numbers(state.dispatch()) == {"a": [1], "b": [2]}
    state.remove_subscriber("a")  # dies with event 1 unacknowledged
    assert numbers(state.dispatch()) == {}  # b is full
    state.ack("b", 2)
    assert numbers(state.dispatch()) == {"b": [1]}  # x resumes with 1, then 3
    state.ack("b", 1)
    assert numbers(state.dispatch()) == {"b": [3]}
    state.ack("b", 3)
    assert state.checkpoint == 3


def test_checkpoint_threshold_decides_when_a_write_is_due():
    state = make(buffer_size=10, checkpoint_threshold=3)
    state.add_subscriber("a")
    state.receive_read([event(n) for n in range(1, 5)], 10)
    state.dispatch()
    state.ack("a", 2)
    assert state.checkpoint_pending and not state.checkpoint_due()
    state.ack("a", 3)
    assert state.checkpoint_due()
    state.persisted_at(state.checkpoint)
    assert not state.checkpoint_pending


def test_status_follows_catch_up_and_back_pressure():
    state = make(buffer_size=1, max_size=4)
    state.add_subscriber("a")
    assert state.status == "catching_up"
    state.receive_read([event(1), event(2)], 4)  # a short page: caught up
    state.dispatch()
    assert state.status == "max_capacity"  # 2 waits, the only subscriber is full
    state.ack("a", 1)
    state.dispatch()
    state.ack("a", 2)
    assert state.status == "subscribed"


def test_a_batch_is_acked_by_its_last_event_in_sending_order():
    state = make(buffer_size=2, partition_by=lambda e: e.stream_uuid)
    state.add_subscriber("a")
    state.add_subscriber("b")
    state.receive_read([event(1, "x"), event(2, "y")], 10)
    assert numbers(state.dispatch()) == {"a": [1], "b": [2]}
    state.receive_read([event(3, "x")], 10)
    assert numbers(state.dispatch()) == {"a": [3]}
    state.ack("b", 2)
    state.receive_read([event(4, "z")], 10)
    assert numbers(state.dispatch()) == {"b": [4]}
    # a leaves: 1 and 3 go first to b, after 4 in b's sending order.
    state.remove_subscriber("a")
    assert numbers(state.dispatch()) == {"b": [1]}
    state.ack("b", 1)  # covers 4, sent to b before 1
    assert state.checkpoint == 2
    assert numbers(state.dispatch()) == {"b": [3]}
    state.ack("b", 3)
    assert state.checkpoint == 4


def test_bookkeeping_is_bounded_by_pending_events_not_by_filtered_ones():
    state = make(buffer_size=1, max_size=1000, selector=lambda e: e.event_number % 1000 == 1)
    state.add_subscriber("a")
    for start in range(1, 100_001, 1000):
        state.receive_read([event(n) for n in range(start, start + 1000)], 1000)
        state.dispatch()
    assert state.last_received == 100_000
    assert state.checkpoint == 0  # event 1 is in flight, unacked
    assert state.bookkeeping_size <= 101  # the selected events, not 100,000
    state.ack("a", 1)
    assert state.checkpoint == 1000


def test_bookkeeping_is_bounded_while_an_old_event_stays_unacked():
    state = make(buffer_size=1, max_size=1000)
    state.add_subscriber("stuck")
    state.add_subscriber("busy", buffer_size=1000)
    for start in range(1, 50_001, 1000):
        state.receive_read([event(n) for n in range(start, start + 1000)], 1000)
        for batch in state.dispatch():
            if batch.slot.key == "busy":
                state.ack("busy", batch.events[-1].event_number)
    assert state.checkpoint == 0  # event 1 is in flight to "stuck", unacked
    assert state.bookkeeping_size <= 200  # not one entry per event acked since
    state.ack("stuck", 1)
    assert state.checkpoint == 50_000
