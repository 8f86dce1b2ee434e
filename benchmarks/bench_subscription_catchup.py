"""Subscription catch-up, memory and live lag at scale.

Run it as a script (it is not a test)::

    python benchmarks/bench_subscription_catchup.py [--url URL] [--quick] [--events N]
        [--driver psycopg2|psycopg]

Server selection as in ``bench_storage.py``. It stores N events (1,000,000 by
default; 50,000 with --quick) once, then measures, each beside a baseline
measured in the same run:

- memory: a subscription from the origin with a sparse selector (1 event in
  1,000) whose first delivered event is never acked, over all N events: the
  process RSS and the subscription's bookkeeping entries before and after.
  The bookkeeping must stay bounded by what is queued and in flight.
- catch-up, big buffers (buffer_size=1000, max_size=1000): events/s handled
  and acknowledged, against the raw ``$all`` page-read rate (the store's read
  statement on a bare psycopg2 connection, pages of 1,000, json.loads per
  row). Target >= 0.8x.
- catch-up, defaults (buffer_size=1, checkpoint_threshold=1) in handler mode,
  over min(N, 100,000) events. Target >= 10x the 800-1,600 ev/s it had
  before (so >= 16,000 ev/s).
- live lag: writers appending ~1,000 events/s for 10 s (3 s with --quick)
  while a handler subscription keeps up; the lag (append committed -> handler
  called) p50/p99/max. Target: under a second.

Printed as PASS/BELOW; the exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import resource
import statistics
import threading
import time
import uuid
from typing import Any

import psycopg2
from bench_storage import _psycopg2_dsn, make_events, server
from sqlalchemy import text
from sqlalchemy.engine import URL

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, CURRENT, EventData, EventStore
from sqlalchemy_eventstore.storage.sql import Statements

DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}
OLD_DEFAULTS_RATE = 1_600.0  # ev/s, the best figure before (BENCHMARKS.md)


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def wait_checkpoint(store: EventStore, name: str, target: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
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
            if last_seen is not None and last_seen >= target:
                return
            time.sleep(0.005)
    raise RuntimeError(f"{name}: checkpoint did not reach {target}")


def bookkeeping(store: EventStore, name: str) -> tuple[int, int, int]:
    """(pending+done entries, queued events, last received) of a subscription."""
    runner: Any = store._runner  # internal: the figure this benchmark is about
    state = runner._persistent[(ALL_STREAM, name)].state
    return state.bookkeeping_size, len(state.queue), state.last_received


def memory_run(store: EventStore, total: int) -> dict[str, float]:
    """One subscriber holds event 1 and never acks it; another acks every later
    selected event: the checkpoint stays at 0 while all events are read."""
    name = "bench-sparse"
    gc.collect()
    before = rss_mb()
    options: dict[str, Any] = dict(
        concurrency_limit=2, max_size=1000, selector=lambda e: e.event_number % 1000 == 1
    )
    stuck = store.subscribe_to_all_streams(name, buffer_size=1, **options)
    assert stuck.wait_subscribed(30)
    first = stuck.receive(timeout=30)
    assert first[0].event_number == 1  # never acked: the checkpoint stays at 0
    busy = store.subscribe_to_all_streams(name, buffer_size=10, **options)
    entries_start = bookkeeping(store, name)[0]
    started = time.perf_counter()
    deadline = time.monotonic() + 1200
    peak, peak_entries = before, entries_start
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            busy.ack(busy.receive(timeout=0.2))
        peak = max(peak, rss_mb())
        entries, _queued, last = bookkeeping(store, name)
        peak_entries = max(peak_entries, entries)
        if last >= total:
            break
    elapsed = time.perf_counter() - started
    gc.collect()
    after = rss_mb()
    entries, _queued, last = bookkeeping(store, name)
    runner: Any = store._runner
    checkpoint = runner._persistent[(ALL_STREAM, name)].state.checkpoint
    stuck.unsubscribe()
    busy.unsubscribe()
    return {
        "rss_before": before,
        "rss_after": after,
        "rss_peak": peak,
        "entries_start": entries_start,
        "entries_end": entries,
        "entries_peak": peak_entries,
        "checkpoint": checkpoint,
        "read": last,
        "seconds": elapsed,
    }


def catch_up(store: EventStore, total: int, name: str, **options: Any) -> float:
    """events/s from subscribe (origin) until the last event is handled and acked."""
    done = threading.Event()

    def handler(events: list[Any]) -> None:
        if events[-1].event_number >= total:
            done.set()

    started = time.perf_counter()
    sub = store.subscribe_to_all_streams(name, handler=handler, **options)
    if not done.wait(1200):
        raise RuntimeError("catch-up did not finish")
    wait_checkpoint(store, name, total)
    elapsed = time.perf_counter() - started
    sub.unsubscribe()
    return total / elapsed


def live_lag(url: URL, driver: str, seconds: float, rate: int) -> list[float]:
    """ms from append committed to handler called, writers at ~``rate`` ev/s."""
    schema = f"bench_lag_{uuid.uuid4().hex[:8]}"
    store = EventStore(url.set(drivername=DRIVERS[driver]), schema=schema)
    store.init()
    sent: dict[str, float] = {}
    lags: list[float] = []
    lock = threading.Lock()

    def handler(events: list[Any]) -> None:
        now = time.perf_counter()
        with lock:
            for e in events:
                stamp = sent.pop(e.event_id, None)
                if stamp is not None:
                    lags.append((now - stamp) * 1000)

    sub = store.subscribe_to_all_streams(
        "bench-lag", handler=handler, buffer_size=50, start_from=CURRENT
    )
    assert sub.wait_subscribed(30)
    stop = time.monotonic() + seconds
    writers = 4
    per_writer = rate / writers / 10  # events per append, 10 appends/s per writer

    def write(index: int) -> None:
        n = 0
        next_at = time.monotonic()
        while time.monotonic() < stop:
            count = max(1, round(per_writer))
            events = [
                EventData("Tick", {"w": index, "n": n + i}, event_id=str(uuid.uuid4()))
                for i in range(count)
            ]
            store.append_to_stream(f"lag-{index}", ANY_VERSION, events)
            committed = time.perf_counter()
            with lock:
                for e in events:
                    sent[str(e.event_id)] = committed
            n += count
            next_at += 0.1
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 30
    while sent and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.unsubscribe()
    store.close()
    cleanup = EventStore(url, schema=schema)
    with cleanup.engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.commit()
    cleanup.close()
    return lags


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def raw_read_rate(dsn: str, schema: str) -> float:
    """The raw page-read rate of ``$all``: the store's own read statement on a
    bare psycopg2 connection, pages of 1,000, json.loads per row -- what any
    reader pays before a subscription does anything."""
    statement = Statements(schema, "bytea").read_forward
    loads = json.loads
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()
    started = time.perf_counter()
    count, start = 0, 1
    while True:
        cur.execute(statement, {"stream_uuid": "$all", "start": start, "count": 1000})
        rows = cur.fetchall()
        if not rows or rows[0][2] is None:
            break  # no event in range
        page = [
            (r[2], loads(bytes(r[7])), None if r[8] is None else loads(bytes(r[8]))) for r in rows
        ]
        count += len(page)
        start = page[-1][0] + 1
        if len(page) < 1000:
            break
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL or local postgres)")
    parser.add_argument("--quick", action="store_true", help="smoke run (about a minute)")
    parser.add_argument("--events", type=int, help="events to store (default 1,000,000)")
    parser.add_argument("--driver", choices=sorted(DRIVERS), default="psycopg2")
    parser.add_argument("--skip", default="", help="comma-separated: memory,tuned,defaults,lag")
    parser.add_argument("--reuse", help="an existing schema holding the events (kept afterwards)")
    args = parser.parse_args(argv)
    total = args.events or (50_000 if args.quick else 1_000_000)
    skip = set(filter(None, args.skip.split(",")))
    with server(args.url) as url:
        run(url, args.driver, total, skip, 3.0 if args.quick else 10.0, args.reuse)
    return 0


def run(
    url: URL, driver: str, total: int, skip: set[str], lag_seconds: float, reuse: str | None
) -> None:
    schema = reuse or f"bench_cu_{uuid.uuid4().hex[:8]}"
    store = EventStore(url.set(drivername=DRIVERS[driver]), schema=schema)
    store.init()
    rows: list[tuple[str, str, str, str, str, str]] = []
    try:
        if reuse:
            total = store.stream_info(ALL_STREAM).stream_version
            print(f"reusing {schema}: {total:,} events", flush=True)
        else:
            print(f"storing {total:,} events ...", flush=True)
        for start in range(0, 0 if reuse else total, 1000):
            store.append_to_stream(
                f"cu-{start // 1000 % 50}",
                ANY_VERSION,
                make_events(min(1000, total - start), start),
            )
        with store.engine.connect() as conn:  # fresh statistics, as autovacuum would make
            for table in ("events", "stream_events", "streams", "subscriptions"):
                conn.execute(text(f'ANALYZE "{schema}".{table}'))
            conn.commit()
        raw = statistics.median(raw_read_rate(_psycopg2_dsn(url), schema) for _ in range(2))
        print(f"raw $all read rate: {raw:,.0f} ev/s", flush=True)

        if "memory" not in skip:
            print("memory: sparse selector, one unacked event ...", flush=True)
            m = memory_run(store, total)
            print(
                f"  RSS {m['rss_before']:.1f} MB before, {m['rss_after']:.1f} MB after "
                f"(peak {m['rss_peak']:.1f} MB); bookkeeping entries {m['entries_start']:.0f} "
                f"at the start, {m['entries_end']:.0f} (peak {m['entries_peak']:.0f}) after "
                f"reading {m['read']:,.0f} events in {m['seconds']:.1f} s; checkpoint "
                f"{m['checkpoint']:.0f}",
                flush=True,
            )
            grown = m["rss_after"] - m["rss_before"]
            rows.append(
                (
                    f"memory over {total:,} (sparse, unacked)",
                    f"+{grown:.1f} MB RSS, peak {m['entries_peak']:.0f} entries",
                    "-",
                    "-",
                    "entries <= 2,000",
                    "PASS" if m["entries_peak"] <= 2000 else "BELOW",
                )
            )
        if "tuned" not in skip:
            print("catch-up, buffer_size=1000 ...", flush=True)
            tuned = catch_up(store, total, "bench-tuned", buffer_size=1000, max_size=1000)
            rows.append(
                (
                    f"catch-up {total:,} (buffer_size=1000)",
                    f"{tuned:,.0f} ev/s",
                    f"{raw:,.0f} ev/s",
                    f"{tuned / raw:.2f}x",
                    ">= 0.8x",
                    "PASS" if tuned / raw >= 0.8 else "BELOW",
                )
            )
        if "defaults" not in skip:
            small = min(total, 100_000)
            print(f"catch-up, defaults, {small:,} events ...", flush=True)
            rate = catch_up(store, small, "bench-defaults")
            rows.append(
                (
                    f"catch-up {small:,} (defaults, handler)",
                    f"{rate:,.0f} ev/s",
                    f"{OLD_DEFAULTS_RATE:,.0f} ev/s (before)",
                    f"{rate / OLD_DEFAULTS_RATE:.1f}x",
                    ">= 10x",
                    "PASS" if rate / OLD_DEFAULTS_RATE >= 10 else "BELOW",
                )
            )
        if "lag" not in skip:
            print(f"live lag: ~1,000 ev/s for {lag_seconds:.0f} s ...", flush=True)
            lags = live_lag(url, driver, lag_seconds, 1000)
            rows.append(
                (
                    f"live lag, ~1,000 ev/s ({len(lags):,} events)",
                    f"p50 {percentile(lags, 50):.1f} ms, p99 {percentile(lags, 99):.1f} ms, "
                    f"max {max(lags):.1f} ms",
                    "-",
                    "-",
                    "max < 1 s",
                    "PASS" if max(lags) < 1000 else "BELOW",
                )
            )
    finally:
        store.close()
        cleanup = EventStore(url, schema=schema)
        with cleanup.engine.connect() as conn:
            if reuse:
                conn.execute(text(f'DELETE FROM "{schema}".subscriptions'))
            else:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.commit()
        cleanup.close()
    print()
    header = ("case", "library", "baseline", "ratio", "target", "result")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(6)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
