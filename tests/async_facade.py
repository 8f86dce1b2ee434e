"""A sync-looking facade over AsyncEventStore, so one contract test body runs on both APIs.

Every coroutine method runs on a dedicated event loop thread and is waited
for; the lazy readers are awaited (reading their first batch, as the sync
API's do at the call) and then iterated one ``__anext__`` at a time.

Subscriptions come back as :class:`SyncSubscription`, whose calls are the
AsyncSubscription's coroutines run on that loop. A test's ``handler`` (a
plain function, which may block until the test lets it return) is passed
as it is on async-asyncpg -- the store calls it on a worker thread -- and,
on async-psycopg, as an async function awaiting it on a thread of the
facade: so the contract runs against both kinds of handler without running
twice on each driver.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy_eventstore.asyncio import AsyncEvents, AsyncEventStore, AsyncSubscription

T = TypeVar("T")

LAZY_READERS = ("stream_forward", "stream_backward", "stream_all_forward", "stream_all_backward")
SUBSCRIBERS = ("subscribe", "subscribe_to_stream", "subscribe_to_all_streams")


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


class SyncSubscription:
    """An AsyncSubscription's calls, made as the sync Subscription's are."""

    def __init__(self, sub: AsyncSubscription, loop: LoopThread) -> None:
        self.async_subscription = sub
        self._loop = loop

    def __repr__(self) -> str:
        return f"<SyncSubscription of {self.async_subscription!r}>"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.async_subscription, name)

    @property
    def stats(self) -> Any:
        return self._loop.run(self.async_subscription.stats())

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        return self._loop.run(self.async_subscription.wait_subscribed(timeout))

    def receive(self, timeout: float | None = None) -> list[Any]:
        return self._loop.run(self.async_subscription.receive(timeout))

    def ack(self, events: Any) -> None:
        self._loop.run(self.async_subscription.ack(events))

    def unsubscribe(self) -> None:
        self._loop.run(self.async_subscription.unsubscribe())


class SyncFacade:
    """The methods of an AsyncEventStore, called as the sync EventStore's are.

    ``async_handlers``: pass a test's handler as an async function (see the
    module's docstring).
    """

    def __init__(
        self, store: AsyncEventStore, loop: LoopThread, *, async_handlers: bool = False
    ) -> None:
        self.async_store = store
        self._loop = loop
        self._async_handlers = async_handlers
        self._handler_threads: ThreadPoolExecutor | None = None
        # One async wrapper per handler, so subscribing one handler twice is
        # still the same handler (AlreadySubscribedError).
        self._wrapped: dict[Any, Callable[[list[Any]], Coroutine[Any, Any, None]]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.async_store, name)
        if name in LAZY_READERS:
            return lambda *args, **kwargs: self._iterate(attr(*args, **kwargs))
        if name in SUBSCRIBERS:
            return lambda *args, **kwargs: self._subscribe(attr, args, kwargs)
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self._loop.run(attr(*args, **kwargs))
        return attr

    def _subscribe(self, method: Any, args: Any, kwargs: dict[str, Any]) -> SyncSubscription:
        handler = kwargs.get("handler")
        if (
            handler is not None
            and self._async_handlers
            and not inspect.iscoroutinefunction(handler)
        ):
            kwargs["handler"] = self._async_handler(handler)
        return SyncSubscription(self._loop.run(method(*args, **kwargs)), self._loop)

    def _async_handler(self, handler: Callable[[list[Any]], Any]) -> Any:
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            if self._handler_threads is None:
                self._handler_threads = ThreadPoolExecutor(64, thread_name_prefix="test-handler")
            threads = self._handler_threads

            async def wrapped(events: list[Any]) -> None:
                await asyncio.get_running_loop().run_in_executor(threads, handler, events)

            self._wrapped[handler] = wrapped
        return wrapped

    def close(self) -> None:
        self._loop.run(self.async_store.close())
        if self._handler_threads is not None:
            self._handler_threads.shutdown(wait=True)

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
