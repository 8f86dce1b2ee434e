"""Subscription benchmark: end-to-end latency and catch-up throughput.

Run it as a script (it is not a test)::

    python benchmarks/bench_subscriptions.py [--url URL] [--quick] [--driver psycopg2|psycopg]

Server selection as in ``bench_storage.py`` (``--url``, ``DATABASE_URL``, the
local default, else an embedded PostgreSQL). Figures, each beside a baseline
measured in the same run against the same server:

- latency: append committed -> handler called, over single-event appends, for a
  persistent ``$all`` subscription with a handler. Baseline: what a bare
  psycopg2 program does for the same -- a LISTEN connection woken by the
  trigger's NOTIFY, which then SELECTs the new event (hand-written SQL).
- catch-up: a subscription from the origin over stored events, events/s
  delivered to a handler AND acknowledged (the checkpoint reaches the last
  event). Baseline: the raw read rate of ``$all`` (hand-written SELECT, pages of
  1,000, json.loads per row), as in bench_storage.py.

Targets: latency p50 < 5 ms and p99 < 25 ms; catch-up >= 0.5x the raw read
rate. Printed as PASS/BELOW; the exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import json
import select
import statistics
import threading
import time
import uuid
from typing import Any

import psycopg2
from bench_storage import Baseline, _psycopg2_dsn, make_events, server
from sqlalchemy import text
from sqlalchemy.engine import URL

from sqlalchemy_eventstore import ANY_VERSION, CURRENT, EventStore

DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def library_latency(store: EventStore, n: int) -> list[float]:
    """ms from append returned (committed) to the handler being called."""
    arrived = threading.Event()
    stamp: list[float] = [0.0]

    def handler(events: list[Any]) -> None:
        stamp[0] = time.perf_counter()
        arrived.set()

    sub = store.subscribe_to_all_streams("bench-latency", handler=handler, start_from=CURRENT)
    assert sub.wait_subscribed(10)
    store.append_to_stream("warmup", ANY_VERSION, make_events(1))
    assert arrived.wait(10)
    samples = []
    for i in range(n):
        arrived.clear()
        store.append_to_stream(f"latency-{i % 10}", ANY_VERSION, make_events(1, i))
        sent = time.perf_counter()
        if not arrived.wait(10):
            raise RuntimeError("an event was not delivered within 10 s")
        samples.append(max(0.0, stamp[0] - sent) * 1000)
    sub.unsubscribe()
    return samples


class RawListener:
    """The baseline subscriber: LISTEN on a bare connection, SELECT the event."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.cur = self.conn.cursor()
        channel = f'"{schema}.events"'
        self.cur.execute(f"LISTEN {channel}")
        self.read = f"""
SELECT se.stream_version, e.event_id, e.event_type, e.data, e.metadata, e.created_at
FROM "{schema}".stream_events se JOIN "{schema}".events e ON e.event_id = se.event_id
WHERE se.stream_id = 0 AND se.stream_version BETWEEN %s AND %s ORDER BY se.stream_version"""

    def wait_event(self, timeout: float) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if select.select([self.conn], [], [], 0.5)[0]:
                self.conn.poll()
                for note in self.conn.notifies:
                    uuid_, _id, first, last = note.payload.rsplit(",", 3)
                    if uuid_ == "$all":
                        self.cur.execute(self.read, (int(first), int(last)))
                        rows = self.cur.fetchall()
                        [json.loads(bytes(r[3])) for r in rows]
                        self.conn.notifies.clear()
                        return time.perf_counter()
                self.conn.notifies.clear()
        raise RuntimeError("baseline: no notification within the timeout")

    def close(self) -> None:
        self.conn.close()


def baseline_latency(baseline: Baseline, listener: RawListener, n: int) -> list[float]:
    samples = []
    versions: dict[str, int] = {}
    result: list[float] = [0.0]
    for i in range(n):
        stream = f"raw-latency-{i % 10}"
        waiter = threading.Thread(target=lambda: result.__setitem__(0, listener.wait_event(10)))
        waiter.start()
        baseline.append_to_stream(stream, versions.get(stream, 0), make_events(1, i))
        sent = time.perf_counter()
        versions[stream] = versions.get(stream, 0) + 1
        waiter.join(10)
        samples.append(max(0.0, result[0] - sent) * 1000)
    return samples


def catch_up(store: EventStore, total: int, name: str, **options: Any) -> float:
    """events/s from subscribe (origin) until the last event is handled and acked."""
    done = threading.Event()

    def handler(events: list[Any]) -> None:
        if events[-1].event_number >= total:
            done.set()

    started = time.perf_counter()
    sub = store.subscribe_to_all_streams(name, handler=handler, **options)
    if not done.wait(600):
        raise RuntimeError("catch-up did not finish")
    # "Delivered and acknowledged": wait for the handler's auto-ack of the last batch.
    deadline = time.monotonic() + 30
    with store.engine.connect() as conn:
        while time.monotonic() < deadline:
            last_seen = conn.execute(
                text(
                    f'SELECT last_seen FROM "{store.schema}".subscriptions '
                    "WHERE subscription_name = :n"
                ),
                {"n": name},
            ).scalar()
            conn.rollback()
            if last_seen == total:
                break
            time.sleep(0.005)
    elapsed = time.perf_counter() - started
    sub.unsubscribe()
    return total / elapsed


