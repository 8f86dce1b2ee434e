"""The async lazy reads: an async iterator over a stream, one batch at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from .._operations import ReadPlan, next_start
from .._types import RecordedEvent
from .connection import AsyncConnLike

if TYPE_CHECKING:
    from .store import AsyncEventStore

__all__ = ["AsyncEvents"]


class AsyncEvents:
    """A lazy read: ``async for event in store.stream_forward(...)``.

    Reads ``read_batch_size`` events at a time, on demand. ``await`` it to
    read its first batch at once (a missing or deleted stream then raises
    there, as the sync API's lazy readers raise at the call); it returns
    itself, ready to iterate.
    """

    def __init__(
        self, store: AsyncEventStore, conn: AsyncConnLike | None, plan: ReadPlan, size: int
    ) -> None:
        self._store, self._conn, self._plan, self._size = store, conn, plan, size
        self._batch: list[RecordedEvent] = []
        self._index = 0
        self._next: int | None = plan.start_version

    async def _fill(self) -> bool:
        """Read the next batch when the current one is used up; False at the end."""
        while self._index >= len(self._batch):
            if self._next is None:
                return False
            batch = await self._store._read_page(self._conn, self._plan, self._next, self._size)
            self._next = next_start(batch, self._size, self._plan.forward) if batch else None
            self._batch, self._index = batch, 0
        return True

    def __await__(self) -> Generator[Any, None, AsyncEvents]:
        return self._started().__await__()

    async def _started(self) -> AsyncEvents:
        await self._fill()
        return self

    def __aiter__(self) -> AsyncIterator[RecordedEvent]:
        return self

    async def __anext__(self) -> RecordedEvent:
        if not await self._fill():
            raise StopAsyncIteration
        event = self._batch[self._index]
        self._index += 1
        return event
