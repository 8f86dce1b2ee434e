"""Stress test of global_order="sequencer": many writers, rollbacks, long transactions.

Run it as a script (it is not a test; a small run is, in tests/test_sequencer_stress.py)::

    python benchmarks/stress_sequencer.py [--url URL] [--events 1000000] [--writers 8]

Writer processes append batches of 1..10 events until the target is reached:
most in sequencer mode, one in lock mode (both modes on one schema), to their
own streams and to a few shared ones (ANY_VERSION). One transaction in ten
(appended with ``conn=``) is rolled back; one in a hundred is held open for
0.5..3 s before its commit. Three persistent ``$all`` subscriptions, each in a
process of its own, receive everything; each keeps a running digest of the
event ids in the order delivered. At the end ``eventstore check`` must find no
violation, each subscriber must have received positions 1..N in order, and the
three digests must be equal. Figures printed: events, rolled back, held open,
elapsed, events/s, check's summary.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing as mp
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, make_url

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore.commands import check

SHARED_STREAMS = 4


def writer(
    url: str, schema: str, mode: str, index: int, seed: int, quota: int, results: Any
) -> None:
    """Append about ``quota`` committed events; report (committed, rolled back, held)."""
    rng = random.Random(seed)
    store = EventStore(url, schema=schema, global_order=mode, name=f"stress-{index}")
    committed = rolled_back = held = 0
    batch_no = 0
    try:
        while committed < quota:
            batch_no += 1
            n = rng.randint(1, 10)
            events = [EventData("Stress", {"w": index, "b": batch_no, "i": i}) for i in range(n)]
            if rng.random() < 0.3:
                stream = f"shared-{rng.randrange(SHARED_STREAMS)}"
            else:
                stream = f"w{index}-{rng.randrange(20)}"
            roll = rng.random()
            if roll < 0.10:
                with store.engine.connect() as conn:
                    conn.begin()
                    store.append_to_stream(stream, ANY_VERSION, events, conn=conn)
                    conn.rollback()
                rolled_back += n
            elif roll < 0.11:
                with store.engine.connect() as conn:
                    conn.begin()
                    store.append_to_stream(stream, ANY_VERSION, events, conn=conn)
                    time.sleep(rng.uniform(0.5, 3.0))
                    conn.commit()
                held += 1
                committed += n
            else:
                store.append_to_stream(stream, ANY_VERSION, events)
                committed += n
    finally:
        store.close()
    results.put(("writer", index, committed, rolled_back, held))


def subscriber(url: str, schema: str, name: str, stop: Any, results: Any) -> None:
    """Receive $all from the origin; report (count, contiguous, digest, last)."""
    store = EventStore(url, schema=schema, global_order="sequencer", name=f"stress-{name}")
    digest = hashlib.sha256()
    count = last = 0
    contiguous = True
    try:
        sub = store.subscribe_to_all_streams(name, buffer_size=1000, max_size=1000)
        while not (stop.is_set() and stop_target_reached(store, last)):
            try:
                batch = sub.receive(timeout=0.5)
            except TimeoutError:
                continue
            for event in batch:
                if event.event_number != last + 1:
                    contiguous = False
                last = event.event_number
                count += 1
                digest.update(event.event_id.encode())
            sub.ack(batch)
        sub.unsubscribe()
    finally:
        store.close()
    results.put(("subscriber", name, count, contiguous, digest.hexdigest(), last))


def stop_target_reached(store: EventStore, last: int) -> bool:
    return last >= store.stream_info("$all").stream_version


@dataclass
class Result:
    committed: int
    rolled_back: int
    held: int
    elapsed: float
    head: int
    check_ok: bool
    check_lines: list[str]
    subscribers: list[tuple[str, int, bool, str, int]]

    @property
    def ok(self) -> bool:
        digests = {s[3] for s in self.subscribers}
        return (
            self.check_ok
            and self.head == self.committed
            and len(digests) == 1
            and all(s[1] == self.head and s[2] for s in self.subscribers)
        )


def run(url: URL, *, events: int, writers: int, subscribers: int = 3) -> Result:
    schema = f"stress_{uuid.uuid4().hex[:8]}"
    text = url.render_as_string(hide_password=False)
    with EventStore(url, schema=schema, global_order="sequencer") as store:
        store.init()
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    stop = ctx.Event()
    subs = [
        ctx.Process(target=subscriber, args=(text, schema, f"sub-{i}", stop, results))
        for i in range(subscribers)
    ]
    for p in subs:
        p.start()
    time.sleep(1.0)
    quota = max(1, events // writers)
    started = time.monotonic()
    procs = [
        ctx.Process(
            target=writer,
            args=(text, schema, "lock" if i == 0 else "sequencer", i, 1000 + i, quota, results),
        )
        for i in range(writers)
    ]
    for p in procs:
        p.start()
    committed = rolled_back = held = 0
    for _ in procs:
        _, _, c, r, h = results.get(timeout=7200)
        committed, rolled_back, held = committed + c, rolled_back + r, held + h
    elapsed = time.monotonic() - started
    for p in procs:
        p.join(60)
    report = check(url, schema, quiet=True, allow_holes=False)
    stop.set()
    got = []
    for _ in subs:
        _, name, count, contiguous, digest, last = results.get(timeout=600)
        got.append((name, count, contiguous, digest, last))
    for p in subs:
        p.join(60)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    engine.dispose()
    return Result(
        committed, rolled_back, held, elapsed, report.head, report.ok, report.lines(), got
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args(argv)
    url = make_url(args.url)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
    result = run(url, events=args.events, writers=args.writers)
    print(f"writers: {args.writers} (one in lock mode), target {args.events} events")
    print(
        f"committed {result.committed} events in {result.elapsed:.0f} s "
        f"({result.committed / result.elapsed:.0f} events/s); rolled back "
        f"{result.rolled_back} events; {result.held} transactions held open 0.5-3 s"
    )
    for line in result.check_lines:
        print(f"check: {line}")
    for name, count, contiguous, digest, last in result.subscribers:
        print(f"{name}: {count} events, last {last}, contiguous {contiguous}, digest {digest[:16]}")
    print("RESULT:", "PASS" if result.ok else "FAIL")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
