"""Mailbox-subscriber helpers shared by the concurrency and locking tests."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from .subscription_helpers import WAIT


def numbers(batch: list[Any]) -> list[int]:
    return [e.event_number for e in batch]


def next_numbers(sub) -> list[int]:
    return numbers(sub.receive(timeout=WAIT))


def collect(sub, count: int) -> list[int]:
    """Event numbers of the batches ``sub`` receives until it has ``count``."""
    got: list[int] = []
    while len(got) < count:
        got.extend(next_numbers(sub))
    return got


def assert_quiet(*subs, wait: float = 0.4) -> None:
    """The reference's refute_receive: nothing more arrives at any of ``subs``."""
    time.sleep(wait)
    for sub in subs:
        with pytest.raises(TimeoutError):
            sub.receive(timeout=0)


def checkpoint(admin_engine: Engine, schema: str, name: str) -> int | None:
    with admin_engine.connect() as conn:
        return conn.execute(
            text(f'SELECT last_seen FROM "{schema}".subscriptions WHERE subscription_name = :n'),
            {"n": name},
        ).scalar()
