"""A persistent subscription's options, validated once where the user passes them."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from .. import _validation as check
from .._types import CURRENT, ORIGIN, RecordedEvent

__all__ = ["FROM_CURRENT", "PersistentOptions", "persistent_options"]

#: ``start_from`` before it is resolved: the stream's version when subscribing.
FROM_CURRENT = -1


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


def persistent_options(
    *,
    handler: Any,
    start_from: Any,
    selector: Any,
    mapper: Any,
    concurrency_limit: Any,
    buffer_size: Any,
    max_size: Any,
    checkpoint_threshold: Any,
    checkpoint_after: Any,
    partition_by: Any,
    transient: Any,
) -> PersistentOptions:
    """Check every option (naming the bad one) and bundle them.

    ``start_from`` is ``FROM_CURRENT`` for CURRENT: the caller resolves it.
    """
    for label, value in (
        ("handler", handler),
        ("selector", selector),
        ("mapper", mapper),
        ("partition_by", partition_by),
    ):
        check.check_callable(value, label)
    for label, number in (
        ("concurrency_limit", concurrency_limit),
        ("buffer_size", buffer_size),
        ("max_size", max_size),
        ("checkpoint_threshold", checkpoint_threshold),
    ):
        check.check_int(number, label, minimum=1)
    if checkpoint_after is not None:
        if isinstance(checkpoint_after, bool) or not isinstance(checkpoint_after, (int, float)):
            raise TypeError("checkpoint_after must be a number of seconds or None")
        if checkpoint_after <= 0:
            raise ValueError("checkpoint_after must be > 0 seconds")
    if not isinstance(transient, bool):
        raise TypeError("transient must be a bool")
    return PersistentOptions(
        start_from=_start_from(start_from),
        selector=selector,
        mapper=mapper,
        concurrency_limit=concurrency_limit,
        buffer_size=buffer_size,
        max_size=max_size,
        checkpoint_threshold=checkpoint_threshold,
        checkpoint_after=None if checkpoint_after is None else float(checkpoint_after),
        partition_by=partition_by,
        transient=transient,
    )
