"""A sync-looking facade over AsyncEventStore, so one contract test body runs on both APIs.

Every coroutine method runs on a dedicated event loop thread and is waited
for; the lazy readers are awaited (reading their first batch, as the sync
API's do at the call) and then iterated one ``__anext__`` at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from sqlalchemy_eventstore.asyncio import AsyncEvents, AsyncEventStore

T = TypeVar("T")

LAZY_READERS = ("stream_forward", "stream_backward", "stream_all_forward", "stream_all_backward")


class LoopThread:
    """An event loop running forever on its own thread, until stopped."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="async-store-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


class SyncFacade:
    """The methods of an AsyncEventStore, called as the sync EventStore's are."""

    def __init__(self, store: AsyncEventStore, loop: LoopThread) -> None:
        self.async_store = store
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.async_store, name)
        if name in LAZY_READERS:
            return lambda *args, **kwargs: self._iterate(attr(*args, **kwargs))
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self._loop.run(attr(*args, **kwargs))
        return attr

    @property
    def engine(self) -> Any:
        """The AsyncEngine's sync core: statement events can be listened to on it."""
        return self.async_store.engine.sync_engine

    def _iterate(self, events: AsyncEvents) -> Iterator[Any]:
        async def first() -> AsyncEvents:
            return await events

        self._loop.run(first())

        def each() -> Iterator[Any]:
            while True:
                try:
                    yield self._loop.run(events.__anext__())
                except StopAsyncIteration:
                    return

        return each()

    def __enter__(self) -> SyncFacade:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
