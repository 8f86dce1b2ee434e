"""A persistent subscription's options: their one list, defaults and checks.

``OPTIONS`` is the single source of the option names and defaults:
``EventStore.subscribe_to_stream`` spells them out for its users (SPEC.md),
``subscribe_to_all_streams`` and the Flask integration pass ``**options``
through, and :func:`persistent_options` validates whatever arrives here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .. import _validation as check
from .._types import CURRENT, ORIGIN, RecordedEvent

__all__ = ["FROM_CURRENT", "OPTIONS", "PersistentOptions", "persistent_options"]

#: ``start_from`` before it is resolved: the stream's version when subscribing.
FROM_CURRENT = -1

#: Every option of a persistent subscription with its default.
OPTIONS: dict[str, Any] = {
    "handler": None,
    "start_from": ORIGIN,
    "selector": None,
    "mapper": None,
    "concurrency_limit": 1,
    "buffer_size": 1,
    "max_size": 1000,
    "checkpoint_threshold": 1,
    "checkpoint_after": None,
    "partition_by": None,
    "transient": False,
    "max_retries": None,
}


@dataclass(frozen=True)
class PersistentOptions:
    start_from: int
    selector: Callable[[RecordedEvent], Any] | None
    mapper: Callable[[RecordedEvent], Any] | None
    concurrency_limit: int
    buffer_size: int
    max_size: int
    checkpoint_threshold: int
    checkpoint_after: float | None
    partition_by: Callable[[RecordedEvent], Hashable] | None
    transient: bool
    max_retries: int | None = None


def _start_from(value: Any) -> int:
    if value is ORIGIN:
        return 0
    if value is CURRENT:
        return FROM_CURRENT
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"start_from must be ORIGIN, CURRENT or an int, got {value!r}")
    if value < 0:
        raise ValueError(f"start_from must be >= 0, got {value}")
    return value


def persistent_options(**given: Any) -> PersistentOptions:
    """Check every option (naming the bad one) and bundle them; options left
    out take their default from ``OPTIONS``, unknown ones raise TypeError.

    ``start_from`` is ``FROM_CURRENT`` for CURRENT: the caller resolves it.
    """
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown subscription option(s): {', '.join(unknown)}")
    o = {**OPTIONS, **given}
    for label in ("handler", "selector", "mapper", "partition_by"):
        check.check_callable(o[label], label)
    for label in ("concurrency_limit", "buffer_size", "max_size", "checkpoint_threshold"):
        check.check_int(o[label], label, minimum=1)
    checkpoint_after = o["checkpoint_after"]
    if checkpoint_after is not None:
        if isinstance(checkpoint_after, bool) or not isinstance(checkpoint_after, (int, float)):
            raise TypeError("checkpoint_after must be a number of seconds or None")
        if checkpoint_after <= 0:
            raise ValueError("checkpoint_after must be > 0 seconds")
    if not isinstance(o["transient"], bool):
        raise TypeError("transient must be a bool")
    if o["max_retries"] is not None:
        check.check_int(o["max_retries"], "max_retries", minimum=0)
    return PersistentOptions(
        start_from=_start_from(o["start_from"]),
        selector=o["selector"],
        mapper=o["mapper"],
        concurrency_limit=o["concurrency_limit"],
        buffer_size=o["buffer_size"],
        max_size=o["max_size"],
        checkpoint_threshold=o["checkpoint_threshold"],
        checkpoint_after=None if checkpoint_after is None else float(checkpoint_after),
        partition_by=o["partition_by"],
        transient=o["transient"],
        max_retries=o["max_retries"],
    )
