"""``AsyncSubscription``: what the async store's ``subscribe*`` return.

It wraps the sync API's subscriber handle (a :class:`LoopHandle`, the
:class:`~..subscriptions.handle.Subscription` subclass the runner makes for
the async store), so acks, the failure policy, parking and partitioning are
the sync API's own. What changes is the waiting:

- a delivery, a (re)subscription or a stop wakes the tasks awaiting
  :meth:`AsyncSubscription.receive` or :meth:`~AsyncSubscription.wait_subscribed`
  on the store's loop (``call_soon_threadsafe``); nothing polls;
- calls that may take the runner's mutex or wait for a database write (ack,
  unsubscribe) run on the store's threads, so the event loop never blocks;
- an async ``handler`` is awaited on the store's loop by the subscriber's
  worker thread, which applies the retry and parking policy around it.

Cancelling a task in ``receive`` takes nothing out of the mailbox: the next
call gets the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from ..stats import SubscriptionStats
from ..subscriptions.handle import Subscription, Unsubscribed
from .bridge import wait_on

__all__ = ["AsyncSubscription", "LoopHandle"]

T = TypeVar("T")

#: Runs a blocking call on one of the store's threads and awaits its result.
Offload = Callable[[Callable[[], T]], Awaitable[T]]


def is_async_callable(value: Any) -> bool:
    """An async function (or an object whose ``__call__`` is one, or a partial of one)."""
    return inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(
        getattr(value, "__call__", None)  # noqa: B004 -- the method, not callability
    )


class _Wakeup:
    """Futures of the tasks waiting on one subscriber, woken from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiters: set[asyncio.Future[None]] = set()

    def waiter(self) -> asyncio.Future[None]:
        """A future the next :meth:`wake` completes (on the loop)."""
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.add(future)
        return future

    def forget(self, future: asyncio.Future[None]) -> None:
        self._waiters.discard(future)

    def wake(self) -> None:
        """Wake every waiter (any thread). A waiter registers before it looks
        at the mailbox, and a deliverer fills the mailbox before it looks at
        the waiters: one of the two always sees the other."""
        if not self._waiters:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)


