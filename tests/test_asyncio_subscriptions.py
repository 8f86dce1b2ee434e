"""What only the async API's subscriptions have: awaiting, ``async for``, async
handlers on the store's loop, cancellation, shutdown, and a sync and an async
store sharing one subscription.

The subscription contract itself runs on the async API through the contract
modules (``driver`` async-psycopg / async-asyncpg, see conftest.py). Warnings
are errors here as everywhere (pyproject's ``filterwarnings``): an unclosed
connection or an un-awaited coroutine fails the test that leaked it.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import create_async_engine

from sqlalchemy_eventstore import ALL_STREAM, EventData, EventStore
from sqlalchemy_eventstore.asyncio import AsyncEventStore, AsyncSubscription
from sqlalchemy_eventstore.errors import SubscriptionAlreadyExistsError
from tests.async_facade import LoopThread

from .subscription_helpers import WAIT, eventually

ASYNC_DRIVERS = {"psycopg": "postgresql+psycopg", "asyncpg": "postgresql+asyncpg"}


@pytest.fixture(params=list(ASYNC_DRIVERS))
def async_url(request: pytest.FixtureRequest, database_url: URL) -> URL:
    return database_url.set(drivername=ASYNC_DRIVERS[request.param])


@pytest.fixture
def schema(make_store: Callable[..., EventStore]) -> str:
    """A fresh schema, initialised (and dropped after the test) by a sync store."""
    return make_store().schema


@pytest.fixture
def run(loop_thread: LoopThread) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return loop_thread.run


def events(n: int, first: int = 0) -> list[EventData]:
    return [EventData("E", {"n": first + i}) for i in range(n)]


def numbers(batch: list[Any]) -> list[int]:
    return [e.event_number for e in batch]


def store_threads(schema: str) -> list[str]:
    """The live threads a store of ``schema`` started."""
    return [t.name for t in threading.enumerate() if schema in t.name]


async def wait_until(predicate: Callable[[], Any], timeout: float = WAIT) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def open_transactions(admin_engine: Engine, name: str) -> int:
    with admin_engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND state IN ('active', 'idle in transaction', "
                    "'idle in transaction (aborted)')"
                ),
                {"name": name},
            ).scalar_one()
        )


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Whatever the test left unreferenced is collected before it ends, so a
    ResourceWarning (an unclosed connection) fails this test."""
    yield
    gc.collect()


# -- receiving ---------------------------------------------------------------------------


def test_async_for_yields_batches_and_ends_at_unsubscribe(async_url, schema, run):
    async def scenario() -> tuple[list[list[int]], str, type[BaseException]]:
        async with AsyncEventStore(async_url, schema=schema) as store:
            await store.append_to_stream("s", 0, events(3))
            sub = await store.subscribe_to_all_streams("p", buffer_size=2)
            assert isinstance(sub, AsyncSubscription)
            assert await sub.wait_subscribed(WAIT)
            seen: list[list[int]] = []
            async for batch in sub:
                seen.append(numbers(batch))
                await sub.ack(batch)
                if batch[-1].event_number == 3:
                    await sub.unsubscribe()  # ends the iteration
            status = sub.status
            try:
                await sub.receive(timeout=0.05)
            except TimeoutError as error:
                raised: type[BaseException] = type(error)
            return seen, status, raised

    seen, status, raised = run(scenario())
    assert seen == [[1, 2], [3]]
    assert status == "unsubscribed"
    assert issubclass(raised, TimeoutError)


def test_receive_raises_the_builtin_timeout_error(async_url, schema, run):
    async def scenario() -> bool:
        async with AsyncEventStore(async_url, schema=schema) as store:
            sub = await store.subscribe(ALL_STREAM)
            try:
                await sub.receive(timeout=0.1)
            except TimeoutError:  # the built-in one, also on Python 3.10
                return True
            return False

    assert run(scenario()) is True


