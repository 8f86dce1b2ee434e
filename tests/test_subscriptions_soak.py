"""Soak: 4 writer threads, 3 subscriptions (one with 4 partitioned subscribers),
50,000 events. Every subscriber gets every event it should, each partition in
order, and duplicates only as the at-least-once redelivery of a forced failure.
Marked ``soak`` (deselect with ``-m "not soak"``); it takes well under a minute."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from sqlalchemy_eventstore import ANY_VERSION, EventData

WRITERS = 4
STREAMS_PER_WRITER = 10
EVENTS = 50_000
BATCH = 50
WAIT = 120.0


@pytest.mark.soak
def test_soak(make_store, start_gate):
    store = make_store()
    lock = threading.Lock()
    all_numbers: list[int] = []
    stream_numbers: list[int] = []
    partitioned: dict[str, list[int]] = defaultdict(list)  # stream -> stream versions seen
    failed_once = threading.Event()

    def on_all(events):
        with lock:
            all_numbers.extend(e.event_number for e in events)

    def on_stream(events):
        # Forced failure: the first batch fails once and must be redelivered.
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("forced failure")
        with lock:
            stream_numbers.extend(e.event_number for e in events)

    def partition_handler():
        # One callable per subscriber: the same handler twice is refused.
        def on_partition(events):
            with lock:
                for e in events:
                    partitioned[e.stream_uuid].append(e.stream_version)

        return on_partition

    store.subscribe_to_all_streams("soak-all", handler=on_all, buffer_size=500, max_size=2000)
    store.subscribe_to_stream("w0-s0", "soak-stream", handler=on_stream, buffer_size=100)
    for _ in range(4):
        store.subscribe_to_all_streams(
            "soak-partitioned",
            handler=partition_handler(),
            concurrency_limit=4,
            buffer_size=100,
            partition_by=lambda e: e.stream_uuid,
        )

    per_writer = EVENTS // WRITERS

    def write(w: int) -> int:
        for i in range(per_writer // BATCH):
            stream = f"w{w}-s{i % STREAMS_PER_WRITER}"
            store.append_to_stream(
                stream, ANY_VERSION, [EventData("Tick", {"w": w, "i": i}) for _ in range(BATCH)]
            )
        return per_writer

    assert start_gate(WRITERS, write) == [per_writer] * WRITERS
    w0_s0_version = store.stream_info("w0-s0").stream_version

    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with lock:
            done = (
                len(set(all_numbers)) == EVENTS
                and len(set(stream_numbers)) == w0_s0_version
                and sum(len(set(v)) for v in partitioned.values()) == EVENTS
            )
        if done:
            break
        time.sleep(0.1)

    with lock:
        assert sorted(all_numbers) == list(range(1, EVENTS + 1))  # each exactly once
        assert failed_once.is_set()
        assert sorted(set(stream_numbers)) == list(range(1, w0_s0_version + 1))
        assert stream_numbers == sorted(stream_numbers)
        assert len(partitioned) == WRITERS * STREAMS_PER_WRITER
        for stream, versions in partitioned.items():
            assert versions == list(range(1, len(versions) + 1)), stream  # in order, no dups
            assert len(versions) == store.stream_info(stream).stream_version
