"""The LISTEN side of subscriptions, against a real server with real threads.

Covers the payload parser, delivery of both NOTIFYs of an append on each
driver, silence for rolled-back work, reconnection after the backend is
killed or hangs, and a prompt ``stop()`` in every state. Waits poll with
generous deadlines; a negative ("nothing arrived") is only ever asserted
after a later notification proves the earlier one would have arrived first.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine, make_url

from sqlalchemy_eventstore import EventData
from sqlalchemy_eventstore.notifications.listener import Listener
from sqlalchemy_eventstore.notifications.payload import Notification, parse_payload

from .conftest import DRIVERS
from .tcp_proxy import GateProxy

WAIT = 20.0  # seconds: generous, only reached when something is broken


def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.02)
    return True


def events(n: int) -> list[EventData]:
    return [EventData("Tested", {"i": i}) for i in range(n)]


class Recorder:
    """The listener's callbacks, recording what they were called with."""

    def __init__(self, reconnect_action: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._notifications: list[Notification] = []
        self._reconnects = 0
        self._reconnect_action = reconnect_action

    def on_notification(self, notification: Notification) -> None:
        with self._lock:
            self._notifications.append(notification)

    def on_reconnect(self) -> None:
        with self._lock:
            self._reconnects += 1
        if self._reconnect_action is not None:
            self._reconnect_action()

    @property
    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    @property
    def reconnects(self) -> int:
        with self._lock:
            return self._reconnects

    def streams(self) -> set[str]:
        return {n.stream_uuid for n in self.notifications}


MakeListener = Callable[..., tuple[Listener, Recorder]]


@pytest.fixture
def make_listener() -> Iterator[MakeListener]:
    """Started listeners with unique names (their application_name); stopped after the test."""
    made: list[Listener] = []

    def factory(
        url: URL, schema: str, recorder: Recorder | None = None, **options: Any
    ) -> tuple[Listener, Recorder]:
        recorder = recorder or Recorder()
        options.setdefault("name", unique_name())
        listener = Listener(
            url,
            schema,
            on_notification=recorder.on_notification,
            on_reconnect=recorder.on_reconnect,
            **options,
        )
        made.append(listener)
        listener.start()
        return listener, recorder

    yield factory
    for listener in made:
        listener.stop()


def unique_name() -> str:
    return f"es-listener-{uuid.uuid4().hex[:10]}"


def backend_pids(admin_engine: Engine, name: str) -> list[int]:
    with admin_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
            {"name": name},
        )
        return [int(pid) for pid in rows.scalars()]


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


# -- parse_payload -------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("stream-1,12,1,5", Notification("stream-1", 12, 1, 5)),
        ("$all,0,101,105", Notification("$all", 0, 101, 105)),
        ("order,42,7,1,2,3", Notification("order,42,7", 1, 2, 3)),
        (",,,3,4,4", Notification(",,", 3, 4, 4)),
        ("line\nbreak,3,4,4", Notification("line\nbreak", 3, 4, 4)),
        ("deleted,9,6,5", Notification("deleted", 9, 6, 5)),  # soft delete: empty range
    ],
)
def test_parse_payload(payload: str, expected: Notification) -> None:
    assert parse_payload(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "garbage",
        "stream,1,2",
        ",1,2,3",  # no stream_uuid
        "stream,1,2,x",
        "stream,-1,2,3",
        "stream, 1,2,3",
        "stream,1,2,3,",
        "stream,1_0,2,3",
        "stream,\u0661,2,3",  # a non-ASCII digit
    ],
)
def test_parse_payload_rejects_garbage(payload: str) -> None:
    with pytest.raises(ValueError, match="not an event notification payload"):
        parse_payload(payload)


# -- delivery ------------------------------------------------------------------