def test_async_for_ends_when_the_store_closes(async_url, schema, run):
    async def scenario() -> list[int]:
        store = AsyncEventStore(async_url, schema=schema)
        sub = await store.subscribe_to_stream("s", "p")
        assert await sub.wait_subscribed(WAIT)
        seen: list[int] = []

        async def consume() -> None:
            async for batch in sub:
                seen.extend(numbers(batch))
                await sub.ack(batch)

        consumer = asyncio.create_task(consume())
        await store.append_to_stream("s", 0, events(2))
        assert await wait_until(lambda: len(seen) == 2)
        await store.close()
        await asyncio.wait_for(consumer, WAIT)  # the iteration ended
        return seen

    assert run(scenario()) == [1, 2]


# -- handlers ----------------------------------------------------------------------------


def test_an_async_handler_is_awaited_on_the_stores_loop_and_a_plain_one_on_a_thread(
    async_url, schema, run
):
    async def scenario() -> tuple[list[Any], list[str]]:
        loop = asyncio.get_running_loop()
        async_calls: list[Any] = []
        thread_names: list[str] = []

        async def on_loop(batch: list[Any]) -> None:
            await asyncio.sleep(0)  # really awaited
            async_calls.append((asyncio.get_running_loop() is loop, numbers(batch)))

        def on_thread(batch: list[Any]) -> None:
            thread_names.append(threading.current_thread().name)

        async with AsyncEventStore(async_url, schema=schema) as store:
            first = await store.subscribe_to_all_streams("async", handler=on_loop)
            second = await store.subscribe_to_all_streams("plain", handler=on_thread)
            assert await first.wait_subscribed(WAIT) and await second.wait_subscribed(WAIT)
            await store.append_to_stream("s", 0, events(1))
            assert await wait_until(lambda: async_calls and thread_names)
        return async_calls, thread_names

    async_calls, thread_names = run(scenario())
    assert async_calls == [(True, [1])]
    assert thread_names == ["eventstore-handler-plain"]


def test_an_async_handler_that_keeps_failing_is_parked_and_the_subscription_goes_on(
    async_url, schema, run
):
    async def scenario() -> tuple[list[int], list[int], str]:
        handled: list[int] = []

        async def handler(batch: list[Any]) -> None:
            for event in batch:
                if event.data["n"] == 1:
                    raise ValueError("cannot handle 1")
                handled.append(event.event_number)

        async with AsyncEventStore(async_url, schema=schema) as store:
            sub = await store.subscribe_to_all_streams("p", handler=handler, max_retries=1)
            assert await sub.wait_subscribed(WAIT)
            await store.append_to_stream("s", 0, events(3))
            assert await wait_until(lambda: handled == [1, 3], 30)
            parked = await store.parked_events("p")
            for _ in range(100):  # the park is written on the runner's next pass
                if parked:
                    break
                await asyncio.sleep(0.05)
                parked = await store.parked_events("p")
            reason = parked[0].reason if parked else ""
            return handled, [p.event.event_number for p in parked], reason

    handled, parked, reason = run(scenario())
    assert handled == [1, 3]
    assert parked == [2]
    assert "cannot handle 1" in reason


# -- cancellation ------------------------------------------------------------------------


def test_cancelling_receive_loses_no_event(async_url, schema, run):
    async def scenario() -> tuple[list[int], list[int]]:
        async with AsyncEventStore(async_url, schema=schema) as store:
            sub = await store.subscribe_to_all_streams("p", buffer_size=10)
            assert await sub.wait_subscribed(WAIT)
            waiting = asyncio.create_task(sub.receive())
            await asyncio.sleep(0.1)
            # Cancelled just as the batch may be arriving: it stays in the mailbox.
            await store.append_to_stream("s", 0, events(2))
            waiting.cancel()
            try:
                first = numbers(await waiting)  # it won the race: it has the batch
            except asyncio.CancelledError:
                first = []
            rest: list[int] = []
            while len(first) + len(rest) < 2:
                rest.extend(numbers(await sub.receive(timeout=WAIT)))
            return first, rest

    first, rest = run(scenario())
    assert first + rest == [1, 2]


