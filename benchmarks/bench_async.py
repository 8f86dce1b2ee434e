"""The async API next to the sync one: appends, reads, subscription latency, concurrency.

Run it as a script (it is not a test)::

    python benchmarks/bench_async.py [--url URL] [--quick] [--rounds N]

The server is ``--url``, else ``DATABASE_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``. Three sides do the same work
in one run, each on a schema of its own (unique names, dropped at the end):

- ``sync psycopg2``: ``EventStore`` (the default driver);
- ``async asyncpg``: ``AsyncEventStore`` on ``postgresql+asyncpg``;
- ``async psycopg``: ``AsyncEventStore`` on ``postgresql+psycopg`` (psycopg 3).

The async sides run on one event loop in a thread of their own; their timings
are taken on that loop, so the hop from the main thread is not counted.

- **appends**: one new stream per call, batches of 1, 10, 100 and 1,000 events;
  the sides interleave call batch by call batch, the first rotating per round.
- **reads**: all of ``$all`` in pages of 1,000 (``read_all_streams_forward``),
  and lazily (``stream_all_forward``).
- **subscription latency**: a persistent ``$all`` subscription in mailbox mode
  (a thread receiving for the sync side, a task for the async ones); events
  appended one at a time, 5 ms apart; latency from just before the append call
  to the batch's receipt (so it includes the append's commit), p50 and p99.
- **concurrent appenders**: N appenders each appending single events to a
  stream of their own -- threads for the sync store, tasks on one event loop
  for the async ones -- with each engine's default pool (5 + 10 overflow).

Medians over rounds. The exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from sqlalchemy_eventstore import CURRENT, EventData, EventStore
from sqlalchemy_eventstore.asyncio import AsyncEventStore

T = TypeVar("T")
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCHES_QUICK = {1: 60, 10: 30, 100: 8, 1000: 2}
BATCHES_FULL = {1: 300, 10: 120, 100: 30, 1000: 6}


def payload(i: int) -> dict[str, Any]:
    return {"i": i, "sku": "SKU-0001", "quantity": 3, "note": "x" * 160}


def events(n: int, first: int = 0) -> list[EventData]:
    return [EventData("OrderPlaced", payload(first + i), {"user": "bench"}) for i in range(n)]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class LoopThread:
    """An event loop on a thread of its own, running the async sides."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SyncSide:
    def __init__(self, url: URL, schema: str) -> None:
        self.name = "sync psycopg2"
        self.store = EventStore(url.set(drivername="postgresql+psycopg2"), schema=schema)
        self.store.init()

    def appends(self, batch: int, count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            self.store.append_to_stream(str(uuid.uuid4()), 0, events(batch))
        return time.perf_counter() - started

    def read_pages(self) -> tuple[int, float]:
        started, start, total = time.perf_counter(), 0, 0
        while True:
            page = self.store.read_all_streams_forward(start, 1000)
            total += len(page)
            if len(page) < 1000:
                return total, time.perf_counter() - started
            start = page[-1].event_number + 1

    def read_lazy(self) -> tuple[int, float]:
        started = time.perf_counter()
        total = sum(1 for _ in self.store.stream_all_forward())
        return total, time.perf_counter() - started

    def latency(self, count: int, interval: float) -> list[float]:
        sub = self.store.subscribe_to_all_streams(
            f"lat-{uuid.uuid4().hex[:6]}", start_from=CURRENT, buffer_size=10
        )
        assert sub.wait_subscribed(30)
        sent: dict[int, float] = {}
        received: dict[int, float] = {}

        def receive() -> None:
            while len(received) < count:
                try:
                    batch = sub.receive(timeout=30)
                except TimeoutError:
                    return
                now = time.perf_counter()
                for event in batch:
                    received[event.data["i"]] = now
                sub.ack(batch)

        receiver = threading.Thread(target=receive)
        receiver.start()
        for i in range(count):
            sent[i] = time.perf_counter()
            self.store.append_to_stream(str(uuid.uuid4()), 0, events(1, i))
            time.sleep(interval)
        receiver.join(60)
        sub.unsubscribe()
        return [received[i] - sent[i] for i in sent if i in received]

    def concurrent(self, appenders: int, each: int) -> tuple[float, list[float]]:
        gate = threading.Barrier(appenders + 1)
        latencies: list[float] = []
        lock = threading.Lock()

        def work() -> None:
            stream = str(uuid.uuid4())
            mine = []
            gate.wait()
            for version in range(each):
                started = time.perf_counter()
                self.store.append_to_stream(stream, version, events(1))
                mine.append(time.perf_counter() - started)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=work) for _ in range(appenders)]
        for thread in threads:
            thread.start()
        gate.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started, latencies

    def close(self) -> None:
        self.store.close()


