"""A store on the caller's Engine opens its LISTEN and lock sessions the way
that engine does: its creator / connect_args apply, not just its URL."""

from __future__ import annotations

import psycopg
import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

from sqlalchemy_eventstore import ANY_VERSION, EventData, EventStore

from .subscription_helpers import WAIT, eventually

CONNECT = {
    "psycopg2": lambda dsn: psycopg2.connect(dsn, application_name="app-engine"),
    "psycopg": lambda dsn: psycopg.connect(dsn, application_name="app-engine"),
}


@pytest.mark.parametrize("driver", sorted(CONNECT))
def test_subscriptions_connect_through_the_callers_engine(
    make_store, database_url: URL, admin_engine: Engine, driver: str
):
    schema = make_store().schema  # created and dropped by the fixture
    dsn = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    # The URL leads nowhere; only the engine's creator knows the real server.
    engine = create_engine(
        f"postgresql+{driver}://nobody@127.0.0.1:1/nowhere",
        creator=lambda: CONNECT[driver](dsn),
    )
    store = EventStore(engine, schema=schema)
    try:
        transient = store.subscribe("$all")
        persistent = store.subscribe_to_all_streams("via-engine")
        assert persistent.wait_subscribed(WAIT)
        store.append_to_stream("s", ANY_VERSION, [EventData("T", {"i": 1})])
        assert [e.event_number for e in transient.receive(timeout=WAIT)] == [1]
        batch = persistent.receive(timeout=WAIT)
        assert [e.event_number for e in batch] == [1]
        persistent.ack(batch)

        with admin_engine.connect() as conn:
            names = set(
                conn.execute(
                    text(
                        "SELECT application_name FROM pg_stat_activity "
                        "WHERE datname = current_database()"
                    )
                ).scalars()
            )
        assert f"eventstore-listener-{schema}" in names
        assert f"eventstore-locks-{schema}" in names
        # Detached from the engine's pool: it holds none of their connections.
        assert eventually(lambda: engine.pool.checkedout() == 0)
    finally:
        store.close()
        engine.dispose()
