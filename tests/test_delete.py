"""Soft and hard deletion of streams.

Ports the reference's streams/soft_delete_stream_test.exs and
streams/hard_delete_stream_test.exs (subscription cases live with the
subscription tests), plus the defect the reference has: hard deleting a stream
that holds links to another stream's events must leave those events alone.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from sqlalchemy_eventstore import (
    ALL_STREAM,
    ANY_VERSION,
    NO_STREAM,
    STREAM_EXISTS,
    EventData,
    RecordedEvent,
)
from sqlalchemy_eventstore.errors import (
    CannotDeleteAllStreamError,
    HardDeletesNotEnabledError,
    StreamDeletedError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)


def make_events(count: int, tag: str = "e") -> list[EventData]:
    return [EventData("TestEvent", {"tag": tag, "n": n}) for n in range(1, count + 1)]


def numbers(events: list[RecordedEvent]) -> list[int]:
    return [e.event_number for e in events]


def table_count(admin_engine, schema: str, table: str) -> int:
    with admin_engine.connect() as conn:
        return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".{table}').scalar())


@pytest.fixture
def hard_store(make_store, driver):
    """A store with hard deletes enabled, once per driver."""
    return make_store(driver=driver, enable_hard_deletes=True)


# -- soft delete ----------------------------------------------------------------


@pytest.mark.parametrize("expected", [STREAM_EXISTS, ANY_VERSION, 3], ids=repr)
def test_soft_delete_succeeds_when_stream_exists(store, expected):
    store.append_to_stream("s", 0, make_events(3))

    assert store.delete_stream("s", expected) is None

    with pytest.raises(StreamDeletedError):
        store.read_stream_forward("s")


def test_soft_delete_is_the_default(store):
    store.append_to_stream("s", 0, make_events(3))

    store.delete_stream("s")

    with pytest.raises(StreamDeletedError) as info:
        store.read_stream_forward("s")
    assert info.value.reason == "stream_deleted"
    # Still there, marked deleted: the reference's soft delete removes nothing.
    [deleted] = [s for s in store.paginate_streams().entries if s.stream_uuid == "s"]
    assert deleted.status == "deleted"
    assert deleted.deleted_at is not None


@pytest.mark.parametrize("expected", [1, 0, 4])
def test_soft_delete_with_wrong_expected_version_fails_and_keeps_the_stream(store, expected):
    store.append_to_stream("s", 0, make_events(3))

    with pytest.raises(WrongExpectedVersionError) as info:
        store.delete_stream("s", expected)

    assert info.value.reason == "wrong_expected_version"
    assert numbers(store.read_stream_forward("s")) == [1, 2, 3]
    assert store.stream_info("s").status == "created"


def test_soft_delete_of_unknown_stream_fails(store):
    with pytest.raises(StreamNotFoundError):
        store.delete_stream("unknown", ANY_VERSION)
    with pytest.raises(StreamNotFoundError):
        store.delete_stream("unknown", STREAM_EXISTS)
    with pytest.raises(StreamNotFoundError):
        store.delete_stream("unknown", 0)
    assert [s.stream_uuid for s in store.paginate_streams().entries] == [ALL_STREAM]


def test_soft_delete_twice_fails_with_stream_deleted(store):
    store.append_to_stream("s", 0, make_events(3))
    store.delete_stream("s", ANY_VERSION)

    with pytest.raises(StreamDeletedError):
        store.delete_stream("s", ANY_VERSION)
    with pytest.raises(StreamDeletedError):
        store.delete_stream("s", 3)


def test_soft_deleted_stream_cannot_be_read(store):
    store.append_to_stream("s", 0, make_events(3))
    store.delete_stream("s")

    for read in (
        lambda: store.read_stream_forward("s"),
        lambda: store.read_stream_backward("s"),
        lambda: store.read_stream_forward("s", 2, 1),
        lambda: store.stream_forward("s"),
        lambda: store.stream_backward("s"),
        lambda: store.stream_info("s"),
    ):
        with pytest.raises(StreamDeletedError):
            read()


@pytest.mark.parametrize("expected", [3, ANY_VERSION, STREAM_EXISTS, NO_STREAM, 0], ids=repr)
def test_soft_deleted_stream_cannot_be_appended_to(store, expected):
    store.append_to_stream("s", 0, make_events(3))
    store.delete_stream("s")

    with pytest.raises(StreamDeletedError):
        store.append_to_stream("s", expected, make_events(1))

    assert len(store.read_all_streams_forward()) == 3


def test_soft_deleted_stream_cannot_be_linked_to(store):
    store.append_to_stream("s", 0, make_events(2))
    store.append_to_stream("other", 0, make_events(1))
    other_events = store.read_stream_forward("other")
    store.delete_stream("s")

    with pytest.raises(StreamDeletedError):
        store.link_to_stream("s", ANY_VERSION, other_events)


def test_cannot_delete_the_all_stream(store, make_store, driver):
    with pytest.raises(CannotDeleteAllStreamError) as info:
        store.delete_stream(ALL_STREAM, ANY_VERSION)
    assert info.value.reason == "cannot_delete_all_stream"

    hard = make_store(driver=driver, enable_hard_deletes=True)
    with pytest.raises(CannotDeleteAllStreamError):
        hard.delete_stream(ALL_STREAM, ANY_VERSION, hard=True)
    with pytest.raises(CannotDeleteAllStreamError):
        hard.delete_stream("$all", STREAM_EXISTS)
    assert hard.stream_info(ALL_STREAM).status == "created"


def test_reading_all_streams_includes_soft_deleted_events(store):
    store.append_to_stream("s", 0, make_events(3))
    store.delete_stream("s")

    events = store.read_all_streams_forward()

    assert numbers(events) == [1, 2, 3]
    assert {e.stream_uuid for e in events} == {"s"}
    assert numbers(store.stream_all_backward(read_batch_size=1)) == [3, 2, 1]


def test_reading_a_stream_includes_linked_events_of_soft_deleted_stream(store):
    store.append_to_stream("s1", 0, make_events(3))
    store.link_to_stream("s2", 0, store.read_stream_forward("s1"))

    store.delete_stream("s1")

    linked = store.read_stream_forward("s2")
    assert numbers(linked) == [1, 2, 3]
    assert [(e.stream_uuid, e.stream_version) for e in linked] == [("s1", 1), ("s1", 2), ("s1", 3)]


def test_soft_delete_leaves_other_streams_alone(store):
    store.append_to_stream("s1", 0, make_events(2))
    store.append_to_stream("s2", 0, make_events(2))

    store.delete_stream("s1")

    assert numbers(store.read_stream_forward("s2")) == [1, 2]
    store.append_to_stream("s2", 2, make_events(1))
    assert store.stream_info("s2").stream_version == 3


# -- hard delete ----------------------------------------------------------------


def test_hard_delete_requires_enable_hard_deletes(store):
    store.append_to_stream("s", 0, make_events(3))

    with pytest.raises(HardDeletesNotEnabledError) as info:
        store.delete_stream("s", STREAM_EXISTS, hard=True)

    assert info.value.reason == "not_supported"
    assert numbers(store.read_stream_forward("s")) == [1, 2, 3]
    assert len(store.read_all_streams_forward()) == 3


@pytest.mark.parametrize("expected", [STREAM_EXISTS, ANY_VERSION, 3], ids=repr)
def test_hard_delete_succeeds_when_stream_exists(hard_store, expected):
    hard_store.append_to_stream("s", 0, make_events(3))

    assert hard_store.delete_stream("s", expected, hard=True) is None

    with pytest.raises(StreamNotFoundError):
        hard_store.read_stream_forward("s")


def test_hard_delete_with_wrong_expected_version_deletes_nothing(hard_store, admin_engine):
    hard_store.append_to_stream("s", 0, make_events(3))

    with pytest.raises(WrongExpectedVersionError):
        hard_store.delete_stream("s", 1, hard=True)

    assert numbers(hard_store.read_stream_forward("s")) == [1, 2, 3]
    assert numbers(hard_store.read_all_streams_forward()) == [1, 2, 3]
    assert table_count(admin_engine, hard_store.schema, "events") == 3


def test_hard_delete_of_unknown_stream_fails(hard_store):
    with pytest.raises(StreamNotFoundError):
        hard_store.delete_stream("unknown", ANY_VERSION, hard=True)
    with pytest.raises(StreamNotFoundError):
        hard_store.delete_stream("unknown", STREAM_EXISTS, hard=True)


def test_hard_delete_of_soft_deleted_stream_fails_with_stream_deleted(hard_store):
    hard_store.append_to_stream("s", 0, make_events(3))
    hard_store.delete_stream("s", ANY_VERSION)

    with pytest.raises(StreamDeletedError):
        hard_store.delete_stream("s", ANY_VERSION, hard=True)

    assert len(hard_store.read_all_streams_forward()) == 3


def test_hard_delete_twice_fails_with_stream_not_found(hard_store):
    hard_store.append_to_stream("s", 0, make_events(3))
    hard_store.delete_stream("s", ANY_VERSION, hard=True)

    with pytest.raises(StreamNotFoundError):
        hard_store.delete_stream("s", ANY_VERSION, hard=True)
    with pytest.raises(StreamNotFoundError):
        hard_store.delete_stream("s", ANY_VERSION)


def test_reading_a_hard_deleted_stream_fails_with_stream_not_found(hard_store):
    hard_store.append_to_stream("s", 0, make_events(3))
    hard_store.delete_stream("s", ANY_VERSION, hard=True)

    for read in (
        lambda: hard_store.read_stream_forward("s"),
        lambda: hard_store.read_stream_backward("s"),
        lambda: hard_store.stream_forward("s"),
        lambda: hard_store.stream_backward("s"),
        lambda: hard_store.stream_info("s"),
    ):
        with pytest.raises(StreamNotFoundError):
            read()


@pytest.mark.parametrize("expected", [0, NO_STREAM, ANY_VERSION], ids=repr)
def test_hard_deleted_stream_can_be_written_as_if_new(hard_store, expected):
    hard_store.append_to_stream("s", 0, make_events(3))
    old_id = hard_store.stream_info("s").stream_id
    hard_store.delete_stream("s", ANY_VERSION, hard=True)

    hard_store.append_to_stream("s", expected, make_events(1, tag="reborn"))

    [event] = hard_store.read_stream_forward("s")
    assert (event.event_number, event.stream_version, event.data["tag"]) == (1, 1, "reborn")
    info = hard_store.stream_info("s")
    assert info.stream_version == 1
    assert info.stream_id != old_id
    # The new stream's event follows the deleted ones in $all: positions are never reused.
    assert numbers(hard_store.read_all_streams_forward()) == [4]


def test_hard_delete_removes_the_events_from_all_and_keeps_its_version(hard_store):
    hard_store.append_to_stream("s1", 0, make_events(3))
    hard_store.delete_stream("s1", ANY_VERSION, hard=True)

    assert hard_store.read_all_streams_forward() == []
    assert hard_store.read_all_streams_backward() == []
    assert hard_store.stream_info(ALL_STREAM).stream_version == 3

    hard_store.append_to_stream("s2", 0, make_events(1, tag="after"))

    [event] = hard_store.read_all_streams_forward()
    assert (event.stream_uuid, event.event_number, event.data["tag"]) == ("s2", 4, "after")
    assert hard_store.stream_info(ALL_STREAM).stream_version == 4


def test_hard_delete_does_not_delete_other_streams_events(hard_store, admin_engine):
    hard_store.append_to_stream("s1", 0, make_events(3, "s1"))
    hard_store.append_to_stream("s2", 0, make_events(2, "s2"))
    hard_store.append_to_stream("s3", 0, make_events(1, "s3"))

    hard_store.delete_stream("s2", ANY_VERSION, hard=True)

    with pytest.raises(StreamNotFoundError):
        hard_store.read_stream_forward("s2")
    assert [e.data["tag"] for e in hard_store.read_stream_forward("s1")] == ["s1"] * 3
    assert [e.data["tag"] for e in hard_store.read_stream_forward("s3")] == ["s3"]
    everything = hard_store.read_all_streams_forward()
    assert numbers(everything) == [1, 2, 3, 6]
    assert [e.stream_uuid for e in everything] == ["s1", "s1", "s1", "s3"]
    assert table_count(admin_engine, hard_store.schema, "events") == 4


def test_hard_delete_removes_the_events_from_streams_linking_them(hard_store):
    hard_store.append_to_stream("s1", 0, make_events(3))
    hard_store.link_to_stream("s2", 0, hard_store.read_stream_forward("s1"))

    hard_store.delete_stream("s1", ANY_VERSION, hard=True)

    # The linking stream still exists (its version unchanged), its links are gone.
    assert hard_store.read_stream_forward("s2") == []
    assert hard_store.stream_info("s2").stream_version == 3
    hard_store.append_to_stream("s2", 3, make_events(1, tag="more"))
    [event] = hard_store.read_stream_forward("s2")
    assert (event.event_number, event.stream_uuid, event.data["tag"]) == (4, "s2", "more")


def test_hard_deleting_a_stream_of_links_keeps_the_linked_events(hard_store, admin_engine):
    hard_store.append_to_stream("origin", 0, make_events(3, "origin"))
    hard_store.append_to_stream("other", 0, make_events(1, "other"))
    origin_events = hard_store.read_stream_forward("origin")
    # "mixed" holds one event of its own and links to the events of "origin";
    # "third" links the same events too.
    hard_store.append_to_stream("mixed", 0, make_events(1, "mixed"))
    hard_store.link_to_stream("mixed", 1, origin_events)
    hard_store.link_to_stream("third", 0, origin_events[:2])

    hard_store.delete_stream("mixed", ANY_VERSION, hard=True)

    with pytest.raises(StreamNotFoundError):
        hard_store.read_stream_forward("mixed")
    # Only the event "mixed" itself stored is gone; the linked ones stay everywhere.
    assert [e.event_id for e in hard_store.read_stream_forward("origin")] == [
        e.event_id for e in origin_events
    ]
    assert [e.event_id for e in hard_store.read_stream_forward("third")] == [
        e.event_id for e in origin_events[:2]
    ]
    everything = hard_store.read_all_streams_forward()
    assert [e.data["tag"] for e in everything] == ["origin"] * 3 + ["other"]
    assert numbers(everything) == [1, 2, 3, 4]
    assert table_count(admin_engine, hard_store.schema, "events") == 4


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_hard_delete_leaves_deletes_refused_afterwards(hard_store, admin_engine):
    hard_store.append_to_stream("s", 0, make_events(2))
    hard_store.append_to_stream("keep", 0, make_events(1))

    hard_store.delete_stream("s", hard=True)

    # The permission is scoped to the store's own delete, never left behind.
    with pytest.raises(DBAPIError, match="Cannot delete events"), admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DELETE FROM "{hard_store.schema}".events')
    with hard_store.engine.connect() as conn:
        setting = conn.exec_driver_sql(
            "SELECT coalesce(current_setting('eventstore.enable_hard_deletes', true), '')"
        ).scalar()
    assert setting != "on"


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_hard_delete_in_a_caller_transaction(hard_store, admin_engine):
    hard_store.append_to_stream("s", 0, make_events(2))
    schema = hard_store.schema

    with hard_store.engine.connect() as conn, conn.begin() as tx:
        hard_store.delete_stream("s", 2, hard=True, conn=conn)
        # Deleted inside the transaction ...
        with pytest.raises(StreamNotFoundError):
            hard_store.read_stream_forward("s", conn=conn)
        # ... whose stray DELETEs are still refused afterwards.
        conn.exec_driver_sql("SAVEPOINT probe")
        with pytest.raises(DBAPIError, match="Cannot delete streams"):
            conn.exec_driver_sql(f'DELETE FROM "{schema}".streams WHERE stream_id = -1')
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT probe")
        tx.rollback()

    # The caller rolled back: nothing was deleted.
    assert numbers(hard_store.read_stream_forward("s")) == [1, 2]
    assert table_count(admin_engine, schema, "events") == 2

    with hard_store.engine.begin() as conn:
        hard_store.delete_stream("s", hard=True, conn=conn)
    with pytest.raises(StreamNotFoundError):
        hard_store.read_stream_forward("s")
    assert table_count(admin_engine, schema, "events") == 0


@pytest.mark.sync_only  # a sync Session / Engine: the async twin is in test_asyncio.py
def test_hard_delete_keeps_a_session_setting_of_the_caller(hard_store, admin_engine):
    """A caller that turned hard deletes on for its session keeps that setting."""
    hard_store.append_to_stream("s", 0, make_events(1))
    with hard_store.engine.connect() as conn:
        conn.execute(text("SELECT set_config('eventstore.enable_hard_deletes', 'on', false)"))
        conn.commit()
        with conn.begin():
            hard_store.delete_stream("s", hard=True, conn=conn)
            after = conn.execute(
                text("SELECT current_setting('eventstore.enable_hard_deletes', true)")
            ).scalar()
        conn.execute(text("RESET eventstore.enable_hard_deletes"))
        conn.commit()
    assert after == "on"
    assert table_count(admin_engine, hard_store.schema, "events") == 0
