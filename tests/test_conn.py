"""``conn=``: operations inside the caller's transaction (a Session or a Connection).

The store joins the caller's transaction and never commits or rolls it back:
the caller's commit makes everything durable and visible, its rollback
discards it, together with the application's own writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData, SnapshotData
from sqlalchemy_eventstore.errors import (
    SnapshotNotFoundError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)


def make_events(count: int, tag: str = "e") -> list[EventData]:
    return [EventData("TestEvent", {"tag": tag, "n": n}) for n in range(1, count + 1)]


@dataclass
class Tx:
    """The caller's side: a conn to pass, and its commit/rollback."""

    conn: Session | Connection
    kind: str

    def execute(self, statement: str, **params: Any) -> Any:
        return self.conn.execute(text(statement), params)

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def in_transaction(self) -> bool:
        return self.conn.in_transaction()


@pytest.fixture(params=["session", "connection"])
def open_tx(request, store):
    """Opens caller transactions of one kind on the store's engine."""
    opened: list[Session | Connection] = []

    @contextmanager
    def factory(engine=None) -> Iterator[Tx]:
        engine = engine or store.engine
        if request.param == "session":
            conn: Session | Connection = Session(engine)
        else:
            conn = engine.connect()
            conn.begin()
        opened.append(conn)
        try:
            yield Tx(conn, request.param)
        finally:
            conn.close()

    yield factory
    for conn in opened:
        conn.close()


@pytest.fixture
def app_table(store, admin_engine):
    """An application table next to the event store's, in the same schema."""
    name = f'"{store.schema}".orders'
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id text PRIMARY KEY, total int NOT NULL)")
    return name


def count_rows(admin_engine, table: str) -> int:
    with admin_engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar())


def test_caller_rollback_discards_events(store, open_tx):
    with open_tx() as tx:
        store.append_to_stream("s", 0, make_events(3), conn=tx.conn)
        tx.rollback()

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("s")
    assert store.read_all_streams_forward() == []
    assert store.stream_info(ALL_STREAM).stream_version == 0


def test_caller_commit_makes_events_durable(store, open_tx):
    with open_tx() as tx:
        store.append_to_stream("s", 0, make_events(3), conn=tx.conn)
        tx.commit()

    assert [e.event_number for e in store.read_stream_forward("s")] == [1, 2, 3]
    assert store.stream_info(ALL_STREAM).stream_version == 3


def test_events_and_application_rows_commit_together(store, open_tx, app_table, admin_engine):
    with open_tx() as tx:
        tx.execute(f"INSERT INTO {app_table} (id, total) VALUES ('order-1', 30)")
        store.append_to_stream("order-1", 0, make_events(2), conn=tx.conn)
        tx.execute(f"UPDATE {app_table} SET total = 31 WHERE id = 'order-1'")
        tx.commit()

    with admin_engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT id, total FROM {app_table}").all()
    assert [tuple(r) for r in rows] == [("order-1", 31)]
    assert len(store.read_stream_forward("order-1")) == 2


def test_events_and_application_rows_roll_back_together(store, open_tx, app_table, admin_engine):
    with open_tx() as tx:
        tx.execute(f"INSERT INTO {app_table} (id, total) VALUES ('order-1', 30)")
        store.append_to_stream("order-1", 0, make_events(2), conn=tx.conn)
        tx.rollback()

    assert count_rows(admin_engine, app_table) == 0
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("order-1")


def test_failed_application_write_rolls_back_the_events(store, open_tx, app_table, admin_engine):
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f"INSERT INTO {app_table} (id, total) VALUES ('dup', 1)")

    with open_tx() as tx:
        store.append_to_stream("s", 0, make_events(1), conn=tx.conn)
        with pytest.raises(Exception, match="duplicate key"):
            tx.execute(f"INSERT INTO {app_table} (id, total) VALUES ('dup', 2)")
        tx.rollback()

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("s")


def test_reads_through_conn_see_the_uncommitted_events(store, open_tx):
    store.append_to_stream("committed", 0, make_events(1, "committed"))

    with open_tx() as tx:
        store.append_to_stream("s", 0, make_events(3), conn=tx.conn)
        own = store.read_stream_forward("s", conn=tx.conn)
        store.link_to_stream("linked", 0, [e.event_id for e in own], conn=tx.conn)

        assert [e.data["n"] for e in store.read_stream_forward("s", conn=tx.conn)] == [1, 2, 3]
        assert [e.event_number for e in store.read_stream_backward("s", conn=tx.conn)] == [3, 2, 1]
        assert [
            e.event_number for e in store.stream_forward("s", read_batch_size=1, conn=tx.conn)
        ] == [1, 2, 3]
        assert [
            e.event_number for e in store.stream_backward("s", read_batch_size=2, conn=tx.conn)
        ] == [3, 2, 1]
        # Lock mode numbers the events into $all inside the transaction;
        # sequencer mode after its commit (documented): $all shows only
        # what was committed before.
        head = 4 if store.global_order == "lock" else 1
        assert [e.event_number for e in store.read_all_streams_forward(conn=tx.conn)] == list(
            range(1, head + 1)
        )
        assert [e.event_number for e in store.read_all_streams_backward(conn=tx.conn)] == list(
            range(head, 0, -1)
        )
        assert len(list(store.stream_all_forward(read_batch_size=3, conn=tx.conn))) == head
        assert len(list(store.stream_all_backward(read_batch_size=3, conn=tx.conn))) == head
        assert len(store.read_stream_forward("linked", conn=tx.conn)) == 3
        assert store.stream_info("s", conn=tx.conn).stream_version == 3
        assert store.stream_info(ALL_STREAM, conn=tx.conn).stream_version == head
        page = store.paginate_streams(conn=tx.conn)
        assert [s.stream_uuid for s in page.entries] == ["$all", "committed", "s", "linked"]
        tx.rollback()

    assert [s.stream_uuid for s in store.paginate_streams().entries] == ["$all", "committed"]


