"""``global_order="sequencer"`` on the async API: numbering after the caller's commit.

The contract modules run the async store in sequencer mode too (conftest.py);
this module covers what only ``conn=`` on the async API has: an
``AsyncSession``'s commit numbers its events before ``commit()`` returns,
without holding up the event loop and outside the committed transaction; an
``AsyncConnection``'s commit is followed by the numbering; a rollback numbers
nothing; and the async sequencer shares a schema with sync lock-mode writers.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore.asyncio import AsyncEventStore
from sqlalchemy_eventstore.commands import check
from tests.async_facade import LoopThread

from .sequencer_helpers import (
    all_rows,
    assert_gap_free_in_stream_order,
    commit_behind_the_hooks,
    eventually,
    waiting,
)

ASYNC_DRIVERS = {"psycopg": "postgresql+psycopg", "asyncpg": "postgresql+asyncpg"}
Run = Callable[[Coroutine[Any, Any, Any]], Any]


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
def run(loop_thread: LoopThread) -> Run:
    return loop_thread.run


def events(n: int, tag: str = "e") -> list[EventData]:
    return [EventData("T", {"tag": tag, "i": i}) for i in range(n)]


def test_async_session_commit_numbers_the_events_before_it_returns(
    async_url: URL, schema: str, run: Run, admin_engine: Engine
) -> None:
    async def scenario() -> None:
        engine = create_async_engine(async_url)
        store = AsyncEventStore(engine, schema=schema, global_order="sequencer")
        try:
            await store.init()
            async with AsyncSession(engine) as session:
                await store.append_to_stream("s", 0, events(2), conn=session)
                await store.append_to_stream("t", 0, events(1), conn=session)
                assert all_rows(admin_engine, schema) == []
                await session.commit()
                assert all_rows(admin_engine, schema) == [(1, "s", 1), (2, "s", 2), (3, "t", 1)]
                # The session goes on: its next transaction is watched again.
                await store.append_to_stream("s", 2, events(1), conn=session)
                await session.commit()
                assert all_rows(admin_engine, schema)[-1] == (4, "s", 3)
            # `async with session.begin()` commits through the same event.
            async with AsyncSession(engine) as session, session.begin():
                await store.append_to_stream("u", 0, events(1), conn=session)
            assert all_rows(admin_engine, schema)[-1] == (5, "u", 1)
            assert waiting(admin_engine, schema) == 0
        finally:
            await store.close()
            await engine.dispose()

    run(scenario())


def test_async_rollback_leaves_nothing_in_all(
    async_url: URL, schema: str, run: Run, admin_engine: Engine
) -> None:
    async def scenario() -> None:
        engine = create_async_engine(async_url)
        store = AsyncEventStore(engine, schema=schema, global_order="sequencer")
        try:
            await store.init()
            async with AsyncSession(engine) as session:
                await store.append_to_stream("s", 0, events(2), conn=session)
                await session.rollback()
            async with engine.connect() as conn:
                await store.append_to_stream("c", 0, events(1), conn=conn)
                await conn.rollback()
            async with engine.connect() as conn:
                await store.append_to_stream("d", 0, events(1), conn=conn)
                # Leaving the block without a commit rolls it back.
            await store.append_to_stream("t", 0, events(1))
            assert await store.advance_all_stream() < 0  # nothing waited
            read = await store.read_all_streams_forward()
            assert [(e.event_number, e.stream_uuid) for e in read] == [(1, "t")]
            assert (await store.stream_info(ALL_STREAM)).stream_version == 1
        finally:
            await store.close()
            await engine.dispose()

    run(scenario())
    assert all_rows(admin_engine, schema) == [(1, "t", 1)]
    assert waiting(admin_engine, schema) == 0


def test_async_connection_commit_is_followed_by_numbering(
    async_url: URL, schema: str, run: Run, admin_engine: Engine
) -> None:
    async def scenario() -> None:
        engine = create_async_engine(async_url)
        store = AsyncEventStore(engine, schema=schema, global_order="sequencer")
        try:
            await store.init()
            async with engine.begin() as conn:
                await store.append_to_stream("a", 0, events(2), conn=conn)
                await store.append_to_stream("b", 0, events(1), conn=conn)
            async with engine.connect() as conn:
                await store.append_to_stream("c", 0, events(1), conn=conn)
                await conn.commit()

            # The commit event fires before the commit: a task of the store's
            # waits for the outcome, then numbers. Nothing reads $all here.
            async def numbered() -> None:
                while len(all_rows(admin_engine, schema)) < 4:
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(numbered(), 10)
        finally:
            await store.close()
            await engine.dispose()

    run(scenario())
    assert all_rows(admin_engine, schema) == [(1, "a", 1), (2, "a", 2), (3, "b", 1), (4, "c", 1)]


def test_numbering_after_an_async_commit_leaves_the_loop_running(
    async_url: URL, schema: str, run: Run, admin_engine: Engine
) -> None:
    """While ``commit()`` waits for the numbering (here: for the ``$all`` row,
    locked by someone else), the events are committed already, other
    coroutines run, and the store's other calls go on."""

    async def scenario() -> None:
        engine = create_async_engine(async_url)
        store = AsyncEventStore(engine, schema=schema, global_order="sequencer")
        try:
            await store.init()
            await store.append_to_stream("other", 0, events(1))
            with admin_engine.connect() as holder:
                holder.execution_options(isolation_level="READ COMMITTED")  # not autocommit
                async with AsyncSession(engine) as session:
                    await store.append_to_stream("s", 0, events(2), conn=session)
                    with holder.begin():
                        holder.exec_driver_sql(
                            f'SELECT 1 FROM "{schema}".streams WHERE stream_id = 0 FOR UPDATE'
                        )
                        commit = asyncio.ensure_future(session.commit())
                        # The numbering waits for the row; the loop runs on
                        # meanwhile (this coroutine, another store call).
                        await asyncio.wait_for(_sequencer_blocked(admin_engine), 10)
                        assert [e.event_number for e in await store.read_stream_forward("other")]
                        # Committed, but not numbered while $all is held.
                        assert await asyncio.to_thread(_committed_version, admin_engine, schema)
                        assert not commit.done()
                        assert len(all_rows(admin_engine, schema)) == 1
                    # The holder let go: the numbering, then commit(), finish.
                    await asyncio.wait_for(commit, 10)
                    assert all_rows(admin_engine, schema)[1:] == [(2, "s", 1), (3, "s", 2)]
        finally:
            await store.close()
            await engine.dispose()

    run(scenario())


