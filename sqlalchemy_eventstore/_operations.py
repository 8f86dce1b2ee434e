"""The storage calls, I/O-free: arguments checked, the operation to run chosen.

Both :class:`~sqlalchemy_eventstore.EventStore` and
:class:`~sqlalchemy_eventstore.asyncio.AsyncEventStore` turn each storage call
into a :class:`Call` here -- every argument checked (ValueError/TypeError naming
it, before anything is written), the domain refusals that need no database
raised, the call's timeout resolved, and the operation generator of
:mod:`.storage` built -- and then only run it, the one blocking, the other
awaiting. The lazy readers share :func:`next_start`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from . import _validation as check
from ._types import (
    ALL_STREAM,
    ANY_VERSION,
    STREAM_EXISTS,
    Page,
    ParkedEvent,
    RecordedEvent,
    SnapshotData,
    StreamInfo,
)
from .errors import (
    CannotAppendToAllStreamError,
    CannotDeleteAllStreamError,
    HardDeletesNotEnabledError,
)
from .serializers import Serializer
from .storage import appender, parked, reader, snapshots, streams
from .storage.sql import SORT_COLUMNS, Statements
from .storage.steps import Op

__all__ = ["STORE_TIMEOUT", "Call", "Operations", "Timeout", "next_start"]

T = TypeVar("T")


class _StoreTimeout(enum.Enum):
    """The default of every call's ``timeout=``: the store's own timeout."""

    DEFAULT = "the store's timeout"

    def __repr__(self) -> str:
        return "<the store's timeout>"


#: The default of ``timeout=``: "the store's timeout".
STORE_TIMEOUT = _StoreTimeout.DEFAULT
#: A call's ``timeout=``: seconds, None for no limit, or (left out) the store's.
Timeout = float | None | Literal[_StoreTimeout.DEFAULT]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """A checked storage call: its operation, whether it needs a transaction of
    its own (several statements), and its timeout in seconds (None: none)."""

    op: Op[T]
    seconds: float | None
    tx: bool = False


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """A checked read: what :meth:`Operations.read_op` needs for each page."""

    stream_uuid: str
    start_version: int
    forward: bool
    seconds: float | None


def next_start(batch: list[RecordedEvent], size: int, forward: bool) -> int | None:
    """Where a lazy read goes on after ``batch`` (None: it has read everything)."""
    if len(batch) < size:
        return None
    following = batch[-1].event_number + (1 if forward else -1)
    return following if following >= 1 else None


class Operations:
    """Builds each storage call; the stores set the attributes below."""

    _sql: Statements
    schema: str
    serializer: Serializer
    column_data_type: str
    timeout: float | None
    enable_hard_deletes: bool

    def _seconds(self, timeout: Timeout) -> float | None:
        """A call's ``timeout=`` checked, the store's when left out."""
        if timeout is STORE_TIMEOUT:
            return self.timeout
        return check.check_timeout(timeout)

    # -- writing -----------------------------------------------------------

    def _append_call(
        self, stream_uuid: Any, expected_version: Any, events: Any, timeout: Timeout
    ) -> Call[int]:
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(expected_version)
        seconds = self._seconds(timeout)
        prepared = check.prepare_events(events, self.serializer)
        if stream_uuid == ALL_STREAM:
            raise CannotAppendToAllStreamError("cannot append to the $all stream")
        return Call(appender.append(self._sql, stream_uuid, expected, prepared), seconds)

    def _link_call(
        self, stream_uuid: Any, expected_version: Any, events_or_event_ids: Any, timeout: Timeout
    ) -> Call[int]:
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(expected_version)
        seconds = self._seconds(timeout)
        event_ids = check.event_ids_to_link(events_or_event_ids)
        if stream_uuid == ALL_STREAM:
            raise CannotAppendToAllStreamError("cannot link events to the $all stream")
        return Call(appender.link(self._sql, stream_uuid, expected, event_ids), seconds)

    def _delete_call(
        self, stream_uuid: Any, expected_version: Any, hard: Any, timeout: Timeout
    ) -> Call[None]:
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(
            expected_version, allowed=(ANY_VERSION, STREAM_EXISTS)
        )
        if not isinstance(hard, bool):
            raise TypeError("hard must be a bool")
        seconds = self._seconds(timeout)
        if stream_uuid == ALL_STREAM:
            raise CannotDeleteAllStreamError("cannot delete the $all stream")
        if hard and not self.enable_hard_deletes:
            raise HardDeletesNotEnabledError(
                "hard deletes are disabled: create the store with enable_hard_deletes=True"
            )
        op = streams.delete_stream(self._sql, stream_uuid, expected, hard=hard)
        return Call(op, seconds, tx=hard)

    # -- reading -----------------------------------------------------------

    def _read_plan(
        self, stream_uuid: Any, start_version: Any, *, forward: bool, timeout: Timeout
    ) -> ReadPlan:
        stream_uuid = check.check_stream_uuid(stream_uuid)
        check.check_int(start_version, "start_version", minimum=0 if forward else -1)
        return ReadPlan(stream_uuid, start_version, forward, self._seconds(timeout))

    def _read_call(self, plan: ReadPlan, start: int, count: int) -> Call[list[RecordedEvent]]:
        op = reader.read_events(
            self._sql, self.serializer, plan.stream_uuid, start, count, forward=plan.forward
        )
        return Call(op, plan.seconds)

    def _stream_info_call(self, stream_uuid: Any, timeout: Timeout) -> Call[StreamInfo]:
        stream_uuid = check.check_stream_uuid(stream_uuid)
        seconds = self._seconds(timeout)
        return Call(reader.stream_info(self._sql, stream_uuid), seconds)

    def _paginate_call(
        self,
        page_size: Any,
        page_number: Any,
        search: Any,
        sort_by: Any,
        sort_dir: Any,
        timeout: Timeout,
    ) -> Call[Page[StreamInfo]]:
        check.check_int(page_size, "page_size", minimum=1)
        check.check_int(page_number, "page_number", minimum=1)
        if search is not None and not isinstance(search, str):
            raise TypeError(f"search must be a str or None, got {type(search).__name__}")
        if sort_by not in SORT_COLUMNS:
            raise ValueError(f"sort_by must be one of {', '.join(SORT_COLUMNS)}, got {sort_by!r}")
        if not isinstance(sort_dir, str) or sort_dir.lower() not in ("asc", "desc"):
            raise ValueError(f"sort_dir must be 'asc' or 'desc', got {sort_dir!r}")
        seconds = self._seconds(timeout)
        op = reader.paginate_streams(
            self._sql,
            page_size=page_size,
            page_number=page_number,
            search=search or None,
            sort_by=sort_by,
            sort_dir=sort_dir,
        )
        return Call(op, seconds)

    # -- snapshots -----------------------------------------------------------

    def _record_snapshot_call(self, snapshot: Any, timeout: Timeout) -> Call[None]:
        if not isinstance(snapshot, SnapshotData):
            raise TypeError(f"snapshot must be a SnapshotData, got {type(snapshot).__name__}")
        check.check_stream_uuid(snapshot.source_uuid, "snapshot.source_uuid")
        check.check_int(snapshot.source_version, "snapshot.source_version", minimum=0)
        check.check_stream_uuid(snapshot.source_type, "snapshot.source_type")
        seconds = self._seconds(timeout)
        data, metadata = check.serialize_snapshot(snapshot, self.serializer)
        return Call(snapshots.record_snapshot(self._sql, snapshot, data, metadata), seconds)

    def _read_snapshot_call(self, source_uuid: Any, timeout: Timeout) -> Call[SnapshotData]:
        source_uuid = check.check_stream_uuid(source_uuid, "source_uuid")
        seconds = self._seconds(timeout)
        return Call(snapshots.read_snapshot(self._sql, self.serializer, source_uuid), seconds)

    def _delete_snapshot_call(self, source_uuid: Any, timeout: Timeout) -> Call[None]:
        source_uuid = check.check_stream_uuid(source_uuid, "source_uuid")
        seconds = self._seconds(timeout)
        return Call(snapshots.delete_snapshot(self._sql, source_uuid), seconds)

    # -- parked events -------------------------------------------------------
    # Thin: validate, then one operation. An unknown subscription has no
    # parked events: [] and 0, not an error (as unsubscribing one is no error).
    # No timeout of their own (operator calls): the store's applies.

    def _parked_events_call(
        self, subscription_name: Any, stream_uuid: Any
    ) -> Call[list[ParkedEvent]]:
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        stream_uuid = check.check_stream_uuid(stream_uuid)
        op = parked.list_parked_op(
            self.schema, self.column_data_type, self.serializer, stream_uuid, name
        )
        return Call(op, self.timeout)

    def _change_parked_call(
        self, action: str, subscription_name: Any, stream_uuid: Any, event_numbers: Any
    ) -> Call[int]:
        name = check.check_stream_uuid(subscription_name, "subscription_name")
        stream_uuid = check.check_stream_uuid(stream_uuid)
        numbers = check.check_event_numbers(event_numbers)
        change = parked.request_replay_op if action == "replay" else parked.discard_op
        return Call(change(self.schema, stream_uuid, name, numbers), self.timeout, tx=True)