def test_cancelling_subscribe_leaves_no_subscriber_behind(async_url, schema, run):
    async def scenario() -> list[list[int]]:
        async with AsyncEventStore(async_url, schema=schema) as store:
            await store.append_to_stream("s", 0, events(2))
            delays = (0, 0.001, 0.01, 0.05)
            for i, delay in enumerate(delays):
                task = asyncio.create_task(store.subscribe_to_all_streams(f"p{i}"))
                await asyncio.sleep(delay)
                task.cancel()
                try:
                    made = await task
                except asyncio.CancelledError:
                    continue
                await made.unsubscribe()  # it won the race: the caller has it
            # Whatever a cancelled call made is gone again: each name is free,
            # and nothing was acknowledged meanwhile.
            received = []
            for i in range(len(delays)):
                sub = None
                for _ in range(100):
                    try:
                        sub = await store.subscribe_to_all_streams(f"p{i}", buffer_size=10)
                        break
                    except SubscriptionAlreadyExistsError:  # until the undo has run
                        await asyncio.sleep(0.05)
                assert sub is not None
                received.append(numbers(await sub.receive(timeout=WAIT)))
            return received

    assert run(scenario()) == [[1, 2]] * 4


def test_cancelled_calls_leave_no_connection_checked_out_or_transaction_open(
    async_url, schema, run, admin_engine, no_leaks
):
    name = f"cancel_{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, list[int], int]:
        store = AsyncEventStore(async_url, schema=schema, name=name)
        try:
            sub = await store.subscribe_to_all_streams("p", buffer_size=1000)
            assert await sub.wait_subscribed(WAIT)

            async def work(i: int) -> None:
                await store.append_to_stream(f"s-{i}", 0, events(3))
                await store.read_all_streams_forward()
                batch = await sub.receive(timeout=WAIT)
                await sub.ack(batch)
                await store.parked_events("p")

            # Cancel each round's tasks at staggered moments mid-call.
            for round_ in range(4):
                tasks = [asyncio.create_task(work(round_ * 10 + i)) for i in range(10)]
                await asyncio.sleep(0.005 * round_)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            # Every append either happened or not; every committed event
            # still reaches the subscriber (redelivered if its ack was lost).
            committed = {e.event_number for e in await store.read_all_streams_forward(count=10_000)}
            seen: set[int] = set()
            while not committed <= seen:
                batch = await sub.receive(timeout=WAIT)
                seen.update(numbers(batch))
                await sub.ack(batch)
            await sub.unsubscribe()
            pool: Any = store.engine.pool
            await wait_until(lambda: pool.checkedout() == 0)
            return pool.checkedout(), sorted(committed - seen), len(committed)
        finally:
            await store.close()

    checked_out, missing, committed = run(scenario())
    assert checked_out == 0
    assert missing == []
    assert committed % 3 == 0  # whole appends only
    assert open_transactions(admin_engine, name) == 0


# -- shutdown ----------------------------------------------------------------------------


def test_close_ends_every_thread_and_task_and_disposes_only_its_own_engine(
    async_url, schema, run, no_leaks
):
    async def scenario() -> tuple[list[str], int, int, int]:
        engine = create_async_engine(async_url)
        try:
            shared = AsyncEventStore(engine, schema=schema)
            handled: list[int] = []

            async def handler(batch: list[Any]) -> None:
                handled.extend(numbers(batch))

            mailbox = await shared.subscribe_to_all_streams("m")
            await shared.subscribe_to_all_streams("h", handler=handler)
            await shared.subscribe(ALL_STREAM, handler=lambda batch: None)
            assert await mailbox.wait_subscribed(WAIT)
            await shared.append_to_stream("s", 0, events(1))
            assert await wait_until(lambda: handled == [1])
            tasks_before = len(asyncio.all_tasks())
            await shared.close()
            # Its runner, reader, listener, handler and offload threads have ended.
            assert await wait_until(lambda: not store_threads(schema))
            tasks_after = len(asyncio.all_tasks())
            # The caller's engine still serves, with nothing checked out.
            async with engine.connect() as conn:
                assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
            pool: Any = engine.pool
            return store_threads(schema), tasks_before - tasks_after, pool.checkedout(), 0
        finally:
            await engine.dispose()

    threads, tasks_ended, checked_out, _ = run(scenario())
    assert threads == []
    assert tasks_ended >= 1  # the listener's task
    assert checked_out == 0