def raw_read_rate(baseline: Baseline) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in baseline.iterate("$all"))
    return count / (time.perf_counter() - started)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL or local postgres)")
    parser.add_argument("--quick", action="store_true", help="smoke run (well under a minute)")
    parser.add_argument("--driver", choices=sorted(DRIVERS), default="psycopg2")
    args = parser.parse_args(argv)
    appends = 200 if args.quick else 2000
    stored = 10_000 if args.quick else 100_000
    small = 2_000 if args.quick else 10_000

    with server(args.url) as url:
        run(url, args.driver, appends, stored, small)
    return 0


def run(url: URL, driver: str, appends: int, stored: int, small: int) -> None:
    tag = uuid.uuid4().hex[:8]
    latency_schema, catchup_schema, raw_schema = (
        f"bench_sub_{tag}_lat",
        f"bench_sub_{tag}_cu",
        f"bench_sub_{tag}_raw",
    )
    store = EventStore(url.set(drivername=DRIVERS[driver]), schema=latency_schema)
    catchup = EventStore(url.set(drivername=DRIVERS[driver]), schema=catchup_schema)
    raw_store = EventStore(url, schema=raw_schema)
    dsn = _psycopg2_dsn(url)
    try:
        for s in (store, catchup, raw_store):
            s.init()
        print(f"latency: {appends} single-event appends ...", flush=True)
        lib = library_latency(store, appends)
        baseline = Baseline(dsn, raw_schema, catchup_schema)
        listener = RawListener(dsn, raw_schema)
        base = baseline_latency(baseline, listener, appends)
        listener.close()

        print(f"catch-up: storing {stored:,} events ...", flush=True)
        for start in range(0, stored, 1000):
            catchup.append_to_stream(
                f"cu-{start // 1000 % 50}", ANY_VERSION, make_events(1000, start)
            )
        raw_rates = [raw_read_rate(baseline) for _ in range(3)]
        tuned = catch_up(catchup, stored, "bench-catchup", buffer_size=1000, max_size=1000)
        raw_rates.append(raw_read_rate(baseline))
        small_store_rate = catch_up_defaults(catchup, small)
        baseline.close()
        raw = statistics.median(raw_rates)

        rows = [
            (
                "latency p50",
                f"{percentile(lib, 50):.2f} ms",
                f"{percentile(base, 50):.2f} ms",
                f"{percentile(lib, 50) / max(percentile(base, 50), 1e-9):.2f}x",
                "< 5 ms",
                verdict(percentile(lib, 50) < 5),
            ),
            (
                "latency p99",
                f"{percentile(lib, 99):.2f} ms",
                f"{percentile(base, 99):.2f} ms",
                f"{percentile(lib, 99) / max(percentile(base, 99), 1e-9):.2f}x",
                "< 25 ms",
                verdict(percentile(lib, 99) < 25),
            ),
            (
                "latency mean",
                f"{statistics.mean(lib):.2f} ms",
                f"{statistics.mean(base):.2f} ms",
                f"{statistics.mean(lib) / max(statistics.mean(base), 1e-9):.2f}x",
                "-",
                "-",
            ),
            (
                f"catch-up {stored:,} (buffer_size=1000)",
                f"{tuned:,.0f} ev/s",
                f"{raw:,.0f} ev/s",
                f"{tuned / raw:.2f}x",
                ">= 0.5x",
                verdict(tuned / raw >= 0.5),
            ),
            (
                f"catch-up {small:,} (defaults: buffer_size=1)",
                f"{small_store_rate:,.0f} ev/s",
                f"{raw:,.0f} ev/s",
                f"{small_store_rate / raw:.2f}x",
                "-",
                "-",
            ),
        ]
        print()
        header = ("case", "library", "baseline", "ratio", "target", "result")
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
        line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
        print(line)
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        print()
        print("latency baseline: bare psycopg2 LISTEN woken by the NOTIFY, then one SELECT.")
        print("catch-up baseline: raw $all read rate (hand-written SELECT, pages of 1,000).")
    finally:
        for s in (store, catchup, raw_store):
            schema = s.schema
            s.close()
            with raw_store.engine.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                conn.commit()
        raw_store.engine.dispose()


def catch_up_defaults(store: EventStore, total: int) -> float:
    """Catch-up with every option at its default (buffer_size=1: one event in
    flight, an ack per event) over the first ``total`` events."""
    done = threading.Event()

    def handler(events: list[Any]) -> None:
        if events[-1].event_number >= total:
            done.set()

    started = time.perf_counter()
    sub = store.subscribe_to_all_streams("bench-defaults", handler=handler)
    if not done.wait(600):
        raise RuntimeError("catch-up did not finish")
    elapsed = time.perf_counter() - started
    sub.unsubscribe()
    return total / elapsed


if __name__ == "__main__":
    raise SystemExit(main())
