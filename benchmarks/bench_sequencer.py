"""global_order="sequencer" against "lock", side by side in one run.

Run it as a script (it is not a test)::

    python benchmarks/bench_sequencer.py [--url URL] [--quick] [--seconds S]
        [--rounds N] [--sections 1,2,3,4,5]

Server selection as in ``bench_storage.py``. Every figure is measured for both
modes on the same server in the same run, each in a fresh schema:

1. throughput: 16 writer *processes* (no GIL between them), each appending to a
   stream of its own for S seconds, batches of 1 and of 10: events/s, and the
   ratio sequencer / lock (target >= 3x); the modes alternate over --rounds
   windows and the medians are compared. Beside them, the harness's ceiling:
   sequencer mode with writers that do no numbering at all and one separate
   process that numbers everything (what the machine and a Python client
   reach when numbering costs the writers nothing);
2. a ``conn=`` transaction held open 5 s: 8 writer processes append
   meanwhile; their p99 append latency in windows with the open transaction
   minus their p99 in windows without it (target: < 5 ms added in sequencer
   mode; lock mode adds the 5 s), beside the same difference for windows in
   which nothing is held (the noise floor of this machine at that moment);
3. subscriber latency: a persistent ``$all`` subscription with a handler,
   from just *before* each single-event append call to the handler (target
   p99 < 25 ms): alone, while 4 writer processes append flat out (which
   saturates a small machine's CPU: the share of CPU time busy is printed), and
   while they append at a steady 50 appends/s each; the modes alternate over
   --rounds and each mode's samples are pooled;
4. what NOTIFY costs: the sequencer throughput of (1) with the stream row's
   NOTIFY at every append's commit (the reference's trigger without this
   package's WHEN clause) against the batched notification;
5. what the queue costs lock mode: a single writer's append latency with the
   trigger that numbers waiting events (an empty-queue probe) and without it.

Targets print PASS/BELOW; the exit status is 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import threading
import time
import uuid
from typing import Any

from bench_storage import make_events, server
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from sqlalchemy_eventstore import ANY_VERSION, CURRENT, EventStore

MODES = ("lock", "sequencer")
#: Throughput only: sequencer mode with the writers doing no numbering at all
#: and one separate process numbering -- what this harness reaches when
#: numbering costs the writers nothing (the ceiling of the machine and client).
CEILING = "ceiling"


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def new_schema(url: URL, mode: str) -> str:
    schema = f"bench_seq_{mode}_{uuid.uuid4().hex[:8]}"
    with EventStore(url, schema=schema, global_order=mode) as store:
        store.init()
    return schema


def drop_schema(url: URL, schema: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


# -- writer processes ------------------------------------------------------------


def writer(
    url: str,
    schema: str,
    mode: str,
    stream: str,
    batch: int,
    start: Any,
    stop: Any,
    results: Any,
    pace: float = 0.0,
) -> None:
    """Append batches until ``stop`` (``pace`` appends/s, 0: flat out); report
    (events, [latency ms, stamped])."""
    order = "sequencer" if mode == CEILING else mode
    store = EventStore(url, schema=schema, global_order=order, name=f"bench-{stream}")
    if mode == CEILING:
        # No numbering from this writer at all: a separate process does it all.
        store._sequencer.help_soon = lambda: None  # type: ignore[method-assign,union-attr]
    events = make_events(batch)
    store.append_to_stream(stream, ANY_VERSION, events)  # connect, warm up
    start.wait()
    done = 0
    samples: list[tuple[float, float]] = []
    due = time.perf_counter()
    while not stop.is_set():
        if pace:
            due += 1 / pace
            time.sleep(max(0.0, due - time.perf_counter()))
        began = time.perf_counter()
        store.append_to_stream(stream, ANY_VERSION, events)
        ended = time.perf_counter()
        samples.append((time.time(), (ended - began) * 1000))
        done += batch
    store.close()
    results.put((done, samples))


class Writers:
    """N writer processes on distinct streams, released together."""

    def __init__(
        self, url: URL, schema: str, mode: str, n: int, batch: int, pace: float = 0.0
    ) -> None:
        ctx = mp.get_context("spawn")
        self.start = ctx.Barrier(n + 1)
        self.stop = ctx.Event()
        self.results: Any = ctx.Queue()
        text = url.render_as_string(hide_password=False)
        self.procs = [
            ctx.Process(
                target=writer,
                args=(
                    text,
                    schema,
                    mode,
                    f"w-{i}",
                    batch,
                    self.start,
                    self.stop,
                    self.results,
                    pace,
                ),
            )
            for i in range(n)
        ]
        for p in self.procs:
            p.start()

    def go(self) -> float:
        self.start.wait()
        return time.time()

    def finish(self) -> tuple[int, list[tuple[float, float]]]:
        self.stop.set()
        total, samples = 0, []
        for _ in self.procs:
            done, got = self.results.get(timeout=120)
            total += done
            samples += got
        for p in self.procs:
            p.join(30)
        return total, samples


def numberer(url: str, schema: str, stop: Any) -> None:
    """The ceiling's only sequencer: number whatever waits, round after round."""
    store = EventStore(url, schema=schema, global_order="sequencer", name="bench-numberer")
    while not stop.is_set():
        if store.advance_all_stream() < 0:
            time.sleep(0.0005)
    store.close()


