"""What counting appends costs: ``append_to_stream`` next to the same call uncounted.

Run it as a script (it is not a test)::

    python benchmarks/bench_counters.py [--url URL] [--appends N] [--rounds R]

``EventStore.stats()`` counts appends and events with two plain integer
increments after each ``append_to_stream``. This script measures, in one run
against one server:

- the increments alone (``timeit``), in nanoseconds per append;
- single-event appends through ``append_to_stream`` (counted) and through the
  very same storage call without the counting (``store._call(None,
  store._append_call(...))``, what ``append_to_stream`` ran before), rounds
  interleaved with the side going first alternating, so load from other
  processes falls on both alike. Medians of the per-round means are printed.

It creates one schema (a unique name) and drops it at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit
import uuid

from sqlalchemy import create_engine

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore._counters import StoreCounters
from sqlalchemy_eventstore._operations import STORE_TIMEOUT


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--appends", type=int, default=500, help="appends per side per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    counters = StoreCounters()
    events = [EventData("E", {})]

    def count() -> None:
        counters.appends += 1
        counters.events_appended += len(events)

    loops = 1_000_000
    increments_ns = timeit.timeit(count, number=loops) / loops * 1e9
    empty_ns = timeit.timeit(lambda: None, number=loops) / loops * 1e9
    print(f"two increments: {increments_ns - empty_ns:.0f} ns per append (call overhead removed)")

    schema = f"bench_counters_{uuid.uuid4().hex[:8]}"
    store = EventStore(args.url, schema=schema)
    store.init()
    try:
        stream = f"s-{uuid.uuid4()}"

        def counted() -> None:
            store.append_to_stream(stream, ANY_VERSION, [EventData("E", {"n": 1})])

        def uncounted() -> None:
            call = store._append_call(
                stream, ANY_VERSION, [EventData("E", {"n": 1})], STORE_TIMEOUT
            )
            store._call(None, call)

        for side in (counted, uncounted):  # warm up the pool and the plans
            for _ in range(50):
                side()
        means: dict[str, list[float]] = {"counted": [], "uncounted": []}
        for round_ in range(args.rounds):
            order = [("counted", counted), ("uncounted", uncounted)]
            for name, side in order if round_ % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                for _ in range(args.appends):
                    side()
                means[name].append((time.perf_counter() - start) / args.appends * 1e6)
        counted_us = statistics.median(means["counted"])
        uncounted_us = statistics.median(means["uncounted"])
        print(f"append_to_stream, counted:   {counted_us:8.1f} us per append (median of rounds)")
        print(f"same call, not counted:      {uncounted_us:8.1f} us per append")
        change = (counted_us / uncounted_us - 1) * 100
        print(f"difference: {counted_us - uncounted_us:+.1f} us ({change:+.1f} %)")
        for name, values in means.items():
            print(f"  spread of {name} rounds: {min(values):.0f}-{max(values):.0f} us")
        print(f"store.stats(): appends={store.stats().appends}")
    finally:
        store.close()
        with create_engine(args.url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
