"""A small run of benchmarks/stress_sequencer.py: writers in both modes, rollbacks,
transactions held open, three $all subscribers that must agree on the order."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.engine import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from stress_sequencer import run


def test_small_stress_run_is_gap_free_and_seen_alike(database_url: URL) -> None:
    result = run(database_url, events=3000, writers=4)
    assert result.check_ok, result.check_lines
    assert result.head == result.committed >= 3000
    assert result.rolled_back > 0
    assert len(result.subscribers) == 3
    for _name, count, contiguous, _digest, last in result.subscribers:
        assert (count, contiguous, last) == (result.head, True, result.head)
    assert len({s[3] for s in result.subscribers}) == 1
    assert result.ok
