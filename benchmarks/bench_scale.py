"""Scale benchmark: appends, page latency and catch-up as ``$all`` grows to 1,000,000 events.

Run it as a script (it is not a test)::

    python benchmarks/bench_scale.py [--url URL] [--quick] [--driver psycopg2|psycopg]
                                     [--no-foreign-keys] [--sizes 10000,100000,1000000]

Server selection as in ``bench_storage.py``. One store (its own schema, dropped
at the end) grows through each size in turn, filled by the library's own
appends (batches of 1,000). At each size:

- append rate: 200 single-event appends and 20 appends of 100, events/s,
  alternating append by append with the same appends to a 10,000-event store;
- page latency of ``read_all_streams_forward(start, 1000)`` at the first,
  middle and last page of ``$all``, and of ``read_all_streams_backward`` from
  the end, with NO statistics (the tables' statistics are removed -- autovacuum
  is off for them -- as on a freshly loaded store) and again after ANALYZE;
  beside each, the hand-written keyset page (bare psycopg2) at the same place;
- at the largest size, the catch-up rate of a persistent ``$all`` subscription
  from the origin (``buffer_size=1000``, and with every option at its default
  over the first 10,000 events), next to the rate of reading ``$all`` through
  ``stream_all_forward`` in the same run.

Each page of the growing store is read 9 times, alternating with the same
page of a 10,000-event store kept beside it (and the keyset page), so that
load from other processes falls on both; the ratio of the medians is the
"within 1.5x of a 10,000-event store" target, printed as PASS/BELOW, never
enforced.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from functools import partial
from typing import Any

import psycopg2
from bench_storage import (
    DRIVERS,
    PAGE,
    Baseline,
    _psycopg2_dsn,
    bench_appends,
    drop_schemas,
    machine,
    make_events,
    server,
    table,
)
from sqlalchemy import text

from sqlalchemy_eventstore import EventStore

TABLES = ("streams", "stream_events", "events")


class Grower:
    """Appends streams of 1,000 events, one append each, until ``$all`` holds ``total``."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.total = 0
        self.chunk = make_events(PAGE)

    def grow_to(self, total: int) -> float:
        """Append up to ``total`` events; the load rate in events/s."""
        t0 = time.perf_counter()
        added = 0
        while self.total < total:
            n = min(PAGE, total - self.total)
            self.store.append_to_stream(f"load-{self.total}", 0, self.chunk[:n])
            self.total += n
            added += n
        return added / max(time.perf_counter() - t0, 1e-9)


def append_rates(store: EventStore, ref: EventStore) -> dict[int, tuple[float, float]]:
    """events/s of appends of 1 and of 100 events: (growing store, 10k store).

    Interleaved append by append with the 10,000-event store, so the ratio
    shows what the store's size costs, whatever else loads the machine.
    """
    rates = {}
    for batch, appends in ((1, 200), (100, 20)):
        sides = {"big": store.append_to_stream, "ref": ref.append_to_stream}
        (case, *_) = bench_appends(sides, batch, appends, 1)
        rates[batch] = (case.median("big"), case.median("ref"))
    return rates


def set_statistics(dsn: str, schemas: list[str], *, analyze: bool) -> str:
    """ANALYZE the tables, or remove their statistics (needs a superuser)."""
    states = [_set_statistics(dsn, schema, analyze=analyze) for schema in schemas]
    return states[0]


def _set_statistics(dsn: str, schema: str, *, analyze: bool) -> str:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        if analyze:
            for t in TABLES:
                cur.execute(f'ANALYZE "{schema}".{t}')
            state = "after ANALYZE"
        else:
            try:
                cur.execute(
                    "DELETE FROM pg_statistic WHERE starelid IN "
                    "(SELECT oid FROM pg_class WHERE relnamespace = %s::regnamespace)",
                    (schema,),
                )
                cur.execute(
                    "UPDATE pg_class SET reltuples = -1, relpages = 0, relallvisible = 0 "
                    "WHERE relnamespace = %s::regnamespace",
                    (schema,),
                )
                state = "no statistics"
            except psycopg2.Error:
                state = "statistics as left (not a superuser)"
    conn.close()
    return state


def page_latencies(
    store: EventStore, ref: EventStore, baseline: Baseline, rounds: int = 9
) -> dict[str, tuple[float, float, float]]:
    """(library ms, library ms on the 10k reference store, keyset ms) per page.

    The three reads of a place alternate round by round, so that a burst of
    load from elsewhere falls on all three alike; each figure is a median.
    """
    total = store.stream_info("$all").stream_version
    ref_total = ref.stream_info("$all").stream_version

    def forward(st: EventStore, last: int) -> Any:
        return st.read_all_streams_forward(last + 1, PAGE)

    def backward(st: EventStore, last: int) -> Any:
        return st.read_all_streams_backward(-1, PAGE)

    places = {
        "first": (forward, 0.0),
        "middle": (forward, 0.5),
        "last": (forward, 1.0),
        "last, backward": (backward, 1.0),
    }
    result = {}
    for name, (read, at) in places.items():
        last, ref_last = (
            max(0, int(at * total) - (PAGE if at == 1 else 0)),
            max(0, int(at * ref_total) - (PAGE if at == 1 else 0)),
        )
        samples: dict[str, list[float]] = {"lib": [], "ref": [], "raw": []}
        calls = {
            "lib": partial(read, store, last),
            "ref": partial(read, ref, ref_last),
            "raw": partial(baseline.read_page, last, PAGE) if "backward" not in name else None,
        }
        for r in range(rounds):
            order = list(calls)[r % 3 :] + list(calls)[: r % 3]
            for key in order:
                fn = calls[key]
                if fn is None:
                    continue
                t0 = time.perf_counter()
                fn()
                samples[key].append((time.perf_counter() - t0) * 1000)
        lib, ref_ms = statistics.median(samples["lib"]), statistics.median(samples["ref"])
        raw = statistics.median(samples["raw"]) if samples["raw"] else float("nan")
        result[name] = (lib, ref_ms, raw)
    return result


