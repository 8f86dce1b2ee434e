"""Recording, reading and deleting snapshots."""

from __future__ import annotations

from typing import Any

from .._types import SnapshotData
from ..errors import SnapshotNotFoundError
from ..serializers import Serializer
from .reader import utc
from .sql import Statements
from .steps import Op, Query

__all__ = ["delete_snapshot", "read_snapshot", "record_snapshot"]


def record_snapshot(sql: Statements, snapshot: SnapshotData, data: Any, metadata: Any) -> Op[None]:
    """Insert or replace the snapshot of ``snapshot.source_uuid``.

    ``data`` and ``metadata`` are the snapshot's, already serialized.
    """
    yield Query(
        sql.record_snapshot,
        {
            "source_uuid": snapshot.source_uuid,
            "source_version": snapshot.source_version,
            "source_type": snapshot.source_type,
            "data": data,
            "metadata": metadata,
            "created_at": snapshot.created_at,
        },
    )


def read_snapshot(sql: Statements, serializer: Serializer, source_uuid: str) -> Op[SnapshotData]:
    rows = yield Query(sql.read_snapshot, {"source_uuid": source_uuid})
    if not rows:
        raise SnapshotNotFoundError(f"no snapshot of {source_uuid!r}")
    row = rows[0]
    return SnapshotData(
        source_uuid=row[0],
        source_version=row[1],
        source_type=row[2],
        data=serializer.deserialize(row[3], row[2]),
        metadata=None if row[4] is None else serializer.deserialize(row[4], None),
        created_at=utc(row[5]),
    )


def delete_snapshot(sql: Statements, source_uuid: str) -> Op[None]:
    yield Query(sql.delete_snapshot, {"source_uuid": source_uuid})