def test_other_connections_do_not_see_uncommitted_events(store, open_tx, admin_engine):
    events_table = f'"{store.schema}".events'
    with open_tx() as tx:
        store.append_to_stream("s", 0, make_events(2), conn=tx.conn)

        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward("s")
        assert store.read_all_streams_forward() == []
        assert store.stream_info(ALL_STREAM).stream_version == 0
        assert [s.stream_uuid for s in store.paginate_streams().entries] == ["$all"]
        assert count_rows(admin_engine, events_table) == 0

        tx.commit()

    assert len(store.read_stream_forward("s")) == 2
    assert count_rows(admin_engine, events_table) == 2


def test_store_never_commits_the_callers_transaction(make_store, driver, admin_engine):
    """Every write through conn= stays undone until the caller commits."""
    store = make_store(driver=driver, enable_hard_deletes=True)
    store.append_to_stream("soft", 0, make_events(2))
    store.append_to_stream("hard", 0, make_events(2))
    store.record_snapshot(SnapshotData("old-snap", 1, "T", {"v": 1}))

    for kind in ("session", "connection"):
        if kind == "session":
            conn: Session | Connection = Session(store.engine)
        else:
            conn = store.engine.connect()
        try:
            store.append_to_stream("new", 0, make_events(2), conn=conn)
            store.append_to_stream("new", 2, make_events(1), conn=conn)
            store.link_to_stream("links", 0, store.read_stream_forward("soft"), conn=conn)
            store.delete_stream("soft", 2, conn=conn)
            store.delete_stream("hard", 2, hard=True, conn=conn)
            store.record_snapshot(SnapshotData("snap", 1, "T", {"v": 1}), conn=conn)
            store.delete_snapshot("old-snap", conn=conn)

            assert conn.in_transaction()
            assert store.read_snapshot("snap", conn=conn).data == {"v": 1}
            conn.rollback()
        finally:
            conn.close()

        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward("new")
        with pytest.raises(StreamNotFoundError):
            store.read_stream_forward("links")
        assert len(store.read_stream_forward("soft")) == 2
        assert len(store.read_stream_forward("hard")) == 2
        with pytest.raises(SnapshotNotFoundError):
            store.read_snapshot("snap")
        assert store.read_snapshot("old-snap").data == {"v": 1}
        assert count_rows(admin_engine, f'"{store.schema}".events') == 4


def test_connection_without_begin_autobegins_and_stays_open(store):
    with store.engine.connect() as conn:
        assert not conn.in_transaction()
        store.append_to_stream("s", 0, make_events(1), conn=conn)
        assert conn.in_transaction()
        conn.rollback()

    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward("s")


def test_several_operations_in_one_transaction(store, open_tx):
    with open_tx() as tx:
        store.append_to_stream("s", 0, make_events(2), conn=tx.conn)
        store.append_to_stream("s", 2, make_events(1), conn=tx.conn)
        with pytest.raises(WrongExpectedVersionError):
            store.append_to_stream("s", 2, make_events(1), conn=tx.conn)
        # A domain error raised by the store leaves the caller's transaction usable.
        store.append_to_stream("s", ANY_VERSION, make_events(1), conn=tx.conn)
        assert tx.in_transaction()
        tx.commit()

    assert [e.event_number for e in store.read_stream_forward("s")] == [1, 2, 3, 4]


def test_session_with_orm_work_and_events(store, admin_engine, app_table):
    with Session(store.engine) as session, session.begin():
        session.execute(text(f"INSERT INTO {app_table} VALUES ('o-9', 9)"))
        store.append_to_stream("o-9", 0, make_events(1), conn=session)
        store.record_snapshot(SnapshotData("o-9", 1, "Order", {"total": 9}), conn=session)

    assert count_rows(admin_engine, app_table) == 1
    assert store.read_snapshot("o-9").data == {"total": 9}
    assert len(store.read_stream_forward("o-9")) == 1


def test_conn_on_another_engine_of_the_same_database(store, admin_engine, open_tx):
    """conn= may come from any engine on the database: the caller's own, say."""
    with open_tx(admin_engine.execution_options(isolation_level="READ COMMITTED")) as tx:
        store.append_to_stream("s", 0, make_events(1), conn=tx.conn)
        tx.commit()

    assert len(store.read_stream_forward("s")) == 1
