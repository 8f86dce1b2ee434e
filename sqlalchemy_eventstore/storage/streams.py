"""Deleting streams, softly or for good."""

from __future__ import annotations

from typing import Any

from .._types import ExpectedVersion
from ..errors import StreamDeletedError, StreamNotFoundError, WrongExpectedVersionError
from .sql import Statements
from .steps import Op, Query

__all__ = ["delete_stream"]


def _expected_param(expected: ExpectedVersion) -> int:
    return expected if isinstance(expected, int) else -1


def _raise_failure(stream_uuid: str, expected: ExpectedVersion, row: Any) -> None:
    _, current_id, current_version, deleted = row
    if current_id is None:
        raise StreamNotFoundError(f"stream {stream_uuid!r} not found")
    if deleted:
        raise StreamDeletedError(f"stream {stream_uuid!r} is deleted")
    raise WrongExpectedVersionError(
        f"stream {stream_uuid!r} is at version {current_version}, expected {expected}"
    )


def delete_stream(
    sql: Statements,
    stream_uuid: str,
    expected: ExpectedVersion,
    *,
    hard: bool,
) -> Op[None]:
    """Soft delete in one statement; hard delete inside the given transaction.

    A hard delete turns ``eventstore.enable_hard_deletes`` on for the current
    transaction only, and puts the previous value back afterwards, so a
    caller's transaction (``conn=``) keeps refusing stray DELETEs.
    """
    params = {"stream_uuid": stream_uuid, "expected": _expected_param(expected)}
    if not hard:
        (row,) = yield Query(sql.soft_delete, params)
    else:
        if sql.drop_waiting is not None:
            locked = yield Query(sql.lock_stream, params)
            if locked:
                yield Query(sql.drop_waiting, {"stream_id": locked[0][0]})
        ((previous,),) = yield Query(sql.current_hard_deletes)
        yield Query(sql.enable_hard_deletes, {"value": "on"})
        # Put back after success only: a failed statement aborts the
        # transaction, which accepts nothing more, and whose rollback undoes
        # the transaction-local setting anyway.
        (row,) = yield Query(sql.hard_delete, params)
        yield Query(sql.enable_hard_deletes, {"value": previous or ""})
    if row[0] is None:
        _raise_failure(stream_uuid, expected, row)