async def _sequencer_blocked(admin_engine: Engine) -> None:
    """Return once a session running the sequencer waits on a lock."""

    def blocked() -> bool:
        with admin_engine.connect() as conn:
            return bool(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query ~ 'eventstore_(sequence|help)\\(' AND pid <> pg_backend_pid()"
                ).scalar()
            )

    while not await asyncio.to_thread(blocked):
        await asyncio.sleep(0.01)


def _committed_version(admin_engine: Engine, schema: str) -> int:
    with admin_engine.connect() as conn:
        version = conn.exec_driver_sql(
            f"""SELECT stream_version FROM "{schema}".streams WHERE stream_uuid = 's'"""
        ).scalar()
    return int(version or 0)


def test_reading_all_inside_the_appending_async_transaction(
    async_url: URL, schema: str, run: Run
) -> None:
    """The documented difference: inside the appending transaction the events
    are in their stream, not yet in ``$all`` (lock mode shows them there)."""

    async def scenario() -> None:
        engine = create_async_engine(async_url)
        store = AsyncEventStore(engine, schema=schema, global_order="sequencer")
        try:
            await store.init()
            await store.append_to_stream("before", 0, events(1))
            async with AsyncSession(engine) as session:
                await store.append_to_stream("s", 0, events(2), conn=session)
                own = await store.read_stream_forward("s", conn=session)
                assert [e.event_number for e in own] == [1, 2]
                inside = await store.read_all_streams_forward(conn=session)
                assert [e.stream_uuid for e in inside] == ["before"]
                assert (await store.stream_info(ALL_STREAM, conn=session)).stream_version == 1
                await session.commit()
            after = await store.read_all_streams_forward()
            assert [e.stream_uuid for e in after] == ["before", "s", "s"]
        finally:
            await store.close()
            await engine.dispose()

    run(scenario())


