"""The storage calls of :class:`~sqlalchemy_eventstore.EventStore`.

Writing, reading, stream information and snapshots: each checks its
arguments before any SQL, resolves its ``timeout=`` (the store's when left
out) and runs one storage function on the connection of the call -- the
caller's ``conn=`` transaction or a pooled connection -- through the store's
:class:`~.storage.connection.Connector`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection

from . import _validation as check
from ._types import (
    ALL_STREAM,
    ANY_VERSION,
    STREAM_EXISTS,
    Page,
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
from .storage import appender, reader, snapshots, streams
from .storage.connection import Connector, ConnLike
from .storage.sequencer import Sequencer
from .storage.sql import SORT_COLUMNS, Statements

__all__ = ["STORE_TIMEOUT", "StorageCalls", "Timeout"]

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


class StorageCalls:
    """The storage operations; :class:`EventStore` sets the attributes below."""

    _connector: Connector
    _sql: Statements
    _sequencer: Sequencer | None
    serializer: Serializer
    timeout: float | None
    enable_hard_deletes: bool

    def _seconds(self, timeout: Timeout) -> float | None:
        """A call's ``timeout=`` checked, the store's when left out."""
        if timeout is STORE_TIMEOUT:
            return self.timeout
        return check.check_timeout(timeout)

    def _run(
        self,
        conn: ConnLike | None,
        work: Callable[[Connection], T],
        *,
        tx: bool = False,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> T:
        """``work`` on the connection of a call (``conn=``'s or a pooled one)."""
        seconds = self._seconds(timeout)
        with self._connector.connect(conn, transaction=tx, timeout=seconds) as c:
            return work(c)

    # -- global order (sequencer mode) ----------------------------------------

    def advance_all_stream(self) -> int:
        """Number committed appends still waiting into ``$all`` (sequencer mode).

        Reads of ``$all`` call this first, so they see every event committed
        before they started. Returns the new head of ``$all``, or a negative
        number when nothing waited (always in lock mode, where nothing waits).
        Runs on the store's own connection, never in a caller's transaction.
        """
        if self._sequencer is None:
            return -1
        return self._sequencer.advance()

    def _sequence_soon(self) -> None:
        """Number waiting appends on the sequencer's worker thread (sequencer mode)."""
        if self._sequencer is not None:
            self._sequencer.help_soon()

    # -- writing -----------------------------------------------------------

    def append_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events: Any,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Append ``events`` (a non-empty list of EventData) to a stream, all or none.

        ``expected_version`` is the stream's current version (0: a new
        stream), ANY_VERSION, NO_STREAM or STREAM_EXISTS. Raises
        WrongExpectedVersionError, StreamExistsError, StreamNotFoundError,
        StreamDeletedError, CannotAppendToAllStreamError, DuplicateEventError,
        StoreTimeoutError; ValueError/TypeError for bad arguments.
        """
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(expected_version)
        seconds = self._seconds(timeout)
        prepared = check.prepare_events(events, self.serializer)
        if stream_uuid == ALL_STREAM:
            raise CannotAppendToAllStreamError("cannot append to the $all stream")
        self._run(
            conn,
            lambda c: appender.append(c, self._sql, stream_uuid, expected, prepared),
            timeout=seconds,
        )
        if self._sequencer is not None:
            # global_order="sequencer": number it into $all once committed.
            self._sequencer.appended(conn)

    def link_to_stream(
        self,
        stream_uuid: str,
        expected_version: Any,
        events_or_event_ids: Any,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Link already stored events (RecordedEvents or event ids) into a stream.

        The expected-version rules of :meth:`append_to_stream`. Raises
        EventNotFoundError (an id not stored: nothing is linked),
        DuplicateEventError (already linked there), CannotAppendToAllStreamError,
        the expected-version errors and StoreTimeoutError.
        """
        stream_uuid = check.check_stream_uuid(stream_uuid)
        expected = check.check_expected_version(expected_version)
        seconds = self._seconds(timeout)
        event_ids = check.event_ids_to_link(events_or_event_ids)
        if stream_uuid == ALL_STREAM:
            raise CannotAppendToAllStreamError("cannot link events to the $all stream")
        self._run(
            conn,
            lambda c: appender.link(c, self._sql, stream_uuid, expected, event_ids),
            timeout=seconds,
        )

    def delete_stream(
        self,
        stream_uuid: str,
        expected_version: Any = ANY_VERSION,
        *,
        hard: bool = False,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Soft delete a stream (``hard=True``: remove it and its events everywhere).

        ``expected_version`` is ANY_VERSION, STREAM_EXISTS or an int. Raises
        StreamNotFoundError, StreamDeletedError, WrongExpectedVersionError,
        CannotDeleteAllStreamError, HardDeletesNotEnabledError (hard delete on
        a store without ``enable_hard_deletes``) and StoreTimeoutError.
        """
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
        self._run(
            conn,
            lambda c: streams.delete_stream(c, self._sql, stream_uuid, expected, hard=hard),
            tx=hard,
            timeout=seconds,
        )

    # -- reading -----------------------------------------------------------
    #
    # Every read method is one call of _reader: it checks the arguments and
    # returns a function reading ``count`` events from a position, used once
    # by the read_* methods and batch after batch by the lazy stream_* ones.

    def _reader(
        self,
        stream_uuid: str,
        start_version: int,
        *,
        forward: bool,
        conn: ConnLike | None,
        timeout: Timeout,
    ) -> Callable[[int, int], list[RecordedEvent]]:
        stream_uuid = check.check_stream_uuid(stream_uuid)
        check.check_int(start_version, "start_version", minimum=0 if forward else -1)
        seconds = self._seconds(timeout)

        def read(start: int, count: int) -> list[RecordedEvent]:
            if stream_uuid == ALL_STREAM:
                self.advance_all_stream()
            return self._run(
                conn,
                lambda c: reader.read_events(
                    c, self._sql, self.serializer, stream_uuid, start, count, forward=forward
                ),
                timeout=seconds,
            )

        return read

    @staticmethod
    def _lazily(
        read: Callable[[int, int], list[RecordedEvent]],
        start_version: int,
        read_batch_size: Any,
        forward: bool,
    ) -> Iterator[RecordedEvent]:
        size = check.check_int(read_batch_size, "read_batch_size", minimum=1)
        # The first batch is read now, so a missing or deleted stream raises at
        # the call, not at the first next(); later batches are read on demand.
        first = read(start_version, size)

        def batches() -> Iterator[RecordedEvent]:
            current = first
            while current:
                yield from current
                if len(current) < size:
                    return
                following = current[-1].event_number + (1 if forward else -1)
                if following < 1:
                    return
                current = read(following, size)

        return batches()

    def read_stream_forward(
        self,
        stream_uuid: str,
        start_version: int = 0,
        count: int = 1000,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of a stream from ``start_version`` on.

        Raises StreamNotFoundError (no such stream, or hard deleted),
        StreamDeletedError (soft deleted) and StoreTimeoutError.
        """
        read = self._reader(stream_uuid, start_version, forward=True, conn=conn, timeout=timeout)
        return read(start_version, check.check_count(count))

    def read_stream_backward(
        self,
        stream_uuid: str,
        start_version: int = -1,
        count: int = 1000,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of a stream, newest first, from ``start_version``
        down (-1: from the end). Raises as :meth:`read_stream_forward`."""
        read = self._reader(stream_uuid, start_version, forward=False, conn=conn, timeout=timeout)
        return read(start_version, check.check_count(count))

    def read_all_streams_forward(
        self,
        start_version: int = 0,
        count: int = 1000,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of ``$all`` from global position ``start_version`` on."""
        read = self._reader(ALL_STREAM, start_version, forward=True, conn=conn, timeout=timeout)
        return read(start_version, check.check_count(count))

    def read_all_streams_backward(
        self,
        start_version: int = -1,
        count: int = 1000,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> list[RecordedEvent]:
        """Up to ``count`` events of ``$all``, newest first (-1: from the end)."""
        read = self._reader(ALL_STREAM, start_version, forward=False, conn=conn, timeout=timeout)
        return read(start_version, check.check_count(count))

    def stream_forward(
        self,
        stream_uuid: str,
        start_version: int = 0,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate a stream's events; memory stays bounded by ``read_batch_size``.

        The first batch is read at the call (so its errors raise here, as
        :meth:`read_stream_forward`'s); each later one when needed, under the
        same ``timeout``.
        """
        read = self._reader(stream_uuid, start_version, forward=True, conn=conn, timeout=timeout)
        return self._lazily(read, start_version, read_batch_size, True)

    def stream_backward(
        self,
        stream_uuid: str,
        start_version: int = -1,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate a stream's events newest first (as :meth:`stream_forward`)."""
        read = self._reader(stream_uuid, start_version, forward=False, conn=conn, timeout=timeout)
        return self._lazily(read, start_version, read_batch_size, False)

    def stream_all_forward(
        self,
        start_version: int = 0,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate ``$all`` in global order (as :meth:`stream_forward`)."""
        read = self._reader(ALL_STREAM, start_version, forward=True, conn=conn, timeout=timeout)
        return self._lazily(read, start_version, read_batch_size, True)

    def stream_all_backward(
        self,
        start_version: int = -1,
        *,
        read_batch_size: int = 1000,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> Iterator[RecordedEvent]:
        """Lazily iterate ``$all`` newest first (as :meth:`stream_forward`)."""
        read = self._reader(ALL_STREAM, start_version, forward=False, conn=conn, timeout=timeout)
        return self._lazily(read, start_version, read_batch_size, False)

    def stream_info(
        self,
        stream_uuid: str,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> StreamInfo:
        """A stream's id, version, timestamps and status (``$all``: id 0, the last
        global position). Raises StreamNotFoundError, StreamDeletedError and
        StoreTimeoutError."""
        stream_uuid = check.check_stream_uuid(stream_uuid)
        seconds = self._seconds(timeout)
        if stream_uuid == ALL_STREAM:
            self.advance_all_stream()
        return self._run(
            conn, lambda c: reader.stream_info(c, self._sql, stream_uuid), timeout=seconds
        )

    def paginate_streams(
        self,
        *,
        page_size: int = 50,
        page_number: int = 1,
        search: str | None = None,
        sort_by: str = "stream_id",
        sort_dir: str = "asc",
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> Page[StreamInfo]:
        """One page of all streams (``$all`` and soft-deleted ones included).

        ``search`` matches stream_uuid as a literal substring; ``sort_by`` is
        one of stream_id, stream_uuid, stream_version, created_at, deleted_at;
        ``sort_dir`` asc or desc. With no match the page is empty and
        ``total_pages`` is 1. Raises StoreTimeoutError.
        """
        check.check_int(page_size, "page_size", minimum=1)
        check.check_int(page_number, "page_number", minimum=1)
        if search is not None and not isinstance(search, str):
            raise TypeError(f"search must be a str or None, got {type(search).__name__}")
        if sort_by not in SORT_COLUMNS:
            raise ValueError(f"sort_by must be one of {', '.join(SORT_COLUMNS)}, got {sort_by!r}")
        if not isinstance(sort_dir, str) or sort_dir.lower() not in ("asc", "desc"):
            raise ValueError(f"sort_dir must be 'asc' or 'desc', got {sort_dir!r}")
        seconds = self._seconds(timeout)
        return self._run(
            conn,
            lambda c: reader.paginate_streams(
                c,
                self._sql,
                page_size=page_size,
                page_number=page_number,
                search=search or None,
                sort_by=sort_by,
                sort_dir=sort_dir,
            ),
            timeout=seconds,
        )

    # -- snapshots -----------------------------------------------------------

    def record_snapshot(
        self,
        snapshot: SnapshotData,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Record a snapshot, replacing any older one of the same source.

        Raises StoreTimeoutError; TypeError/ValueError for a bad snapshot.
        """
        if not isinstance(snapshot, SnapshotData):
            raise TypeError(f"snapshot must be a SnapshotData, got {type(snapshot).__name__}")
        check.check_stream_uuid(snapshot.source_uuid, "snapshot.source_uuid")
        check.check_int(snapshot.source_version, "snapshot.source_version", minimum=0)
        check.check_stream_uuid(snapshot.source_type, "snapshot.source_type")
        seconds = self._seconds(timeout)
        data, metadata = check.serialize_snapshot(snapshot, self.serializer)
        self._run(
            conn,
            lambda c: snapshots.record_snapshot(c, self._sql, snapshot, data, metadata),
            timeout=seconds,
        )

    def read_snapshot(
        self,
        source_uuid: str,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> SnapshotData:
        """The latest snapshot of ``source_uuid``.

        Raises SnapshotNotFoundError when there is none, and StoreTimeoutError.
        """
        source_uuid = check.check_stream_uuid(source_uuid, "source_uuid")
        seconds = self._seconds(timeout)
        return self._run(
            conn,
            lambda c: snapshots.read_snapshot(c, self._sql, self.serializer, source_uuid),
            timeout=seconds,
        )

    def delete_snapshot(
        self,
        source_uuid: str,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> None:
        """Delete the snapshot of ``source_uuid``; no error when there is none.

        Raises StoreTimeoutError.
        """
        source_uuid = check.check_stream_uuid(source_uuid, "source_uuid")
        seconds = self._seconds(timeout)
        self._run(
            conn, lambda c: snapshots.delete_snapshot(c, self._sql, source_uuid), timeout=seconds
        )