def test_close_persists_an_acked_checkpoint_whatever_the_threshold(
    async_url, schema, run, admin_engine
):
    async def scenario() -> None:
        store = AsyncEventStore(async_url, schema=schema)
        await store.append_to_stream("s", 0, events(3))
        sub = await store.subscribe_to_all_streams("p", buffer_size=3, checkpoint_threshold=100)
        await sub.ack(await sub.receive(timeout=WAIT))
        await store.close()

    run(scenario())
    with admin_engine.connect() as conn:
        last_seen = conn.execute(
            text(f"SELECT last_seen FROM \"{schema}\".subscriptions WHERE subscription_name = 'p'")
        ).scalar()
    assert last_seen == 3


def test_subscriptions_stay_on_the_loop_of_the_first_one(async_url, schema, run):
    store = AsyncEventStore(async_url, schema=schema)

    async def first() -> None:
        await store.subscribe(ALL_STREAM)

    run(first())

    async def elsewhere() -> None:
        await store.subscribe(ALL_STREAM)

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(elsewhere())
    run(store.close())


def test_bad_subscription_arguments_raise_before_anything_starts(async_url, schema, run):
    store = AsyncEventStore(async_url, schema=schema)
    with pytest.raises(ValueError, match="subscription_name"):
        run(store.subscribe_to_stream("s", ""))
    with pytest.raises(ValueError, match="buffer_size"):
        run(store.subscribe_to_all_streams("p", buffer_size=0))
    with pytest.raises(TypeError, match="handler"):
        run(store.subscribe(ALL_STREAM, handler=42))  # type: ignore[arg-type]
    assert store_threads(schema) == []  # nothing was started
    run(store.close())


# -- one schema, both APIs ------------------------------------------------------------------


def test_a_sync_and_an_async_store_see_each_others_events_and_share_the_lock(
    async_url, schema, run, make_store
):
    sync_store: EventStore = make_store(schema=schema, init=False, subscription_retry_interval=0.2)
    holder = sync_store.subscribe_to_all_streams("shared", buffer_size=10)
    assert holder.wait_subscribed(WAIT)
    async_store = AsyncEventStore(async_url, schema=schema, subscription_retry_interval=0.2)
    try:
        standby: AsyncSubscription = run(
            async_store.subscribe_to_all_streams("shared", buffer_size=10)
        )
        transient: AsyncSubscription = run(async_store.subscribe(ALL_STREAM))
        # The async store's events reach the sync subscriber, the sync
        # store's the async transient one; the lock stays with the holder.
        run(async_store.append_to_stream("from-async", 0, events(2)))
        sync_store.append_to_stream("from-sync", 0, events(1))
        batch = holder.receive(timeout=WAIT)
        while len(batch) < 3:
            batch = batch + holder.receive(timeout=WAIT)
        assert numbers(batch) == [1, 2, 3]
        seen = numbers(run(transient.receive(timeout=WAIT)))
        while len(seen) < 3:
            seen += numbers(run(transient.receive(timeout=WAIT)))
        assert seen == [1, 2, 3]
        assert not run(standby.wait_subscribed(0.6))
        assert standby.status == "disconnected"
        holder.ack(2)  # 3 stays unacknowledged
        sync_store.close()  # releases the lock, checkpoint 2 written
        # The async store takes over from the checkpoint.
        assert run(standby.wait_subscribed(WAIT))
        assert numbers(run(standby.receive(timeout=WAIT))) == [3]
    finally:
        run(async_store.close())
    assert eventually(lambda: not store_threads(schema))
