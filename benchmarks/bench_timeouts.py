"""What call timeouts cost: single-append latency with and without a timeout.

Run it as a script (it is not a test)::

    python benchmarks/bench_timeouts.py [--url URL] [--appends N] [--rounds N]

The server is ``--url``, else ``DATABASE_URL``, else
``postgresql://postgres@127.0.0.1:5432/postgres``. For each way a call can
reach the database, two stores on the same schema are compared, appends
interleaved one by one so that a shared machine's noise falls on both:

- BASELINE: ``timeout=None`` -- the store sends no timeout statement at all;
- timed: ``timeout=15`` (the default) -- PostgreSQL's statement_timeout.

Paths: the store's own engine (the setting is kept on its pooled connections:
no extra round trip once set), a caller's Engine (set and put back around the
call: two), and ``conn=`` inside the caller's transaction (set and put back
within the transaction: two). Figures are medians of per-round medians, in
microseconds; the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _timed(append: Callable[[], None]) -> float:
    start = time.perf_counter()
    append()
    return time.perf_counter() - start


def _path_appenders(url: str, schema: str, driver: str, timeout: float | None, engine: Engine):
    event = [EventData("T", {"amount": 1})]
    own = EventStore(
        url.replace("postgresql://", f"postgresql+{driver}://"), schema=schema, timeout=timeout
    )
    shared = EventStore(engine, schema=schema, timeout=timeout)

    def via_own() -> None:
        own.append_to_stream(f"own-{timeout}", ANY_VERSION, event)

    def via_engine() -> None:
        shared.append_to_stream(f"engine-{timeout}", ANY_VERSION, event)

    def via_conn() -> None:
        with engine.begin() as conn:
            shared.append_to_stream(f"conn-{timeout}", ANY_VERSION, event, conn=conn)

    return [own, shared], {
        "own engine": via_own,
        "caller's Engine": via_engine,
        "conn= transaction": via_conn,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--driver", default="psycopg2", choices=["psycopg2", "psycopg"])
    args = parser.parse_args()
    url = args.url
    schema = f"bench_timeouts_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url.replace("postgresql://", f"postgresql+{args.driver}://"))
    setup = EventStore(engine, schema=schema)
    setup.init()
    stores_a, baseline = _path_appenders(url, schema, args.driver, None, engine)
    stores_b, timed = _path_appenders(url, schema, args.driver, 15.0, engine)
    try:
        print(f"single appends, driver {args.driver}, {args.rounds} rounds x {args.appends}")
        print(f"{'path':<20} {'BASELINE us':>12} {'timeout us':>11} {'ratio':>6}  (min-max)")
        for path in baseline:
            for f in (baseline[path], timed[path]):
                f()  # warm: pooled connections, prepared plans, the timeout set once
            base_rounds, timed_rounds = [], []
            for _ in range(args.rounds):
                b, t = [], []
                for i in range(args.appends):
                    # The one going first swaps at every append.
                    if i % 2:
                        b.append(_timed(baseline[path]))
                        t.append(_timed(timed[path]))
                    else:
                        t.append(_timed(timed[path]))
                        b.append(_timed(baseline[path]))
                base_rounds.append(statistics.median(b))
                timed_rounds.append(statistics.median(t))
            ratios = [t / b for b, t in zip(base_rounds, timed_rounds, strict=True)]
            print(
                f"{path:<20} {statistics.median(base_rounds) * 1e6:>12.0f}"
                f" {statistics.median(timed_rounds) * 1e6:>11.0f}"
                f" {statistics.median(ratios):>6.2f}  ({min(ratios):.2f}-{max(ratios):.2f})"
            )
    finally:
        for store in [*stores_a, *stores_b, setup]:
            store.close()
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.commit()
        engine.dispose()


if __name__ == "__main__":
    main()