def test_sync_lock_writers_and_async_sequencer_writers_stay_gap_free(
    async_url: URL,
    database_url: URL,
    schema: str,
    loop_thread: LoopThread,
    admin_engine: Engine,
) -> None:
    """Lock-mode appends on threads of a sync store, sequencer-mode appends
    from coroutines of an async store (on the loop's thread, plain and through
    AsyncSessions, some rolled back), to shared and own streams at once:
    ``$all`` stays gap-free and in stream order, and ``eventstore check`` agrees."""
    lock = EventStore(database_url, schema=schema)
    lock.init()
    store = AsyncEventStore(async_url, schema=schema, global_order="sequencer")
    shared = [f"shared-{i}" for i in range(3)]
    errors: list[BaseException] = []
    rolled_back = 0

    def sync_writer(k: int) -> None:
        try:
            for r in range(25):
                name = shared[(k + r) % 3] if r % 2 else f"lock-{k}"
                lock.append_to_stream(name, ANY_VERSION, events(1 + r % 3, tag=f"l{k}-{r}"))
        except BaseException as error:  # reported below
            errors.append(error)

    async def async_writer(k: int) -> None:
        nonlocal rolled_back
        for r in range(25):
            name = shared[(k + r) % 3] if r % 2 else f"seq-{k}"
            batch = events(1 + r % 3, tag=f"s{k}-{r}")
            if r % 5 == 0:
                async with AsyncSession(store.engine) as session:
                    await store.append_to_stream(name, ANY_VERSION, batch, conn=session)
                    if r % 10 == 0:
                        await session.rollback()
                        rolled_back += len(batch)
                    else:
                        await session.commit()
            else:
                await store.append_to_stream(name, ANY_VERSION, batch)

    async def async_writers() -> None:
        await asyncio.gather(*(async_writer(k) for k in range(4)))

    try:
        threads = [threading.Thread(target=sync_writer, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        loop_thread.run(async_writers())
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert eventually(lambda: waiting(admin_engine, schema) == 0)
    finally:
        loop_thread.run(store.close())
        lock.close()
    rows = all_rows(admin_engine, schema)
    assert_gap_free_in_stream_order(rows)
    sync_events = 3 * sum(1 + r % 3 for r in range(25))
    async_events = 4 * sum(1 + r % 3 for r in range(25)) - rolled_back
    assert rolled_back > 0
    assert len(rows) == sync_events + async_events
    report = check(database_url, schema, quiet=True)
    assert report.violations() == []


def test_async_all_subscribers_get_events_nobody_numbered(
    async_url: URL, database_url: URL, schema: str, run: Run, admin_engine: Engine
) -> None:
    """Appends committed but never numbered (their writer died after its
    commit) reach the async store's subscribers to ``$all``, with no other
    writer: its subscriptions' runner numbers what waits now and then, on the
    store's loop, as the sync store's does."""
    writer = EventStore(database_url, schema=schema, global_order="sequencer")
    writer.init()
    store = AsyncEventStore(async_url, schema=schema, global_order="sequencer")

    def orphan(stream: str, count: int) -> None:
        with writer.engine.connect() as conn:
            conn.begin()
            writer.append_to_stream(stream, ANY_VERSION, events(count, tag=stream), conn=conn)
            commit_behind_the_hooks(conn)
            conn.rollback()

    async def scenario() -> tuple[list[Any], list[Any]]:
        live = await store.subscribe(ALL_STREAM)
        orphan("before", 2)  # waits unnumbered when the persistent one starts
        projector = await store.subscribe_to_all_streams("projector", buffer_size=10)
        assert await projector.wait_subscribed(10)
        caught_up = await projector.receive(timeout=10)
        await projector.ack(caught_up)
        orphan("after", 1)
        heard = [e for batch in [await live.receive(timeout=10)] for e in batch]
        while len(heard) < 3:
            heard += await live.receive(timeout=10)
        caught_up += await projector.receive(timeout=10)
        return heard, caught_up

    try:
        heard, caught_up = run(scenario())
        expected = [(1, "before"), (2, "before"), (3, "after")]
        assert [(e.event_number, e.stream_uuid) for e in heard] == expected
        assert [(e.event_number, e.stream_uuid) for e in caught_up] == expected
        assert waiting(admin_engine, schema) == 0
    finally:
        run(store.close())
        writer.close()