def throughput(url: URL, mode: str, batch: int, seconds: float, *, loud: bool = False) -> float:
    schema = new_schema(url, "sequencer" if mode == CEILING else mode)
    if loud:
        restore_reference_notification(url, schema)
    try:
        writers = Writers(url, schema, mode, 16, batch)
        helper = None
        if mode == CEILING:
            ctx = mp.get_context("spawn")
            text = url.render_as_string(hide_password=False)
            helper = ctx.Process(target=numberer, args=(text, schema, writers.stop))
            helper.start()
        began = writers.go()
        time.sleep(seconds)
        total, samples = writers.finish()
        if helper is not None:
            helper.join(30)
        # Count only appends that completed within the window.
        in_window = sum(batch for stamp, _ in samples if stamp <= began + seconds)
        del total
        return in_window / seconds
    finally:
        drop_schema(url, schema)


def restore_reference_notification(url: URL, schema: str) -> None:
    """The reference's notification trigger (no WHEN): every append notifies."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(
            "CREATE OR REPLACE TRIGGER event_notification AFTER INSERT OR UPDATE ON "
            f'"{schema}".streams '
            f'FOR EACH ROW EXECUTE PROCEDURE "{schema}".notify_events()'
        )
    engine.dispose()


# -- an open transaction ---------------------------------------------------------------


def held_transaction(url: URL, mode: str, hold: float, rounds: int) -> tuple[float, float, float]:
    """8 writers' p99 append latency (ms): in windows with nothing held, in windows
    with a ``conn=`` transaction open ``hold`` s, and -- the noise floor -- in
    windows marked "control" while nothing is held. Windows alternate ``rounds``
    times, so load from other processes falls on all of them alike; the holder
    is connected and warmed up before the first window."""
    schema = new_schema(url, mode)
    try:
        holder = EventStore(url, schema=schema, global_order=mode)
        holder.append_to_stream("held", ANY_VERSION, make_events(1))
        writers = Writers(url, schema, mode, 8, 1)
        writers.go()
        time.sleep(0.5)
        windows: list[tuple[str, float, float]] = []
        for _ in range(rounds):
            for kind in ("free", "held", "control"):
                opened = time.time()
                if kind == "held":
                    with holder.engine.connect() as conn:
                        conn.begin()
                        holder.append_to_stream("held", ANY_VERSION, make_events(1), conn=conn)
                        time.sleep(hold)
                        conn.commit()
                    time.sleep(0.5)  # lock mode: the appends its commit released
                else:
                    time.sleep(hold + 0.5)
                windows.append((kind, opened, time.time()))
        _, samples = writers.finish()
        holder.close()

        def p99(kind: str) -> float:
            return percentile(
                [
                    ms
                    for stamp, ms in samples
                    for name, start, end in windows
                    if name == kind and start <= stamp < end
                ],
                99,
            )

        return p99("free"), p99("held"), p99("control")
    finally:
        drop_schema(url, schema)


# -- subscriber latency ------------------------------------------------------------------


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of every CPU so far (Linux; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def subscriber_latency(
    url: URL, mode: str, n: int, load: int, pace: float = 0.0
) -> tuple[list[float], float | None, float]:
    """``n`` probes' latencies (ms) with ``load`` writers at ``pace`` appends/s
    each (0: flat out); the share of CPU time busy meanwhile and the writers'
    events/s (what the subscriber had to keep up with besides the probes)."""
    schema = new_schema(url, mode)
    try:
        store = EventStore(url, schema=schema, global_order=mode)
        arrived = threading.Event()
        stamp = [0.0]
        wanted = [""]

        def handler(events: list[Any]) -> None:
            if any(e.stream_uuid == wanted[0] for e in events):
                stamp[0] = time.perf_counter()
                arrived.set()

        sub = store.subscribe_to_all_streams(
            "bench-latency", handler=handler, start_from=CURRENT, buffer_size=1000
        )
        assert sub.wait_subscribed(10)
        writers = Writers(url, schema, mode, load, 1, pace) if load else None
        if writers is not None:
            writers.go()
            time.sleep(0.5)  # past the writers' start
        before = cpu_times()
        began = time.time()
        samples = []
        for i in range(n):
            arrived.clear()
            wanted[0] = f"probe-{i}"
            sent = time.perf_counter()
            store.append_to_stream(wanted[0], ANY_VERSION, make_events(1, i))
            if not arrived.wait(30):
                print(f"   ({mode}: probe {i} not delivered within 30 s; stopping)")
                break
            samples.append((stamp[0] - sent) * 1000)
            time.sleep(0.01)
        after = cpu_times()
        ended = time.time()
        rate = 0.0
        if writers is not None:
            _, appended = writers.finish()
            rate = sum(1 for stamp, _ in appended if began <= stamp < ended) / (ended - began)
        sub.unsubscribe()
        store.close()
        busy = None
        if before is not None and after is not None and after[1] > before[1]:
            busy = (after[0] - before[0]) / (after[1] - before[1])
        return samples, busy, rate
    finally:
        drop_schema(url, schema)


# -- the trigger's cost in lock mode --------------------------------------------------------


def lock_append_latency(url: URL, n: int, *, trigger: bool) -> float:
    schema = new_schema(url, "lock")
    try:
        if not trigger:
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP TRIGGER eventstore_link_waiting ON "{schema}".streams')
            engine.dispose()
        store = EventStore(url, schema=schema)
        events = make_events(1)
        for _ in range(20):
            store.append_to_stream("warm", ANY_VERSION, events)
        samples = []
        for _ in range(n):
            began = time.perf_counter()
            store.append_to_stream("one", ANY_VERSION, events)
            samples.append((time.perf_counter() - began) * 1000)
        store.close()
        return statistics.median(samples)
    finally:
        drop_schema(url, schema)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "BELOW"


def section_throughput(url: URL, seconds: float, rounds: int) -> None:
    print(f"\n1. 16 writer processes, distinct streams, {seconds:.0f} s windows (events/s)")
    print(f"   {'batch':>5}  {'lock':>9}  {'sequencer':>9}  ratio")
    kinds = (*MODES, CEILING)
    ceilings: list[str] = []
    for batch in (1, 10):
        # Rounds rotate the modes, so that load from other processes falls
        # on all alike; medians per mode.
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for r in range(rounds):
            for kind in kinds[r % 3 :] + kinds[: r % 3]:
                rates[kind].append(throughput(url, kind, batch, seconds))
        lock, seq = statistics.median(rates["lock"]), statistics.median(rates["sequencer"])
        top = statistics.median(rates[CEILING])
        ratio = seq / lock
        pairs = zip(rates["lock"], rates["sequencer"], strict=True)
        print(
            f"   {batch:>5}  {lock:>9.0f}  {seq:>9.0f}  "
            f"{ratio:.2f}x  {verdict(ratio >= 3)} (>= 3x)   rounds (lock/sequencer): "
            + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in pairs),
            flush=True,
        )
        ceilings.append(
            f"   {batch:>5}  {top:>9.0f} ev/s  {top / lock:.2f}x lock, "
            f"{seq / top:.0%} of it reached by the sequencer"
        )
    print(
        "   the harness's ceiling: sequencer mode, writers that number nothing, "
        "one process numbering"
    )
    print("\n".join(ceilings), flush=True)


def section_held(url: URL, hold: float, rounds: int) -> None:
    print(
        f"\n2. a conn= transaction open {hold:.0f} s, {rounds} rounds of windows; "
        "8 writers' p99 append latency (ms)"
    )
    for mode in MODES:
        free, held, control = held_transaction(url, mode, hold, rounds)
        added, noise = held - free, control - free
        target = f"{verdict(added < 5)} (< 5 ms added)" if mode == "sequencer" else ""
        print(
            f"   {mode:>9}: free {free:8.1f}  held {held:8.1f}  added {added:+8.1f}  "
            f"(noise floor: nothing held {control:8.1f}, {noise:+.1f})  {target}",
            flush=True,
        )


def section_subscriber(url: URL, probes: int, rounds: int) -> None:
    print(
        f"\n3. $all subscriber latency, append call -> handler (ms), {probes} probes "
        f"x {rounds} rounds per mode"
    )
    loads = ((0, 0.0, "alone"), (4, 0.0, "4 writers flat out"), (4, 50.0, "4 writers 50/s"))
    for load, pace, label in loads:
        pooled: dict[str, list[float]] = {mode: [] for mode in MODES}
        busy: dict[str, list[float]] = {mode: [] for mode in MODES}
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        for r in range(rounds):
            for mode in MODES[r % 2 :] + MODES[: r % 2]:
                samples, share, rate = subscriber_latency(url, mode, probes, load, pace)
                pooled[mode] += samples
                rates[mode].append(rate)
                if share is not None:
                    busy[mode].append(share)
        for mode in MODES:
            p50, p99 = percentile(pooled[mode], 50), percentile(pooled[mode], 99)
            cpu = f"  CPU busy {statistics.mean(busy[mode]):4.0%}" if busy[mode] else ""
            rate = f"  writers {statistics.mean(rates[mode]):5.0f} ev/s" if load else ""
            print(
                f"   {mode:>9}, {label:>18}: p50 {p50:6.1f}  p99 {p99:6.1f}  "
                f"{verdict(p99 < 25)} (p99 < 25){cpu}{rate}",
                flush=True,
            )


def section_notify(url: URL, seconds: float) -> None:
    print("\n4. NOTIFY at every append's commit vs per sequencer batch (16 writers, batch 1)")
    quiet = throughput(url, "sequencer", 1, seconds)
    loud = throughput(url, "sequencer", 1, seconds, loud=True)
    print(
        f"   per batch {quiet:8.0f} ev/s   per append {loud:8.0f} ev/s   ratio {quiet / loud:.2f}x",
        flush=True,
    )


def section_trigger(url: URL, n: int) -> None:
    print("\n5. lock mode, one writer: median append latency (ms)")
    with_trigger = lock_append_latency(url, n, trigger=True)
    without = lock_append_latency(url, n, trigger=False)
    print(
        f"   with the waiting-events trigger {with_trigger:.3f}  without {without:.3f}  "
        f"cost {with_trigger - without:+.3f} ms",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("--quick", action="store_true", help="short windows (about a minute)")
    parser.add_argument("--seconds", type=float, default=None, help="throughput window")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of windows (default 3)")
    parser.add_argument(
        "--sections", default="1,2,3,4,5", help="which figures, by number (default: all)"
    )
    args = parser.parse_args(argv)
    sections = {int(n) for n in args.sections.split(",")}
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    hold = 2.0 if args.quick else 5.0
    probes = 50 if args.quick else 200
    rounds = args.rounds or (1 if args.quick else 3)
    with server(args.url) as url:
        print(f"server: {url.render_as_string(hide_password=True)}", flush=True)
        if 1 in sections:
            section_throughput(url, seconds, rounds)
        if 2 in sections:
            section_held(url, hold, rounds)
        if 3 in sections:
            section_subscriber(url, probes, rounds)
        if 4 in sections:
            section_notify(url, seconds)
        if 5 in sections:
            section_trigger(url, 200 if args.quick else 1000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
