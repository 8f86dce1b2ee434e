"""A subscriber that dies must not break (or stall) per-partition ordering.

The reference's third known defect: here a handler whose worker thread dies
(an exception outside ``Exception``) leaves the subscription like one that
unsubscribed: its unacknowledged events go, first, to the other subscribers,
each partition still in order.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy_eventstore import ANY_VERSION, EventData

from .subscription_helpers import WAIT, checkpoint, eventually


class WorkerKilled(BaseException):
    """Outside ``Exception``: ends the handler's worker thread."""


def test_a_dead_handler_thread_hands_its_partitions_on_in_order(make_store, admin_engine):
    es = make_store()
    lock = threading.Lock()
    received: dict[str, list[int]] = {}
    killed = threading.Event()

    def dying(batch: list[Any]) -> None:
        killed.set()
        raise WorkerKilled("the worker thread dies")

    def healthy(batch: list[Any]) -> None:
        with lock:
            for e in batch:
                received.setdefault(e.stream_uuid, []).append(e.data["i"])

    opts: dict[str, Any] = dict(
        concurrency_limit=2, buffer_size=3, partition_by=lambda e: e.stream_uuid
    )
    dead = es.subscribe_to_all_streams("parts", handler=dying, **opts)
    alive = es.subscribe_to_all_streams("parts", handler=healthy, **opts)
    assert dead.wait_subscribed(WAIT) and alive.wait_subscribed(WAIT)
    for round_ in range(5):
        for stream in ("a", "b", "c", "d"):
            es.append_to_stream(stream, ANY_VERSION, [EventData("Tick", {"i": round_})])
    assert killed.wait(WAIT)
    assert eventually(lambda: dead.status == "unsubscribed")
    assert isinstance(dead.last_error, WorkerKilled)
    # Every partition reaches the healthy subscriber, complete and in order.
    assert eventually(
        lambda: all(received.get(s) == [0, 1, 2, 3, 4] for s in ("a", "b", "c", "d"))
    ), received
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "parts") == 20)
