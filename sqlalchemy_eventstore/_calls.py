"""The storage calls of :class:`~sqlalchemy_eventstore.EventStore`.

Writing, reading, stream information and snapshots: each is built -- its
arguments checked before any SQL, its ``timeout=`` resolved (the store's when
left out), its operation chosen -- by :class:`~._operations.Operations`, shared
with the async store, and run here on the connection of the call (the
caller's ``conn=`` transaction or a pooled connection) through the store's
:class:`~.storage.connection.Connector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from . import _validation as check
from ._operations import STORE_TIMEOUT, Call, Operations, Timeout, next_start
from ._types import (
    ALL_STREAM,
    ANY_VERSION,
    Page,
    RecordedEvent,
    SnapshotData,
    StreamInfo,
)
from .storage.connection import Connector, ConnLike
from .storage.sequencer import Sequencer
from .storage.steps import run

__all__ = ["STORE_TIMEOUT", "StorageCalls", "Timeout"]

T = TypeVar("T")


class StorageCalls(Operations):
    """The storage operations; :class:`EventStore` sets the attributes below."""

    _connector: Connector
    _sequencer: Sequencer | None

    def _call(self, conn: ConnLike | None, call: Call[T]) -> T:
        """Run ``call`` on the connection of the call (``conn=``'s or a pooled one)."""
        with self._connector.connect(conn, transaction=call.tx, timeout=call.seconds) as c:
            return run(c, call.op, prepare=self._sql.prepare)

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
        self._call(conn, self._append_call(stream_uuid, expected_version, events, timeout))
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
        call = self._link_call(stream_uuid, expected_version, events_or_event_ids, timeout)
        self._call(conn, call)

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
        self._call(conn, self._delete_call(stream_uuid, expected_version, hard, timeout))

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
        plan = self._read_plan(stream_uuid, start_version, forward=forward, timeout=timeout)

        def read(start: int, count: int) -> list[RecordedEvent]:
            if plan.stream_uuid == ALL_STREAM:
                self.advance_all_stream()
            return self._call(conn, self._read_call(plan, start, count))

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
                following = next_start(current, size, forward)
                if following is None:
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
        call = self._stream_info_call(stream_uuid, timeout)
        if stream_uuid == ALL_STREAM:
            self.advance_all_stream()
        return self._call(conn, call)

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
        call = self._paginate_call(page_size, page_number, search, sort_by, sort_dir, timeout)
        return self._call(conn, call)

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
        self._call(conn, self._record_snapshot_call(snapshot, timeout))

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
        return self._call(conn, self._read_snapshot_call(source_uuid, timeout))

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
        self._call(conn, self._delete_snapshot_call(source_uuid, timeout))
