"""The reference's known subscription defects, each shown absent here.

(a) a checkpoint timer firing during catch-up skipped unacknowledged events;
(b) events appended while the listener reconnected never reached transient
    subscribers (and reached persistent ones only with a later event).
(The third, partition order after a subscriber dies, is in
test_subscriptions_concurrency.py and test_subscription_state.py.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from sqlalchemy_eventstore import ANY_VERSION, EventData

from .subscription_helpers import WAIT, eventually
from .tcp_proxy import GateProxy


def append(store, stream: str, n: int, start: int = 0) -> None:
    store.append_to_stream(
        stream, ANY_VERSION, [EventData("Tick", {"i": start + i}) for i in range(n)]
    )


def checkpoint(admin_engine: Engine, schema: str, name: str) -> int | None:
    with admin_engine.connect() as conn:
        return conn.execute(
            text(f'SELECT last_seen FROM "{schema}".subscriptions WHERE subscription_name = :n'),
            {"n": name},
        ).scalar()


def receive_numbers(sub, count: int) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + WAIT
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.extend(e.event_number for e in sub.receive(timeout=0.2))
        except TimeoutError:
            continue
    return got


def test_checkpoint_timer_during_catch_up_never_skips_unacked_events(make_store, admin_engine):
    store = make_store()
    append(store, "s", 30)
    sub = store.subscribe_to_all_streams(
        "timed", buffer_size=5, max_size=10, checkpoint_threshold=1000, checkpoint_after=0.05
    )
    assert sub.wait_subscribed(WAIT)
    batch = sub.receive(timeout=WAIT)
    assert [e.event_number for e in batch] == [1, 2, 3, 4, 5]
    sub.ack(3)  # 4 and 5 stay unacknowledged; 6.. are queued or unread
    # The timer fires many times while the subscription sits mid catch-up.
    assert eventually(lambda: checkpoint(admin_engine, store.schema, "timed") == 3)
    time.sleep(0.3)
    assert checkpoint(admin_engine, store.schema, "timed") == 3
    sub.unsubscribe()
    assert checkpoint(admin_engine, store.schema, "timed") == 3

    again = store.subscribe_to_all_streams("timed", buffer_size=5)
    assert again.wait_subscribed(WAIT)
    assert again.receive(timeout=WAIT)[0].event_number == 4


@pytest.fixture
def proxy(server_url: URL) -> Iterator[GateProxy]:
    gate = GateProxy(server_url)
    yield gate
    gate.close()


def test_events_appended_while_the_listener_reconnects_reach_every_subscriber(
    make_store, database_url, proxy
):
    # LISTEN and the advisory locks go through the proxy (session_mode_url);
    # appends and reads go straight to the server.
    store = make_store(
        session_mode_url=proxy.url_for(database_url), subscription_retry_interval=0.2
    )
    transient = store.subscribe("$all")
    persistent = store.subscribe_to_all_streams("p", buffer_size=100)
    assert persistent.wait_subscribed(WAIT)
    append(store, "before", 2)
    assert [e.event_number for e in transient.receive(timeout=WAIT)] == [1, 2]
    persistent.ack(persistent.receive(timeout=WAIT))

    listener = store._runner._listener
    locks = store._runner._locks
    generation = locks.generation
    # Cut the listener's connection alone (the first one made through the
    # proxy): the lock session stays, so the persistent subscription keeps its
    # lock and only the re-read after the reconnect can bring it 3, 4, 5.
    proxy.cut_connection(0)
    assert eventually(lambda: not listener.listening)
    append(store, "during", 3, start=2)  # nobody is listening now
    proxy.restore()

    # No later event is appended: the listener must re-read what it missed.
    assert receive_numbers(transient, 3) == [3, 4, 5]
    assert receive_numbers(persistent, 3) == [3, 4, 5]
    assert locks.generation == generation  # the lock session was never lost
    assert persistent.subscribed
