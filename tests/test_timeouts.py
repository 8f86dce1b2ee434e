"""Call timeouts: ``EventStore(timeout=...)`` and ``timeout=`` on every storage call.

A call that waits on the database longer than its timeout -- behind a lock
held by another transaction -- raises StoreTimeoutError and writes nothing.
The waits are real: another connection holds the locks.
"""

from __future__ import annotations

import math
import pickle
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from sqlalchemy_eventstore import (
    ANY_VERSION,
    NO_STREAM,
    EventData,
    EventStore,
    EventStoreError,
    SnapshotData,
    SnapshotNotFoundError,
    StoreTimeoutError,
    StreamNotFoundError,
)

SHORT = 0.3  # the timeout of calls expected to time out
RESCUE = 20.0  # a blocker is killed after this, so a broken timeout fails instead of hanging


def events(n: int = 1) -> list[EventData]:
    return [EventData("T", {"i": i}) for i in range(n)]


@contextmanager
def locked(admin_engine: Engine, database_url: URL, schema: str, *tables: str) -> Iterator[None]:
    """Another transaction holding ACCESS EXCLUSIVE locks on the schema's tables
    (every statement on them waits) -- or only the $all row when ``tables`` is
    ("$all",)."""
    engine = create_engine(database_url, poolclass=None)
    conn = engine.connect()
    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    conn.exec_driver_sql("SET lock_timeout = '10s'")  # a test mistake fails, never hangs
    if tables == ("$all",):
        conn.exec_driver_sql(f'SELECT 1 FROM "{schema}".streams WHERE stream_id = 0 FOR UPDATE')
    else:
        names = ", ".join(f'"{schema}".{t}' for t in tables or ("streams", "events", "snapshots"))
        conn.exec_driver_sql(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")

    def rescue() -> None:
        with admin_engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    timer = threading.Timer(RESCUE, rescue)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        try:
            conn.rollback()
            conn.close()
        finally:
            engine.dispose()


@pytest.fixture
def prepared(make_store: Callable[..., EventStore], driver: str) -> EventStore:
    store = make_store(driver=driver, enable_hard_deletes=True)
    store.append_to_stream("s", NO_STREAM, events(3))
    store.record_snapshot(SnapshotData("snap", 1, "T", {"v": 1}))
    return store


_first_id: dict[EventStore, str] = {}


def _state(store: EventStore) -> Any:
    """What a call that timed out must not have changed."""
    snapshot = store.read_snapshot("snap")
    return (
        [(e.stream_uuid, e.event_number) for e in store.read_all_streams_forward()],
        store.stream_info("s").status,
        (snapshot.source_version, snapshot.data),
        [i.stream_uuid for i in store.paginate_streams().entries],
    )


CALLS: dict[str, Callable[[EventStore, Any], Any]] = {
    "append": lambda s, t: s.append_to_stream("s", ANY_VERSION, events(2), timeout=t),
    "append new stream": lambda s, t: s.append_to_stream("new", NO_STREAM, events(), timeout=t),
    # The id of an event of "s" (read before anything is locked): see _first_id.
    "link": lambda s, t: s.link_to_stream("linked", ANY_VERSION, [_first_id[s]], timeout=t),
    "soft delete": lambda s, t: s.delete_stream("s", timeout=t),
    "hard delete": lambda s, t: s.delete_stream("s", hard=True, timeout=t),
    "read_stream_forward": lambda s, t: s.read_stream_forward("s", timeout=t),
    "read_stream_backward": lambda s, t: s.read_stream_backward("s", timeout=t),
    "read_all_streams_forward": lambda s, t: s.read_all_streams_forward(timeout=t),
    "read_all_streams_backward": lambda s, t: s.read_all_streams_backward(timeout=t),
    "stream_forward": lambda s, t: list(s.stream_forward("s", timeout=t)),
    "stream_backward": lambda s, t: list(s.stream_backward("s", timeout=t)),
    "stream_all_forward": lambda s, t: list(s.stream_all_forward(timeout=t)),
    "stream_all_backward": lambda s, t: list(s.stream_all_backward(timeout=t)),
    "stream_info": lambda s, t: s.stream_info("s", timeout=t),
    "paginate_streams": lambda s, t: s.paginate_streams(timeout=t),
    "record_snapshot": lambda s, t: s.record_snapshot(
        SnapshotData("snap", 2, "T", {"v": 2}), timeout=t
    ),
    "read_snapshot": lambda s, t: s.read_snapshot("snap", timeout=t),
    "delete_snapshot": lambda s, t: s.delete_snapshot("snap", timeout=t),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_storage_call_times_out_and_writes_nothing(
    prepared: EventStore, admin_engine: Engine, database_url: URL, call: str
):
    before = _state(prepared)
    _first_id[prepared] = prepared.read_stream_forward("s")[0].event_id
    with locked(admin_engine, database_url, prepared.schema), pytest.raises(StoreTimeoutError):
        CALLS[call](prepared, SHORT)
    assert _state(prepared) == before
    CALLS[call](prepared, 5.0)  # and the same call works once nothing blocks it
    del _first_id[prepared]


def test_the_stores_timeout_applies_when_a_call_names_none(
    make_store: Callable[..., EventStore], admin_engine: Engine, database_url: URL, driver: str
):
    store = make_store(driver=driver, timeout=SHORT)
    assert store.timeout == SHORT
    store.append_to_stream("s", NO_STREAM, events())
    with locked(admin_engine, database_url, store.schema), pytest.raises(StoreTimeoutError):
        store.append_to_stream("s", ANY_VERSION, events())
    assert store.stream_info("s").stream_version == 1


def test_a_plain_append_behind_a_long_conn_transaction_times_out(
    make_store: Callable[..., EventStore], driver: str
):
    """The case of the issue: a conn= transaction holds the $all lock until it
    commits; a plain append to another stream waits for it -- until its timeout."""
    store = make_store(driver=driver)
    with store.engine.connect() as conn, conn.begin():
        store.append_to_stream("a", ANY_VERSION, events(), conn=conn)
        with pytest.raises(StoreTimeoutError) as raised:
            store.append_to_stream("b", ANY_VERSION, events(), timeout=SHORT)
        assert raised.value.reason == "timeout"
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("b")
    store.append_to_stream("b", ANY_VERSION, events(), timeout=SHORT)
    assert [e.stream_uuid for e in store.read_all_streams_forward()] == ["a", "b"]


def test_timeout_none_waits_as_long_as_it_takes(
    make_store: Callable[..., EventStore], admin_engine: Engine, database_url: URL, driver: str
):
    store = make_store(driver=driver, timeout=SHORT)
    store.append_to_stream("s", NO_STREAM, events())
    with locked(admin_engine, database_url, store.schema, "$all"):
        done: list[Any] = []
        worker = threading.Thread(
            target=lambda: done.append(
                store.append_to_stream("s", ANY_VERSION, events(), timeout=None)
            )
        )
        worker.start()
        worker.join(1.0)  # several times SHORT: still waiting, not timed out
        assert worker.is_alive() and done == []
    worker.join(RESCUE)
    assert done == [None]
    assert store.stream_info("s").stream_version == 2


def test_a_calls_own_timeout_does_not_stick_to_the_pooled_connection(
    make_store: Callable[..., EventStore], admin_engine: Engine, database_url: URL, driver: str
):
    store = make_store(driver=driver, timeout=SHORT)
    store.append_to_stream("s", NO_STREAM, events(), timeout=60.0)
    store.read_stream_forward("s", timeout=None)
    with locked(admin_engine, database_url, store.schema), pytest.raises(StoreTimeoutError):
        store.read_stream_forward("s")  # the store's SHORT again


def test_the_later_batches_of_a_lazy_read_keep_the_timeout(
    prepared: EventStore, admin_engine: Engine, database_url: URL
):
    iterator = prepared.stream_forward("s", read_batch_size=1, timeout=SHORT)
    assert next(iterator).event_number == 1  # the first batch, read at the call
    with locked(admin_engine, database_url, prepared.schema), pytest.raises(StoreTimeoutError):
        next(iterator)


def _statement_timeout(conn: Any) -> str:
    return str(conn.execute(text("SHOW statement_timeout")).scalar())


@pytest.mark.parametrize("kind", ["connection", "session"])
def test_with_conn_the_callers_statement_timeout_is_restored(
    make_store: Callable[..., EventStore], driver: str, kind: str
):
    store = make_store(driver=driver)
    with store.engine.connect() as conn, conn.begin():
        given: Any = conn if kind == "connection" else Session(bind=conn)
        given.execute(text("SET LOCAL statement_timeout = '7s'"))
        store.append_to_stream("s", NO_STREAM, events(), conn=given, timeout=2.5)
        store.read_stream_forward("s", conn=given)
        store.stream_info("s", conn=given, timeout=None)
        assert _statement_timeout(given) == "7s"
    with store.engine.connect() as conn:
        assert _statement_timeout(conn) == "0"  # the transaction's SET LOCAL ended with it


def test_with_conn_a_timeout_leaves_the_callers_transaction_aborted(
    make_store: Callable[..., EventStore], admin_engine: Engine, database_url: URL, driver: str
):
    store = make_store(driver=driver)
    with store.engine.connect() as conn:
        conn.begin()
        store.record_snapshot(SnapshotData("mine", 1, "T", {}), conn=conn)
        with (
            locked(admin_engine, database_url, store.schema, "$all"),
            pytest.raises(StoreTimeoutError),
        ):
            store.append_to_stream("s", NO_STREAM, events(), conn=conn, timeout=SHORT)
        # As PostgreSQL leaves a transaction whose statement was cancelled:
        with pytest.raises(Exception, match="aborted"):
            conn.execute(text("SELECT 1"))
        conn.rollback()
        assert _statement_timeout(conn) == "0"
    assert store.read_all_streams_forward() == []
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot("mine")


def test_a_callers_engine_gets_its_pooled_connections_back_unchanged(
    make_store: Callable[..., EventStore],
    database_url: URL,
    admin_engine: Engine,
    driver: str,
):
    schema = make_store(driver=driver).schema
    engine = create_engine(
        database_url.set(drivername=f"postgresql+{driver}"), pool_size=1, max_overflow=0
    )
    try:
        store = EventStore(engine, schema=schema, timeout=SHORT)
        store.append_to_stream("s", NO_STREAM, events())
        store.read_stream_forward("s", timeout=3.0)
        with engine.connect() as conn:  # the one pooled connection the store used
            assert _statement_timeout(conn) == "0"
        with locked(admin_engine, database_url, schema), pytest.raises(StoreTimeoutError):
            store.read_stream_forward("s")
        with engine.connect() as conn:
            assert _statement_timeout(conn) == "0"
        store.close()
    finally:
        engine.dispose()


def test_through_a_transaction_pooler_the_timeout_lasts_one_transaction(
    make_store: Callable[..., EventStore], admin_engine: Engine, database_url: URL, driver: str
):
    """With session_mode_url the store's URL is taken for PgBouncer in
    transaction mode: no session setting may stay on its connections."""
    store = make_store(driver=driver, session_mode_url=database_url, timeout=SHORT)
    store.append_to_stream("s", NO_STREAM, events())
    with locked(admin_engine, database_url, store.schema), pytest.raises(StoreTimeoutError):
        store.read_stream_forward("s")
    with store.engine.connect() as conn:
        assert _statement_timeout(conn) == "0"


def test_waiting_for_a_pooled_connection_counts(make_store: Callable[..., EventStore], driver: str):
    store = make_store(driver=driver, timeout=SHORT)
    pool = store.engine.pool
    held = [store.engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
    try:
        with pytest.raises(StoreTimeoutError, match="pooled connection"):
            store.append_to_stream("s", NO_STREAM, events())
    finally:
        for conn in held:
            conn.close()
    store.append_to_stream("s", NO_STREAM, events())


def test_the_timeout_error():
    error = StoreTimeoutError("waited too long")
    assert isinstance(error, EventStoreError)
    assert isinstance(error, TimeoutError)
    assert error.reason == StoreTimeoutError.reason == "timeout"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is StoreTimeoutError and str(copy) == "waited too long"


@pytest.mark.parametrize(
    ("value", "exception"),
    [
        (0, ValueError),
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
def test_bad_timeouts_are_refused_naming_the_argument(
    make_store: Callable[..., EventStore], database_url: URL, value: Any, exception: type
):
    with pytest.raises(exception, match="timeout"):
        EventStore(database_url, timeout=value)
    store = make_store()
    with pytest.raises(exception, match="timeout"):
        store.append_to_stream("s", NO_STREAM, events(), timeout=value)
    with pytest.raises(exception, match="timeout"):
        store.read_stream_forward("s", timeout=value)
    assert store.paginate_streams().total_entries == 1  # only $all: nothing written


def test_a_new_stream_name_is_not_taken_by_a_timed_out_append(
    make_store: Callable[..., EventStore], driver: str
):
    store = make_store(driver=driver)
    name = f"stream-{uuid.uuid4()}"
    with store.engine.connect() as conn, conn.begin():
        store.append_to_stream("other", ANY_VERSION, events(), conn=conn)
        with pytest.raises(StoreTimeoutError):
            store.append_to_stream(name, NO_STREAM, events(), timeout=SHORT)
    store.append_to_stream(name, NO_STREAM, events())
    assert store.stream_info(name).stream_version == 1