class AsyncSide:
    def __init__(self, url: URL, schema: str, driver: str, loop: LoopThread) -> None:
        self.name = f"async {driver}"
        self.loop = loop

        async def make() -> AsyncEventStore:
            store = AsyncEventStore(url.set(drivername=f"postgresql+{driver}"), schema=schema)
            await store.init()
            return store

        self.store = loop.run(make())

    def appends(self, batch: int, count: int) -> float:
        async def run() -> float:
            started = time.perf_counter()
            for _ in range(count):
                await self.store.append_to_stream(str(uuid.uuid4()), 0, events(batch))
            return time.perf_counter() - started

        return self.loop.run(run())

    def read_pages(self) -> tuple[int, float]:
        async def run() -> tuple[int, float]:
            started, start, total = time.perf_counter(), 0, 0
            while True:
                page = await self.store.read_all_streams_forward(start, 1000)
                total += len(page)
                if len(page) < 1000:
                    return total, time.perf_counter() - started
                start = page[-1].event_number + 1

        return self.loop.run(run())

    def read_lazy(self) -> tuple[int, float]:
        async def run() -> tuple[int, float]:
            started = time.perf_counter()
            total = 0
            async for _ in self.store.stream_all_forward():
                total += 1
            return total, time.perf_counter() - started

        return self.loop.run(run())

    def latency(self, count: int, interval: float) -> list[float]:
        async def run() -> list[float]:
            sub = await self.store.subscribe_to_all_streams(
                f"lat-{uuid.uuid4().hex[:6]}", start_from=CURRENT, buffer_size=10
            )
            assert await sub.wait_subscribed(30)
            sent: dict[int, float] = {}
            received: dict[int, float] = {}

            async def receive() -> None:
                while len(received) < count:
                    try:
                        batch = await sub.receive(timeout=30)
                    except TimeoutError:
                        return
                    now = time.perf_counter()
                    for event in batch:
                        received[event.data["i"]] = now
                    await sub.ack(batch)

            receiver = asyncio.create_task(receive())
            for i in range(count):
                sent[i] = time.perf_counter()
                await self.store.append_to_stream(str(uuid.uuid4()), 0, events(1, i))
                await asyncio.sleep(interval)
            await asyncio.wait_for(receiver, 60)
            await sub.unsubscribe()
            return [received[i] - sent[i] for i in sent if i in received]

        return self.loop.run(run())

    def concurrent(self, appenders: int, each: int) -> tuple[float, list[float]]:
        async def run() -> tuple[float, list[float]]:
            latencies: list[float] = []

            async def work() -> None:
                stream = str(uuid.uuid4())
                for version in range(each):
                    started = time.perf_counter()
                    await self.store.append_to_stream(stream, version, events(1))
                    latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.gather(*(work() for _ in range(appenders)))
            return time.perf_counter() - started, latencies

        return self.loop.run(run())

    def close(self) -> None:
        self.loop.run(self.store.close())


def rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


def report(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    for name, figure in rows:
        print(f"  {name:<16} {figure}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL or local postgres)")
    parser.add_argument("--quick", action="store_true", help="smoke run (well under a minute)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3 quick, 5)")
    args = parser.parse_args(argv)
    url = make_url(args.url or os.environ.get("DATABASE_URL") or DEFAULT_URL)
    rounds = args.rounds or (3 if args.quick else 5)
    batches = BATCHES_QUICK if args.quick else BATCHES_FULL
    run_id = uuid.uuid4().hex[:8]
    schemas = [f"bench_async_{run_id}_{i}" for i in range(3)]
    print(f"load average at start: {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    loop = LoopThread()
    sides: list[Any] = []
    try:
        sides = [
            SyncSide(url, schemas[0]),
            AsyncSide(url, schemas[1], "asyncpg", loop),
            AsyncSide(url, schemas[2], "psycopg", loop),
        ]
        for side in sides:  # warm up: connections, prepared statements
            side.appends(1, 5)

        for batch, count in batches.items():
            per_side: dict[str, list[float]] = {s.name: [] for s in sides}
            for r in range(rounds):
                for side in rotated(sides, r):
                    per_side[side.name].append(side.appends(batch, count))
            rows = []
            for side in sides:
                seconds = statistics.median(per_side[side.name])
                rows.append(
                    (
                        side.name,
                        f"{batch * count / seconds:9,.0f} events/s  "
                        f"{seconds / count * 1000:7.2f} ms/call",
                    )
                )
            report(f"append, batches of {batch} ({count} calls per round)", rows)

        for label, method in (
            ("read $all, pages of 1000", "read_pages"),
            ("stream_all_forward", "read_lazy"),
        ):
            per_side = {s.name: [] for s in sides}
            totals: dict[str, int] = {}
            for r in range(rounds):
                for side in rotated(sides, r):
                    total, seconds = getattr(side, method)()
                    per_side[side.name].append(seconds)
                    totals[side.name] = total
            report(
                label,
                [
                    (
                        s.name,
                        f"{totals[s.name] / statistics.median(per_side[s.name]):9,.0f} events/s"
                        f"  ({totals[s.name]:,} events)",
                    )
                    for s in sides
                ],
            )

        count = 100 if args.quick else 300
        rows = []
        for side in sides:
            latencies = side.latency(count, 0.005)
            rows.append(
                (
                    side.name,
                    f"p50 {percentile(latencies, 50) * 1000:6.2f} ms  "
                    f"p99 {percentile(latencies, 99) * 1000:6.2f} ms  "
                    f"({len(latencies)}/{count} received)",
                )
            )
        report("subscription latency (append call -> receipt), one event at a time", rows)

        for appenders, each in ((10, 20), (100, 5) if args.quick else (200, 10)):
            rows = []
            for side in sides:
                seconds, latencies = side.concurrent(appenders, each)
                rows.append(
                    (
                        side.name,
                        f"{appenders * each / seconds:7,.0f} appends/s  "
                        f"p50 {percentile(latencies, 50) * 1000:7.2f} ms  "
                        f"p99 {percentile(latencies, 99) * 1000:7.2f} ms",
                    )
                )
            kind = "threads (sync) / tasks on one loop (async)"
            report(f"{appenders} concurrent appenders x {each} appends, {kind}", rows)
    finally:
        for side in sides:
            side.close()
        loop.stop()
        engine = create_engine(url.set(drivername="postgresql+psycopg2"))
        with engine.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