class LoopHandle(Subscription):
    """The sync subscriber handle, waking the store's loop and awaiting async handlers."""

    def __init__(self, *args: Any, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        self._loop = loop
        self._wakeup = _Wakeup(loop)
        self._async_handler = is_async_callable(kwargs.get("handler"))
        # Mailbox mode: the task in which receive() last returned a batch.
        self._consumer_task: asyncio.Task[Any] | None = None
        super().__init__(*args, **kwargs)

    # -- the runner's calls, each waking the loop ----------------------------------

    def _deliver(self, batch: list[Any], numbers: list[int], epoch: int = 0) -> None:
        super()._deliver(batch, numbers, epoch)
        self._wakeup.wake()

    def _begin(self, epoch: int) -> None:
        super()._begin(epoch)
        self._wakeup.wake()

    def _withdraw(self) -> None:
        super()._withdraw()
        self._wakeup.wake()

    def _stop(self) -> None:
        super()._stop()
        self._wakeup.wake()

    def _invoke(self, batch: list[Any]) -> None:
        if not self._async_handler:
            super()._invoke(batch)  # a plain handler: on this worker thread
            return
        wait_on(self._loop, self._await_handler(batch))

    async def _await_handler(self, batch: list[Any]) -> None:
        await self.handler(batch)  # type: ignore[misc]

    @property
    def _consumer_died(self) -> bool:
        """A task that received events here was cancelled: the subscriber is
        gone, as a mailbox whose consumer thread ended (see the runner). A
        task that ended normally is not: ``asyncio.wait_for`` runs
        ``receive()`` in a task of its own (before Python 3.12) and hands the
        batch to its caller."""
        task = self._consumer_task
        if task is None or self._stopped.is_set():
            return False
        return task.cancelled()

    # -- on the loop -----------------------------------------------------------------

    def poll(self) -> list[Any] | None:
        """The next live batch if one is queued; raises Unsubscribed once stopped."""
        while True:
            try:
                item = self._mailbox.get_nowait()
            except queue.Empty:
                return None
            batch = self._accept(item)
            if batch is not None:
                return batch


class AsyncSubscription:
    """One subscriber of a subscription, for asyncio.

    In mailbox mode (no handler) ``await receive()`` each batch, or
    ``async for events in sub``, and ``await sub.ack(events)``. With a
    handler, the store calls it with each batch -- awaited on the store's
    loop when it is an async function, on a worker thread otherwise -- and
    acks when it returns. ``status``, ``last_error`` and ``subscribed`` are
    plain attributes, as in the sync API.
    """

    def __init__(self, handle: LoopHandle, offload: Offload[Any]) -> None:
        self._handle = handle
        self._offload = offload

    def __repr__(self) -> str:
        name = self._handle.subscription_name or "(transient)"
        return f"<AsyncSubscription {name} on {self._handle.stream_uuid!r}>"

    @property
    def stream_uuid(self) -> str:
        return self._handle.stream_uuid

    @property
    def subscription_name(self) -> str | None:
        return self._handle.subscription_name

    @property
    def handler(self) -> Any:
        return self._handle.handler

    @property
    def transient(self) -> bool:
        return self._handle.transient

    @property
    def subscribed(self) -> bool:
        return self._handle.subscribed

    @property
    def status(self) -> str:
        """``"initial"``, ``"catching_up"``, ``"subscribed"``, ``"max_capacity"``,
        ``"disconnected"``, ``"retrying"`` or ``"unsubscribed"``, as in the sync API."""
        return self._handle.status

    @property
    def last_error(self) -> BaseException | None:
        """The exception user code or the serializer raised on the event being
        retried; None again after the next success."""
        return self._handle.last_error

    async def wait_subscribed(self, timeout: float | None = None) -> bool:
        """Wait until subscribed (holding its lock, caught up or catching up); True once it is."""
        handle = self._handle
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            waiter = handle._wakeup.waiter()
            try:
                if handle.subscribed:
                    return True
                if deadline is None:
                    await waiter
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        return False
                    await asyncio.wait({waiter}, timeout=left)
            finally:
                handle._wakeup.forget(waiter)

    async def receive(self, timeout: float | None = None) -> list[Any]:
        """The next batch of events; the built-in TimeoutError when none arrives in time.

        Also TimeoutError once unsubscribed (or the store closed). Cancelling
        the waiting task takes nothing out of the mailbox.
        """
        handle = self._handle
        if handle.handler is not None:
            raise RuntimeError("this subscription has a handler; it receives the events")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            waiter = handle._wakeup.waiter()
            try:
                batch = handle.poll()
                if batch is not None:
                    handle._consumer_task = asyncio.current_task()
                    return batch
                if deadline is None:
                    await waiter
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError(f"no events within {timeout} s")
                    await asyncio.wait({waiter}, timeout=left)
            finally:
                handle._wakeup.forget(waiter)

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> list[Any]:
        """The next batch; the iteration ends once unsubscribed or the store closed."""
        try:
            return await self.receive()
        except Unsubscribed:
            raise StopAsyncIteration from None

    async def stats(self) -> SubscriptionStats:
        """The subscription's figures in this process now (as the sync
        ``Subscription.stats``): lag, checkpoint age, events in flight, parked
        events, retries and status. A coroutine: read on a store thread, as
        the scheduler's lock is never waited for on the event loop."""
        handle = self._handle
        stats: SubscriptionStats = await self._offload(lambda: handle.stats)
        return stats

    async def ack(self, events: Any) -> None:
        """Acknowledge a batch, one event, or an event_number (as the sync
        ``Subscription.ack``); returns once the acknowledgement is recorded."""
        await self._offload(partial(self._handle.ack, events))

    async def unsubscribe(self) -> None:
        """Stop this subscriber; a persistent subscription keeps its checkpoint."""
        await self._offload(self._handle.unsubscribe)