def test_receives_the_stream_and_all_notifications_of_each_append(
    make_store, make_listener, database_url, driver
):
    store = make_store(driver=driver)
    listener, recorder = make_listener(database_url.set(drivername=DRIVERS[driver]), store.schema)
    assert listener.wait_listening(WAIT)
    assert listener.listening

    store.append_to_stream("order,42", 0, events(3))
    store.append_to_stream("order,42", 3, events(2))
    stream_id = store.stream_info("order,42").stream_id

    assert eventually(lambda: len(recorder.notifications) >= 4)
    assert sorted(recorder.notifications, key=lambda n: (n.first_version, n.stream_id)) == [
        Notification("$all", 0, 1, 3),
        Notification("order,42", stream_id, 1, 3),
        Notification("$all", 0, 4, 5),
        Notification("order,42", stream_id, 4, 5),
    ]
    assert recorder.reconnects == 0  # the first connection is no reconnection


def test_channel_is_the_schema_quoted_as_one_identifier(make_store, make_listener, database_url):
    # Unquoted, LISTEN would fold the case; quoted in two parts it would not parse.
    store = make_store(schema=f"Es.Mixed_{uuid.uuid4().hex[:8]}")
    listener, recorder = make_listener(database_url, store.schema)
    assert listener.wait_listening(WAIT)

    store.append_to_stream("s-1", 0, events(1))

    assert eventually(lambda: recorder.streams() == {"s-1", "$all"})


def test_soft_delete_notifies_an_empty_range(make_store, make_listener, database_url):
    store = make_store()
    listener, recorder = make_listener(database_url, store.schema)
    assert listener.wait_listening(WAIT)
    store.append_to_stream("doomed", 0, events(2))
    stream_id = store.stream_info("doomed").stream_id

    store.delete_stream("doomed")

    deleted = Notification("doomed", stream_id, 3, 2)
    assert eventually(lambda: deleted in recorder.notifications)


def test_nothing_is_received_for_a_rolled_back_append(make_store, make_listener, database_url):
    store = make_store()
    listener, recorder = make_listener(database_url, store.schema)
    assert listener.wait_listening(WAIT)

    with store.engine.connect() as conn:
        transaction = conn.begin()
        store.append_to_stream("rolled-back", 0, events(2), conn=conn)
        transaction.rollback()
    store.append_to_stream("committed", 0, events(1))
    stream_id = store.stream_info("committed").stream_id

    # NOTIFYs arrive in commit order, so once "committed" is here the
    # rolled-back append's would have arrived before it.
    assert eventually(lambda: len(recorder.notifications) >= 2)
    assert set(recorder.notifications) == {
        Notification("committed", stream_id, 1, 1),
        Notification("$all", 0, 1, 1),
    }


def test_bad_payloads_and_failing_callbacks_do_not_stop_it(
    make_store, database_url, admin_engine, caplog
):
    store = make_store()
    received: list[Notification] = []

    def on_notification(notification: Notification) -> None:
        received.append(notification)
        if notification.stream_uuid == "boom":
            raise RuntimeError("a failing subscriber")

    listener = Listener(
        database_url,
        store.schema,
        on_notification=on_notification,
        on_reconnect=lambda: None,
        name=unique_name(),
    )
    listener.start()
    try:
        assert listener.wait_listening(WAIT)
        with admin_engine.connect() as conn:
            conn.execute(
                text("SELECT pg_notify(:channel, 'garbage')"), {"channel": f"{store.schema}.events"}
            )
        store.append_to_stream("boom", 0, events(1))
        store.append_to_stream("fine", 0, events(1))

        assert eventually(lambda: "fine" in {n.stream_uuid for n in received})
        assert listener.listening
        assert "boom" in {n.stream_uuid for n in received}
        messages = [r.getMessage() for r in caplog.records]
        assert any("ignoring a payload" in m and "'garbage'" in m for m in messages)
        assert any("on_notification callback raised" in m for m in messages)
    finally:
        listener.stop()


def test_rejects_urls_it_cannot_listen_on() -> None:
    with pytest.raises(ValueError, match="postgresql\\+psycopg2 or postgresql\\+psycopg"):
        Listener(
            make_url("sqlite:///x.db"),
            "public",
            on_notification=lambda n: None,
            on_reconnect=lambda: None,
        )


# -- reconnection --------------------------------------------------------------


