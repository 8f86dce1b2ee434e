"""The store's own counters: plain integers, bumped on the hot paths.

No lock: an increment is a couple of bytecodes next to a database round trip
(see benchmarks/bench_counters.py). Read through ``EventStore.stats()``.
"""

from __future__ import annotations

__all__ = ["StoreCounters"]


class StoreCounters:
    """Appends and events appended by one store (sync or async)."""

    __slots__ = ("appends", "events_appended")

    def __init__(self) -> None:
        self.appends = 0
        self.events_appended = 0
