"""Replaying parked events: the running subscription reacts to
``store.replay_parked`` (a flag and a NOTIFY on ``"<schema>.parked"``),
delivers the events in order below its checkpoint, and unparks each once
acked; a partition key is free again once its parked events are replayed and
acked, or discarded."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import text

from sqlalchemy_eventstore import ANY_VERSION, EventData

from .subscription_helpers import WAIT, checkpoint, collect, eventually, flatten, numbers


def parked(admin_engine, schema: str) -> list[int]:
    with admin_engine.connect() as conn:
        return [
            int(r[0])
            for r in conn.execute(
                text(f'SELECT event_number FROM "{schema}".parked_events ORDER BY 1')
            )
        ]


def test_replayed_events_are_delivered_in_order_and_unparked_once_acked(
    make_store, driver, admin_engine
):
    es = make_store(driver=driver)
    broken = threading.Event()
    broken.set()

    def mapper(event: Any) -> Any:
        if broken.is_set() and event.stream_uuid == "x" and event.data["i"] == 0:
            raise ValueError("x0")
        return event

    for stream, i in (("x", 0), ("y", 0), ("x", 1), ("y", 1)):
        es.append_to_stream(stream, ANY_VERSION, [EventData("Tick", {"i": i})])
    sub = es.subscribe_to_all_streams(
        "replay",
        buffer_size=10,
        mapper=mapper,
        partition_by=lambda e: e.stream_uuid,
        max_retries=0,
    )
    assert sub.wait_subscribed(WAIT)
    assert numbers(flatten(collect(sub, 2, ack=True))) == [2, 4]
    assert eventually(lambda: parked(admin_engine, es.schema) == [1, 3])
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "replay") == 4)
    # A later x event is parked behind too: the key is still blocked.
    es.append_to_stream("x", ANY_VERSION, [EventData("Tick", {"i": 2})])
    assert eventually(lambda: parked(admin_engine, es.schema) == [1, 3, 5])

    broken.clear()
    assert es.replay_parked("replay") == 3
    replayed = flatten(collect(sub, 3))
    assert numbers(replayed) == [1, 3, 5]  # in order, although below the checkpoint
    sub.ack(replayed[-1])
    assert eventually(lambda: parked(admin_engine, es.schema) == [])
    # x is free again: its next event is delivered normally.
    es.append_to_stream("x", ANY_VERSION, [EventData("Tick", {"i": 3})])
    assert numbers(flatten(collect(sub, 1, ack=True))) == [6]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "replay") == 6)


def test_discarded_parked_events_free_their_key(make_store, admin_engine):
    es = make_store()

    def mapper(event: Any) -> Any:
        if event.event_number == 1:
            raise ValueError("first")
        return event

    sub = es.subscribe_to_all_streams(
        "discard",
        buffer_size=10,
        mapper=mapper,
        partition_by=lambda e: e.stream_uuid,
        max_retries=0,
    )
    assert sub.wait_subscribed(WAIT)
    es.append_to_stream("x", ANY_VERSION, [EventData("Tick", {"i": 0})])
    assert eventually(lambda: parked(admin_engine, es.schema) == [1])
    assert es.discard_parked("discard") == 1
    es.append_to_stream("x", ANY_VERSION, [EventData("Tick", {"i": 1})])
    assert numbers(flatten(collect(sub, 1, ack=True))) == [2]
    assert parked(admin_engine, es.schema) == []
