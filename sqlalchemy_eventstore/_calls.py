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
from ._counters import StoreCounters
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
    _counters: StoreCounters

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
        """Append events atomically, checking the stream's expected version.

        The events get consecutive stream versions and ``$all`` positions, all
        or none: in ``conn``'s transaction when given.

        Args:
            stream_uuid: The stream's identity (any non-empty string but ``$all``).
            expected_version: The stream's current version (an int, 0 for a new
                stream), or :data:`ANY_VERSION`, :data:`NO_STREAM`,
                :data:`STREAM_EXISTS`.
            events: A non-empty list of :class:`EventData`.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            WrongExpectedVersionError: The stream is at another version.
            StreamExistsError: :data:`NO_STREAM` was expected, the stream exists.
            StreamNotFoundError: :data:`STREAM_EXISTS` or a version > 0 was
                expected, the stream does not exist.
            StreamDeletedError: The stream was soft deleted.
            DuplicateEventError: An ``event_id`` is already stored.
            CannotAppendToAllStreamError: ``stream_uuid`` is ``$all``.
            TypeError: An argument of the wrong type, or data the serializer
                cannot encode.
            ValueError: An empty stream name or event list, a bad UUID, a
                negative version.
        """
        self._call(conn, self._append_call(stream_uuid, expected_version, events, timeout))
        # Plain increments, no lock: see _counters.
        counters = self._counters
        counters.appends += 1
        counters.events_appended += len(events)
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

        The events keep their identity and ``$all`` position; the stream gets
        new versions for them.

        Args:
            stream_uuid: The stream to link into (not ``$all``).
            expected_version: As for :meth:`append_to_stream`.
            events_or_event_ids: A non-empty list of :class:`RecordedEvent` or
                event id strings.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            EventNotFoundError: An event id is not stored (nothing is linked).
            DuplicateEventError: An event is already linked to the stream.
            WrongExpectedVersionError: The stream is at another version.
            StreamExistsError: :data:`NO_STREAM` was expected, the stream exists.
            StreamNotFoundError: The stream was expected to exist.
            StreamDeletedError: The stream was soft deleted.
            CannotAppendToAllStreamError: ``stream_uuid`` is ``$all``.
            TypeError: An argument of the wrong type.
            ValueError: An empty list, a bad UUID.
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
        """Soft delete a stream, or hard delete it with its events.

        A soft-deleted stream can no longer be read or appended to; its events
        stay in ``$all``. A hard delete removes the stream and every event only
        it holds (from ``$all`` too).

        Args:
            stream_uuid: The stream to delete (not ``$all``).
            expected_version: The stream's current version, :data:`ANY_VERSION`
                or :data:`STREAM_EXISTS`.
            hard: Delete the events too; needs ``enable_hard_deletes=True``.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            StreamNotFoundError: The stream does not exist.
            StreamDeletedError: The stream is already soft deleted.
            WrongExpectedVersionError: The stream is at another version.
            HardDeletesNotEnabledError: ``hard=True`` on a store without
                ``enable_hard_deletes``.
            CannotDeleteAllStreamError: ``stream_uuid`` is ``$all``.
            TypeError: An argument of the wrong type.
            ValueError: An expected version other than those listed.
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

        Args:
            stream_uuid: The stream (``$all`` for every event in commit order).
            start_version: The first stream version to read (0 and 1 both mean
                the first event).
            count: The most events to return (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            The events in stream order; ``[]`` past the end. Each
            :class:`RecordedEvent`'s ``event_number`` is its version in this
            stream (its position, for ``$all``).

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            StreamNotFoundError: The stream does not exist.
            StreamDeletedError: The stream was soft deleted.
            TypeError: An argument of the wrong type.
            ValueError: An empty stream name, a position or count out of range.
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
        down (-1: from the end).

        Args:
            stream_uuid: The stream (``$all`` for every event).
            start_version: The first (highest) stream version to read; -1 for
                the last event.
            count: The most events to return (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            The events, newest first.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            StreamNotFoundError: The stream does not exist.
            StreamDeletedError: The stream was soft deleted.
            TypeError: An argument of the wrong type.
            ValueError: An empty stream name, a position or count out of range.
        """
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
        """Up to ``count`` events of ``$all`` from global position ``start_version`` on.

        As :meth:`read_stream_forward` on ``$all``.

        Args:
            start_version: The first global position to read.
            count: The most events to return (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            The events in commit order.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            TypeError: An argument of the wrong type.
            ValueError: A position or count out of range.
        """
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
        """Up to ``count`` events of ``$all``, newest first.

        As :meth:`read_stream_backward` on ``$all``.

        Args:
            start_version: The first (highest) position to read; -1 for the head.
            count: The most events to return (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            The events, newest first.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            TypeError: An argument of the wrong type.
            ValueError: A position or count out of range.
        """
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

        The first batch is read at the call, so a missing stream raises here;
        later batches are read as the iterator advances.

        Args:
            stream_uuid: The stream (``$all`` for every event).
            start_version: The first stream version to yield.
            read_batch_size: Events read per query (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            An iterator of :class:`RecordedEvent` in stream order.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            StreamNotFoundError: The stream does not exist.
            StreamDeletedError: The stream was soft deleted.
            TypeError: An argument of the wrong type.
            ValueError: An empty stream name, a position or count out of range.
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
        """Lazily iterate a stream's events newest first.

        Args:
            stream_uuid: The stream (``$all`` for every event).
            start_version: The first (highest) version to yield; -1 for the last.
            read_batch_size: Events read per query (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            An iterator of :class:`RecordedEvent`, newest first.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            StreamNotFoundError: The stream does not exist.
            StreamDeletedError: The stream was soft deleted.
            TypeError: An argument of the wrong type.
            ValueError: An empty stream name, a position or count out of range.
        """
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
        """Lazily iterate ``$all`` in global order (as :meth:`stream_forward`).

        Args:
            start_version: The first global position to yield.
            read_batch_size: Events read per query (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            An iterator of :class:`RecordedEvent` in commit order.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            TypeError: An argument of the wrong type.
            ValueError: A position or batch size out of range.
        """
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
        """Lazily iterate ``$all`` newest first (as :meth:`stream_backward`).

        Args:
            start_version: The first (highest) position to yield; -1 for the head.
            read_batch_size: Events read per query (at least 1).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            An iterator of :class:`RecordedEvent`, newest first.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            TypeError: An argument of the wrong type.
            ValueError: A position or batch size out of range.
        """
        read = self._reader(ALL_STREAM, start_version, forward=False, conn=conn, timeout=timeout)
        return self._lazily(read, start_version, read_batch_size, False)

    def stream_info(
        self,
        stream_uuid: str,
        *,
        conn: ConnLike | None = None,
        timeout: Timeout = STORE_TIMEOUT,
    ) -> StreamInfo:
        """A stream's id, version, timestamps and status (``$all`` included).

        Args:
            stream_uuid: The stream.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            Its :class:`StreamInfo`; ``stream_version`` is the number of its
            events (for ``$all``, whose id is 0: the head, the position of the
            latest event).

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            StreamNotFoundError: The stream does not exist.
            StreamDeletedError: The stream was soft deleted.
            TypeError: ``stream_uuid`` is not a str.
            ValueError: ``stream_uuid`` is empty.
        """
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

        Args:
            page_size: Streams per page (at least 1).
            page_number: The page, from 1.
            search: Only streams whose name contains this text (``%`` and
                ``_`` match themselves).
            sort_by: ``"stream_id"``, ``"stream_uuid"``, ``"stream_version"``,
                ``"created_at"`` or ``"deleted_at"``.
            sort_dir: ``"asc"`` or ``"desc"``.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            A :class:`Page` of :class:`StreamInfo` with the total count of
            matching streams and pages (no match: an empty page, one page).

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            TypeError: An argument of the wrong type.
            ValueError: A page size or number below 1, an unknown sort column
                or direction.
        """
        call = self._paginate_call(page_size, page_number, search, sort_by, sort_dir, timeout)
        self.advance_all_stream()  # the $all row's version counts every committed event
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

        Args:
            snapshot: The :class:`SnapshotData` to store.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            TypeError: ``snapshot`` is not a SnapshotData, or its data cannot
                be serialized.
            ValueError: An empty source, a negative version.
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

        Args:
            source_uuid: The snapshot's source (an aggregate's id, say).
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Returns:
            The :class:`SnapshotData`, with ``created_at`` set.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            SnapshotNotFoundError: No snapshot of the source is recorded.
            TypeError: ``source_uuid`` is not a str.
            ValueError: ``source_uuid`` is empty.
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

        Args:
            source_uuid: The snapshot's source.
            conn: A ``Session`` or ``Connection`` whose transaction the call joins
                (nothing is committed); by default the store's own connection,
                committed at once.
            timeout: Seconds the call may take (None: no limit); by default the
                store's ``timeout``.

        Raises:
            StoreTimeoutError: The call took longer than its timeout.
            TypeError: ``source_uuid`` is not a str.
            ValueError: ``source_uuid`` is empty.
        """
        self._call(conn, self._delete_snapshot_call(source_uuid, timeout))
