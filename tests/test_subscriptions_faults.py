"""Backends of the listener, the lock session and the store's pool are killed
with pg_terminate_backend while events keep being appended: every event is
still delivered to every subscription."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore
from sqlalchemy_eventstore.errors import DuplicateEventError

WAIT = 20.0
EVENTS = 300
BATCH = 5


def terminate_store_backends(admin_engine: Engine, database: str) -> int:
    with admin_engine.connect() as conn:
        return len(
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid() "
                    "AND (application_name LIKE 'eventstore-%' "
                    "     OR application_name = 'sqlalchemy_eventstore')"
                ),
                {"db": database},
            ).all()
        )


def write_all(store: EventStore, done: threading.Event) -> None:
    """Append EVENTS events in batches, retrying a batch whose connection died
    (its fixed event ids make a retry of a committed batch a DuplicateEventError)."""
    for start in range(0, EVENTS, BATCH):
        batch = [
            EventData("Tick", {"i": start + i}, event_id=str(uuid.uuid4())) for i in range(BATCH)
        ]
        stream = f"stream-{start % 7}"
        while True:
            try:
                store.append_to_stream(stream, ANY_VERSION, batch)
                break
            except DuplicateEventError:
                break
            except DBAPIError:
                time.sleep(0.01)
        time.sleep(0.005)
    done.set()


def test_every_event_is_delivered_through_backend_terminations(
    make_store, database_url, admin_engine
):
    store = make_store(subscription_retry_interval=0.2)
    # The writer has its own engine, named differently, so it survives the kills.
    writer = EventStore(
        create_engine(database_url, connect_args={"application_name": "writer"}),
        schema=store.schema,
    )
    transient_ids: list[str] = []
    persistent_numbers: list[int] = []
    lock = threading.Lock()

    def on_transient(events):
        with lock:
            transient_ids.extend(e.event_id for e in events)

    def on_persistent(events):
        with lock:
            persistent_numbers.extend(e.event_number for e in events)

    store.subscribe("$all", handler=on_transient)
    sub = store.subscribe_to_all_streams("faults", handler=on_persistent, buffer_size=20)
    assert sub.wait_subscribed(WAIT)

    done = threading.Event()
    thread = threading.Thread(target=write_all, args=(writer, done), name="test-writer")
    thread.start()
    killed = 0
    while not done.is_set():
        time.sleep(0.15)
        killed += terminate_store_backends(admin_engine, database_url.database)
    thread.join(WAIT)
    assert killed > 0

    stored = {e.event_id for e in writer.stream_all_forward()}
    assert len(stored) == EVENTS
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with lock:
            if set(transient_ids) >= stored and set(persistent_numbers) >= set(
                range(1, EVENTS + 1)
            ):
                break
        time.sleep(0.05)
    with lock:
        assert set(transient_ids) == stored
        assert set(persistent_numbers) == set(range(1, EVENTS + 1))
        # At least once, and in order: redeliveries only repeat earlier events.
        highest = 0
        for number in persistent_numbers:
            assert number <= highest + 1
            highest = max(highest, number)
    writer.close()
    writer.engine.dispose()