def test_reconnects_after_its_backend_is_terminated(
    make_store, make_listener, database_url, admin_engine, driver
):
    store = make_store(driver=driver)
    # Appending from on_reconnect proves LISTEN is active before it is called:
    # were it called first, this commit's NOTIFY would be lost.
    recorder = Recorder(lambda: store.append_to_stream("during-reconnect", 0, events(1)))
    name = unique_name()
    listener, _ = make_listener(
        database_url.set(drivername=DRIVERS[driver]), store.schema, recorder=recorder, name=name
    )
    assert listener.wait_listening(WAIT)
    store.append_to_stream("before", 0, events(1))
    assert eventually(lambda: "before" in recorder.streams())
    [old_pid] = backend_pids(admin_engine, name)

    with admin_engine.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid}).scalar()

    assert eventually(lambda: "during-reconnect" in recorder.streams())
    assert listener.listening
    store.append_to_stream("after", 0, events(1))
    assert eventually(lambda: "after" in recorder.streams())
    assert recorder.reconnects == 1
    [new_pid] = backend_pids(admin_engine, name)
    assert new_pid != old_pid


@pytest.fixture
def proxy(server_url: URL) -> Iterator[GateProxy]:
    proxy = GateProxy(server_url)
    yield proxy
    proxy.close()


def through(proxy: GateProxy, url: URL, driver: str) -> URL:
    return url.difference_update_query(["host"]).set(
        drivername=DRIVERS[driver], host="127.0.0.1", port=proxy.port
    )


def test_idle_check_detects_a_hung_connection_and_reconnects(
    make_store, make_listener, database_url, proxy, driver
):
    store = make_store()
    listener, recorder = make_listener(
        through(proxy, database_url, driver), store.schema, idle_check_interval=0.3
    )
    assert listener.wait_listening(WAIT)
    store.append_to_stream("before", 0, events(1))
    assert eventually(lambda: "before" in recorder.streams())

    proxy.freeze()

    assert eventually(lambda: recorder.reconnects == 1)
    store.append_to_stream("after", 0, events(1))
    assert eventually(lambda: "after" in recorder.streams())
    assert proxy.swallowed > 0  # the idle check's SELECT 1 went unanswered
    assert recorder.reconnects == 1


# -- stopping ------------------------------------------------------------------


def test_stop_joins_the_thread_and_closes_the_backend(
    make_store, make_listener, database_url, admin_engine
):
    store = make_store()
    name = unique_name()
    listener, _ = make_listener(database_url, store.schema, name=name)
    assert listener.wait_listening(WAIT)
    assert len(backend_pids(admin_engine, name)) == 1
    assert threads_named(name)

    listener.stop()

    assert threads_named(name) == []
    assert not listener.listening
    assert eventually(lambda: backend_pids(admin_engine, name) == [])
    listener.stop()  # idempotent
    with pytest.raises(RuntimeError, match="starts once"):
        listener.start()


def test_stop_during_backoff_returns_promptly(make_listener, caplog):
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]  # closed once the block ends: connections are refused
    url = make_url(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres")
    caplog.set_level(logging.WARNING, logger="sqlalchemy_eventstore.notifications")
    name = unique_name()
    listener, _ = make_listener(url, "public", max_backoff=30.0, name=name)

    # Pauses so far: 0.05 + 0.1 + ... + 1.6 s; the one after attempt 7 is 3.2 s.
    assert eventually(
        lambda: sum("cannot connect" in r.getMessage() for r in list(caplog.records)) >= 7
    )
    assert not listener.wait_listening(0.01)
    started = time.monotonic()
    listener.stop()
    assert time.monotonic() - started < 2.0
    assert threads_named(name) == []


def test_stop_returns_promptly_while_a_call_hangs(make_store, make_listener, database_url, proxy):
    store = make_store()
    name = unique_name()
    listener, _ = make_listener(
        through(proxy, database_url, "psycopg2"), store.schema, idle_check_interval=3.0, name=name
    )
    assert listener.wait_listening(WAIT)

    proxy.freeze()
    assert eventually(lambda: proxy.swallowed > 0)  # SELECT 1 sent, no answer coming
    started = time.monotonic()
    listener.stop()
    assert time.monotonic() - started < 2.0
    assert threads_named(name) == []
