"""What only the async API's storage calls have: AsyncSession/AsyncConnection as
``conn=``, cancellation, engine ownership (subscriptions: test_asyncio_subscriptions.py).

The storage contract itself runs on the async API through the contract modules
(``driver`` async-psycopg / async-asyncpg, see conftest.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from sqlalchemy_eventstore import EventData, EventStore
from sqlalchemy_eventstore.asyncio import AsyncEventStore
from sqlalchemy_eventstore.errors import StreamNotFoundError, WrongExpectedVersionError
from tests.async_facade import LoopThread

ASYNC_DRIVERS = {"psycopg": "postgresql+psycopg", "asyncpg": "postgresql+asyncpg"}


@pytest.fixture(params=list(ASYNC_DRIVERS))
def async_url(request: pytest.FixtureRequest, database_url: URL) -> URL:
    return database_url.set(drivername=ASYNC_DRIVERS[request.param])


@pytest.fixture
def schema(admin_engine: Engine) -> Iterator[str]:
    name = f"es_{uuid.uuid4().hex[:12]}"
    yield name
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture
def run(loop_thread: LoopThread) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    return loop_thread.run


def events(n: int) -> list[EventData]:
    return [EventData("E", {"n": i}) for i in range(n)]


def test_conn_async_session_commit_and_rollback_decide(async_url, schema, run):
    async def scenario() -> tuple[list[int], bool]:
        engine = create_async_engine(async_url)
        try:
            store = AsyncEventStore(engine, schema=schema)
            await store.init()
            async with AsyncSession(engine) as session:
                await store.append_to_stream("kept", 0, events(2), conn=session)
                # Visible inside the transaction, not outside until it commits.
                inside = await store.read_stream_forward("kept", conn=session)
                try:
                    await store.read_stream_forward("kept")
                    outside_before_commit = True
                except StreamNotFoundError:
                    outside_before_commit = False
                await session.commit()
            async with AsyncSession(engine) as session:
                await store.append_to_stream("dropped", 0, events(1), conn=session)
                await session.rollback()
            with pytest.raises(StreamNotFoundError):
                await store.read_stream_forward("dropped")
            kept = await store.read_stream_forward("kept")
            assert [e.event_number for e in inside] == [1, 2]
            await store.close()
            return [e.event_number for e in kept], outside_before_commit
        finally:
            await engine.dispose()

    numbers, seen_early = run(scenario())
    assert numbers == [1, 2]
    assert seen_early is False


def test_conn_async_connection_joins_and_never_commits(async_url, schema, run):
    async def scenario() -> None:
        engine = create_async_engine(async_url)
        try:
            store = AsyncEventStore(engine, schema=schema)
            await store.init()
            async with engine.connect() as conn:
                await store.append_to_stream("s", 0, events(3), conn=conn)
                await store.delete_stream("s", conn=conn)
                # Leaving the block without commit rolls everything back.
            info = None
            with pytest.raises(StreamNotFoundError):
                info = await store.stream_info("s")
            assert info is None
            with pytest.raises(WrongExpectedVersionError):
                async with engine.begin() as conn:
                    await store.append_to_stream("t", 0, events(1), conn=conn)
                    await store.append_to_stream("t", 0, events(1), conn=conn)
            # The failed append left the block, which rolled both back.
            with pytest.raises(StreamNotFoundError):
                await store.stream_info("t")
        finally:
            await engine.dispose()

    run(scenario())


def test_cancelling_a_call_leaves_no_connection_or_transaction(
    async_url, schema, run, make_store, admin_engine
):
    name = f"cancel_{uuid.uuid4().hex[:8]}"
    sync_store: EventStore = make_store(schema=schema)
    sync_store.append_to_stream("s", 0, events(1))

    async def scenario() -> tuple[int, int]:
        store = AsyncEventStore(async_url, schema=schema, name=name)
        try:
            await store.append_to_stream("s", 1, events(1))  # a pooled connection exists
            blocker = await store.engine.connect()
            await blocker.exec_driver_sql(
                f"SELECT 1 FROM \"{schema}\".streams WHERE stream_uuid = 's' FOR UPDATE"
            )
            # This append waits on the stream row's lock; cancel it while it waits.
            task = asyncio.create_task(store.append_to_stream("s", 2, events(1)))
            await asyncio.sleep(0.5)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await blocker.rollback()
            await blocker.close()
            pool: Any = store.engine.pool
            checked_out = pool.checkedout()
            # The store still works, and nothing of the cancelled append was written.
            await store.append_to_stream("s", 2, events(1))
            version = (await store.stream_info("s")).stream_version
            return checked_out, version
        finally:
            await store.close()

    checked_out, version = run(scenario())
    assert checked_out == 0
    assert version == 3
    with admin_engine.connect() as conn:
        open_tx = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                "AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')"
            ),
            {"name": name},
        ).scalar()
    assert open_tx == 0


def test_close_disposes_only_an_engine_it_made(async_url, schema, run):
    async def scenario() -> tuple[bool, bool, int]:
        engine = create_async_engine(async_url)
        try:
            shared = AsyncEventStore(engine, schema=schema)
            await shared.init()
            await shared.append_to_stream("s", 0, events(1))
            await shared.close()
            # The caller's engine still serves: the store did not dispose of it.
            async with engine.connect() as conn:
                assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
            async with AsyncEventStore(async_url, schema=schema) as own:
                await own.read_stream_forward("s")
                pool: Any = own.engine.pool
                assert pool.checkedin() == 1
            return shared.owns_engine, own.owns_engine, pool.checkedin()
        finally:
            await engine.dispose()

    shared_owns, own_owns, left = run(scenario())
    assert (shared_owns, own_owns) == (False, True)
    assert left == 0  # disposed at close


def test_async_iterator_is_lazy_and_awaitable(async_url, schema, run):
    async def scenario() -> tuple[list[int], type[BaseException] | None]:
        async with AsyncEventStore(async_url, schema=schema) as store:
            await store.init()
            await store.append_to_stream("s", 0, events(5))
            numbers = [e.event_number async for e in store.stream_forward("s", read_batch_size=2)]
            lazy = store.stream_forward("missing")  # nothing read yet: no error
            raised: type[BaseException] | None = None
            try:
                await lazy
            except StreamNotFoundError as error:
                raised = type(error)
            return numbers, raised

    numbers, raised = run(scenario())
    assert numbers == [1, 2, 3, 4, 5]
    assert raised is StreamNotFoundError


def test_bad_input_raises_before_sql(async_url, run):
    store = AsyncEventStore(async_url, schema="unused_schema")
    with pytest.raises(ValueError, match="stream_uuid"):
        run(store.append_to_stream("", 0, events(1)))
    with pytest.raises(TypeError, match="conn"):
        run(store.read_stream_forward("s", conn=object()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_batch_size"):
        store.stream_forward("s", read_batch_size=0)
    run(store.close())


def test_urls_of_sync_drivers_are_refused():
    with pytest.raises(ValueError, match="postgresql\\+asyncpg"):
        AsyncEventStore("postgresql+psycopg2://u@localhost/db")
    with pytest.raises(TypeError, match="AsyncEngine"):
        AsyncEventStore(object())  # type: ignore[arg-type]


def test_global_order_is_validated():
    with pytest.raises(ValueError, match="global_order"):
        AsyncEventStore("postgresql+asyncpg://u@localhost/db", global_order="other")


def test_a_call_timeout_raises_store_timeout_with_nothing_written(async_url, schema, run):
    from sqlalchemy_eventstore.errors import StoreTimeoutError

    async def scenario() -> int:
        async with AsyncEventStore(async_url, schema=schema, timeout=5) as store:
            await store.init()
            await store.append_to_stream("s", 0, events(1))
            lock = f"SELECT 1 FROM \"{schema}\".streams WHERE stream_uuid = 's' FOR UPDATE"
            async with store.engine.connect() as blocker:
                await blocker.exec_driver_sql(lock)
                with pytest.raises(StoreTimeoutError):
                    await store.append_to_stream("s", 1, events(1), timeout=0.3)
                # The next call runs under the store's 5 s again, not the 0.3 s
                # the failed one left on its pooled connection: it outwaits a
                # lock held for 0.8 s.
                waiting = asyncio.create_task(store.append_to_stream("s", 1, events(1)))
                await asyncio.sleep(0.8)
                await blocker.rollback()
                await waiting
            return (await store.stream_info("s")).stream_version

    assert run(scenario()) == 2


def test_hard_delete_leaves_deletes_refused_afterwards(async_url, schema, run):
    async def scenario() -> str:
        async with AsyncEventStore(async_url, schema=schema, enable_hard_deletes=True) as store:
            await store.init()
            await store.append_to_stream("s", 0, events(2))
            await store.delete_stream("s", hard=True)
            async with store.engine.connect() as conn:
                value = await conn.exec_driver_sql(
                    "SELECT coalesce(current_setting('eventstore.enable_hard_deletes', true), '')"
                )
                return str(value.scalar())

    assert run(scenario()) in ("", "off")
