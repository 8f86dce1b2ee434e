"""Server-side prepared statements on psycopg2: once per connection, never in the way.

Appends and page reads run as ``EXECUTE`` of statements prepared once per
pooled connection (psycopg 3 prepares on its own). What must hold: results are
the same, a statement deallocated behind the store's back is prepared again,
a caller's rolled-back transaction does not lose it, and a store behind a
transaction-mode pooler (``session_mode_url``) prepares nothing.
"""

from __future__ import annotations

from sqlalchemy import event

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData


def events(n: int) -> list[EventData]:
    return [EventData("E", {"n": i}) for i in range(n)]


def prepared_names(store) -> set[str]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").all()
        conn.rollback()
    return {name for (name,) in rows}


class Log:
    def __init__(self, engine):
        self.engine, self.statements = engine, []

    def __call__(self, conn, cursor, statement, *args):
        self.statements.append(statement)

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self)


def test_appends_and_reads_are_prepared_once_per_connection(make_store):
    store = make_store(driver="psycopg2")
    with Log(store.engine) as log:
        for i in range(3):
            store.append_to_stream("s", ANY_VERSION, events(2))
            assert len(store.read_stream_forward("s")) == 2 * (i + 1)
    prepares = [s for s in log.statements if s.startswith("PREPARE ")]
    executes = [s for s in log.statements if s.startswith("EXECUTE ")]
    assert len(prepares) == 2  # the append and the forward read, once each
    assert len(executes) == 6
    names = prepared_names(store)
    assert store._sql.prepared_append.name in names
    assert store._sql.prepared_read_forward.name in names


def test_a_deallocated_statement_is_prepared_again(make_store):
    store = make_store(driver="psycopg2")
    store.append_to_stream("s", 0, events(1))
    store.append_to_stream("s", 1, events(1))  # prepares the "existing stream" variant
    with store.engine.connect() as conn:  # the pool's one connection
        conn.exec_driver_sql("DEALLOCATE ALL")
        conn.commit()
    assert store._sql.prepared_append_existing.name not in prepared_names(store)
    with Log(store.engine) as log:
        store.append_to_stream("s", 2, events(1))
    assert [s.split()[0] for s in log.statements] == ["EXECUTE", "PREPARE", "EXECUTE"]
    assert [e.event_number for e in store.read_all_streams_forward()] == [1, 2, 3]


def test_a_rolled_back_transaction_keeps_the_statement(make_store):
    store = make_store(driver="psycopg2")
    with store.engine.connect() as conn:
        store.append_to_stream("s", 0, events(1), conn=conn)
        conn.rollback()
        store.append_to_stream("s", 0, events(2), conn=conn)
        conn.commit()
    assert [e.data["n"] for e in store.read_stream_forward("s")] == [0, 1]
    assert store.stream_info(ALL_STREAM).stream_version == 2


def test_no_prepared_statements_behind_a_transaction_mode_pooler(make_store, database_url):
    store = make_store(driver="psycopg2", session_mode_url=database_url)
    with Log(store.engine) as log:
        store.append_to_stream("s", 0, events(1))
        store.read_stream_forward("s")
    assert not [s for s in log.statements if s.startswith(("PREPARE", "EXECUTE"))]


def test_psycopg3_prepares_by_itself(make_store):
    store = make_store(driver="psycopg")
    with Log(store.engine) as log:
        store.append_to_stream("s", 0, events(1))
    assert not [s for s in log.statements if s.startswith(("PREPARE", "EXECUTE"))]