def catch_up(store: EventStore, upto: int, name: str, **options: Any) -> float:
    """events/s from subscribing (origin) until event ``upto`` is handled and acked."""
    done = threading.Event()

    def handler(events: list[Any]) -> None:
        if events[-1].event_number >= upto:
            done.set()

    started = time.perf_counter()
    sub = store.subscribe_to_all_streams(name, handler=handler, **options)
    try:
        if not done.wait(1800):
            raise RuntimeError("catch-up did not finish")
        deadline = time.monotonic() + 60
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
                if last_seen is not None and last_seen >= upto:
                    break
                time.sleep(0.005)
        return upto / (time.perf_counter() - started)
    finally:
        sub.unsubscribe()


def read_rate(store: EventStore) -> float:
    t0 = time.perf_counter()
    n = sum(1 for _ in store.stream_all_forward(read_batch_size=PAGE))
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL or local postgres)")
    parser.add_argument("--quick", action="store_true", help="sizes 10k and 50k (about a minute)")
    parser.add_argument("--sizes", help="comma-separated sizes of $all")
    parser.add_argument("--driver", choices=tuple(DRIVERS), default="psycopg2")
    parser.add_argument("--no-foreign-keys", action="store_true", help="the no-FKs variant")
    parser.add_argument("--no-catch-up", action="store_true", help="skip the catch-up figures")
    args = parser.parse_args(argv)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [10_000, 50_000] if args.quick else [10_000, 100_000, 1_000_000]
    defaults_upto = 2_000 if args.quick else 10_000

    began = time.perf_counter()
    tag = uuid.uuid4().hex[:8]
    schema, ref_schema = f"bench_scale_{tag}", f"bench_scale_ref_{tag}"
    with server(args.url) as url:
        dsn = _psycopg2_dsn(url)
        print(f"machine: {machine(dsn)}; library driver {args.driver}", flush=True)
        store_url = url.set(drivername=DRIVERS[args.driver])
        fks = not args.no_foreign_keys
        store = EventStore(store_url, schema=schema, foreign_keys=fks, name="bench-scale")
        # A 10,000-event store beside the growing one: each page of the big
        # store is timed alternately with the same page of this one.
        ref = EventStore(store_url, schema=ref_schema, foreign_keys=fks, name="bench-ref")
        baseline = None
        try:
            for st in (store, ref):
                st.init()
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            with conn.cursor() as cur:
                for name in (schema, ref_schema):
                    for t in TABLES:
                        cur.execute(f'ALTER TABLE "{name}".{t} SET (autovacuum_enabled = false)')
            conn.close()
            Grower(ref).grow_to(10_000)
            baseline = Baseline(dsn, schema, schema)
            grower = Grower(store)
            appends: list[list[str]] = []
            pages: list[list[str]] = []
            for size in sizes:
                print(f"growing $all to {size:,} events ...", flush=True)
                load = grower.grow_to(size)
                rates = append_rates(store, ref)
                appends.append(
                    [f"{size:,}", f"{load:,.0f}"]
                    + [f"{big:,.0f} ({big / small:.2f}x)" for big, small in rates.values()]
                )
                total = store.stream_info("$all").stream_version
                for analyze in (False, True):
                    state = set_statistics(dsn, [schema, ref_schema], analyze=analyze)
                    for where, (lib, ref_ms, raw) in page_latencies(store, ref, baseline).items():
                        ratio = lib / ref_ms
                        verdict = "PASS" if ratio <= 1.5 else "BELOW"
                        pages.append(
                            [f"{total:,}", state, where, f"{lib:.1f} ms", f"{ref_ms:.1f} ms",
                             f"{ratio:.2f}x", verdict, "-" if raw != raw else f"{raw:.1f} ms"]
                        )  # fmt: skip
            print()
            print(
                table(
                    ["events in $all", "load (batches of 1,000)",
                     "append, batch 1 (vs 10k store)", "append, batch 100 (vs 10k store)"],
                    appends,
                )
            )  # fmt: skip
            print()
            print(
                table(
                    ["events in $all", "statistics", "page of 1,000", "library",
                     "same page, 10k store", "ratio", "target <= 1.5x", "keyset SQL"],
                    pages,
                )
            )  # fmt: skip
            if not args.no_catch_up:
                total = store.stream_info("$all").stream_version
                print(f"\nreading all {total:,} events with stream_all_forward ...", flush=True)
                raw_rate = read_rate(store)
                print(f"catching up {total:,} events, buffer_size=1000 ...", flush=True)
                big = catch_up(store, total, "bench-catch-up-1000", buffer_size=1000)
                print(f"catching up {defaults_upto:,} events, default options ...", flush=True)
                small = catch_up(store, defaults_upto, "bench-catch-up-defaults")
                print()
                print(
                    table(
                        ["catch-up of $all", "events", "events/s", "vs read rate"],
                        [
                            ["stream_all_forward (the read rate)", f"{total:,}",
                             f"{raw_rate:,.0f}", "1.00x"],
                            ["subscription, buffer_size=1000", f"{total:,}", f"{big:,.0f}",
                             f"{big / raw_rate:.2f}x"],
                            ["subscription, default options", f"{defaults_upto:,}",
                             f"{small:,.0f}", f"{small / raw_rate:.2f}x"],
                        ],
                    )
                )  # fmt: skip
        finally:
            if baseline is not None:
                baseline.close()
            store.close()
            ref.close()
            drop_schemas(dsn, [schema, ref_schema])
    print(f"\ntotal time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
