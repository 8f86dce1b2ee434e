"""One named subscription, two processes: only one receives; the other takes over.

    python examples/cluster_demo.py       # DATABASE_URL, or a throwaway PostgreSQL

Both workers subscribe to ``$all`` as "cluster-demo". A Postgres advisory
lock lets one of them run it; the other retries every
``subscription_retry_interval`` seconds. The demo kills the holder (its
connections close, so Postgres releases the lock) and the survivor resumes
from the last acknowledged event.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import uuid
from multiprocessing.synchronize import Event as EventType
from typing import Any

from _db import database_url

from sqlalchemy_eventstore import CURRENT, EventData, EventStore, RecordedEvent

SCHEMA = "cluster_demo_example"
SUBSCRIPTION = "cluster-demo"


def worker(name: str, url: str, reports: multiprocessing.Queue[Any], stop: EventType) -> None:
    """A process running the subscription until ``stop`` is set (or it is killed)."""
    with EventStore(url, schema=SCHEMA, subscription_retry_interval=0.5) as store:

        def handle(batch: list[RecordedEvent]) -> None:
            for event in batch:
                reports.put(("received", name, event.data["n"]))

        # CURRENT: a new subscription starts after the events already stored.
        subscription = store.subscribe_to_all_streams(
            SUBSCRIPTION, handler=handle, start_from=CURRENT
        )
        reports.put(("started", name, None))
        while not stop.is_set():
            if subscription.wait_subscribed(timeout=0.1):
                reports.put(("subscribed", name, None))
                break
        stop.wait()
    reports.put(("stopped", name, None))


def expect(
    reports: multiprocessing.Queue[Any], kind: str, timeout: float = 15.0
) -> tuple[str, Any]:
    """The next report of ``kind`` (others are printed as they come)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, name, value = reports.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise SystemExit(f"no {kind!r} report within {timeout} s") from None
        if got == kind:
            return name, value
        print(f"  ({name} {got})")


def main() -> None:
    url = database_url()
    context = multiprocessing.get_context("spawn")
    reports: multiprocessing.Queue[Any] = context.Queue()
    workers: dict[str, Any] = {}
    # One stop event per worker: a process killed while waiting on an Event
    # leaves it unusable for the others (their set() would hang).
    stops: dict[str, EventType] = {}

    def start(name: str) -> None:
        stops[name] = context.Event()
        workers[name] = context.Process(target=worker, args=(name, url, reports, stops[name]))
        workers[name].start()
        expect(reports, "started")
        print(f"{name} started")

    with EventStore(url, schema=SCHEMA) as store:
        store.init()
        store.delete_all_streams_subscription(SUBSCRIPTION)  # left by an interrupted run
        run = uuid.uuid4().hex[:6]

        def publish(numbers: range) -> None:
            for n in numbers:
                store.append_to_stream(f"cluster-{run}-{n}", 0, [EventData("Tick", {"n": n})])
            waiting = set(numbers)
            while waiting:
                receiver, n = expect(reports, "received")
                if n in waiting:
                    waiting.discard(n)
                    print(f"event {n} received by {receiver}")
                else:  # killed after handling, before its ack was recorded
                    print(f"  (event {n} redelivered to {receiver}: at-least-once)")

        try:
            start("worker-1")
            holder, _ = expect(reports, "subscribed")
            print(f"{holder} holds the subscription")
            start("worker-2")
            publish(range(1, 4))

            time.sleep(0.5)  # let the holder record its last ack
            print(f"killing {holder}")
            workers[holder].kill()
            workers[holder].join()
            successor, _ = expect(reports, "subscribed")
            print(f"{successor} took over the subscription")
            publish(range(4, 7))

            stops[successor].set()
            expect(reports, "stopped")
            print(f"{successor} stopped")
        finally:
            for process in workers.values():
                process.join(5)
                if process.is_alive():
                    process.kill()
                    process.join()
            store.delete_all_streams_subscription(SUBSCRIPTION)


if __name__ == "__main__":
    main()
