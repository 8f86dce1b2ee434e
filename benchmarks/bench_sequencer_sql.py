"""The database side of ``global_order``: the store's own SQL driven by pgbench.

Run it as a script (it is not a test)::

    python benchmarks/bench_sequencer_sql.py [--url URL] [--seconds S] [--rounds N]
                                             [--clients C] [--pgbench PATH]

``bench_sequencer.py`` measures 16 Python writer processes. On a small machine
they spend the CPU the database would need, so its ratio says as much about
the client as about the two designs. Here the same statements -- the store's
append statement, rendered from its ``Statements`` for each mode, and in
sequencer mode the call every writer makes after its commit
(``CALL <schema>.eventstore_help()``) -- are sent by pgbench, a C client, as
prepared statements, C clients on streams of their own (``w-<client id>``),
batches of 1 and of 10:

- ``lock``: the append (the ``$all`` row locked until its commit);
- ``sequencer``: the append, then the help call, as the store's worker does;
- ``sequencer, one numberer``: the append alone, and one more connection that
  numbers what waits, round after round (what the writers would reach if
  numbering cost them nothing).

Each figure is the median of ``--rounds`` windows, the variants rotating.
pgbench is PostgreSQL's (``--pgbench``, else on ``PATH``, else the Debian
server's). Figures print; the exit status is 0 whatever they are.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading

from bench_sequencer import drop_schema, new_schema, numberer
from bench_storage import server
from sqlalchemy.engine import URL

from sqlalchemy_eventstore import EventStore

VARIANTS = ("lock", "sequencer", "sequencer, one numberer")


def find_pgbench(explicit: str | None) -> str:
    found = explicit or shutil.which("pgbench")
    if found is None:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
        found = candidates[-1] if candidates else None
    if found is None:
        sys.exit("pgbench not found: install PostgreSQL's client tools or pass --pgbench")
    return found


def append_sql(store: EventStore, batch: int) -> str:
    """The store's append statement with pgbench values for its parameters."""
    sql = store._sql.append  # the very text the store sends (pyformat parameters)
    payload = "'\\x7b2261223a317d'::bytea" if store.column_data_type == "bytea" else "'{}'::jsonb"
    n = f"generate_series(1, {batch})"
    values = {
        "stream_uuid": "('w-' || CAST(:client_id AS text))",
        "count": f"CAST({batch} AS bigint)",
        "expected": "CAST(-1 AS bigint)",  # any version
        "event_ids": f"ARRAY(SELECT gen_random_uuid() FROM {n})",
        "event_types": f"ARRAY(SELECT CAST('E' AS text) FROM {n})",
        "causation_ids": f"array_fill(CAST(NULL AS uuid), ARRAY[{batch}])",
        "correlation_ids": f"array_fill(CAST(NULL AS uuid), ARRAY[{batch}])",
        "data": f"ARRAY(SELECT {payload} FROM {n})",
        "metadata": f"array_fill(CAST(NULL AS {store.column_data_type}), ARRAY[{batch}])",
    }
    text = re.sub(r"%\((\w+)\)s", lambda m: values[m.group(1)], sql)
    text = re.sub(r"--[^\n]*", "", text).replace("%%", "%")  # comments off: one line
    return " ".join(text.split()) + ";\n"


def libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def run_pgbench(
    pgbench: str, url: URL, variant: str, batch: int, clients: int, seconds: float
) -> float:
    """Events per second of one window of ``variant``."""
    mode = "lock" if variant == "lock" else "sequencer"
    schema = new_schema(url, mode)
    store = EventStore(url, schema=schema, global_order=mode)
    script = append_sql(store, batch)
    if variant == "sequencer":
        script += f'CALL "{schema}".eventstore_help();\n'
    stop = threading.Event()
    numbering = None
    if variant == "sequencer, one numberer":
        text = url.render_as_string(hide_password=False)
        numbering = threading.Thread(target=numberer, args=(text, schema, stop))
        numbering.start()
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(script)
        jobs = min(clients, os.cpu_count() or 1)
        command = [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", str(jobs)]
        result = subprocess.run(
            [*command, "-T", str(int(seconds)), "-f", f.name, libpq_url(url)],
            capture_output=True,
            text=True,
            check=False,
        )
        os.unlink(f.name)
        if result.returncode != 0:
            sys.exit(f"pgbench failed ({variant}):\n{result.stderr[-2000:]}")
        found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
        if found is None:
            sys.exit(f"pgbench printed no tps ({variant}):\n{result.stdout[-2000:]}")
        stop.set()
        if numbering is not None:
            numbering.join(30)
        # Everything appended is numbered, gap-free (a check, not a figure).
        if mode == "sequencer":
            store.advance_all_stream()
        with store.engine.connect() as conn:
            head, count = conn.exec_driver_sql(
                f'SELECT max(stream_version), count(*) FROM "{schema}".stream_events '
                "WHERE stream_id = 0"
            ).one()
        if head != count:
            sys.exit(f"{variant}: $all has holes ({count} rows, head {head})")
        return float(found.group(1)) * batch
    finally:
        stop.set()
        if numbering is not None:
            numbering.join(30)
        store.close()
        drop_schema(url, schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pgbench", default=None)
    args = parser.parse_args(argv)
    pgbench = find_pgbench(args.pgbench)
    with server(args.url) as url:
        print(f"server: {url.render_as_string(hide_password=True)}; pgbench: {pgbench}")
        print(
            f"{args.clients} pgbench clients, distinct streams, {args.seconds:.0f} s windows, "
            f"median of {args.rounds} (events/s)"
        )
        print(f"   {'batch':>5}  " + "  ".join(f"{v:>23}" for v in VARIANTS))
        for batch in (1, 10):
            rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in range(args.rounds):
                for variant in VARIANTS[r % 3 :] + VARIANTS[: r % 3]:
                    rates[variant].append(
                        run_pgbench(pgbench, url, variant, batch, args.clients, args.seconds)
                    )
            medians = {v: statistics.median(rates[v]) for v in VARIANTS}
            lock = medians["lock"]
            print(
                f"   {batch:>5}  "
                + "  ".join(f"{medians[v]:>15.0f} ({medians[v] / lock:4.2f}x)" for v in VARIANTS),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
