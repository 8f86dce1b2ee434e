"""Several event stores in one process.

The reference's "Using Postgres schemas" / "Dynamic schemas" (one store per
tenant schema on one database, data isolated), "Shared database connection
pools" (stores built on one Engine share its pool) and "Dynamic named event
store" (``name=``; ``EventStore.all_instances()`` lists the live ones).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import QueuePool

from sqlalchemy_eventstore import ALL_STREAM, NO_STREAM, EventData, EventStore
from sqlalchemy_eventstore.errors import StreamNotFoundError

from .conftest import unique_schema
from .subscription_helpers import WAIT, assert_quiet, collect, flatten, new_id


def tagged(tenant: str, count: int, first: int = 1) -> list[EventData]:
    return [EventData("Tick", {"tenant": tenant, "n": first + i}) for i in range(count)]


def app_backends(admin_engine: Engine, application_name: str) -> list[int]:
    """Pids of the server's sessions connected under ``application_name``."""
    with admin_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = :name"
            ),
            {"name": application_name},
        )
        return sorted(int(row[0]) for row in rows)


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert isinstance(pid, int)
        return pid


@pytest.fixture
def shared(
    database_url: URL, admin_engine: Engine
) -> Iterator[Callable[..., tuple[Engine, list[EventStore]]]]:
    """``shared(n, **pool_options)``: one Engine and ``n`` initialised stores on it,
    each in its own schema."""
    engines: list[Engine] = []
    stores: list[EventStore] = []

    def factory(n: int, **pool_options: Any) -> tuple[Engine, list[EventStore]]:
        application_name = f"shared-{uuid.uuid4().hex[:8]}"
        engine = create_engine(
            database_url, connect_args={"application_name": application_name}, **pool_options
        )
        engines.append(engine)
        made = [
            EventStore(engine, schema=unique_schema(), name=f"{application_name}-{i}")
            for i in range(n)
        ]
        stores.extend(made)
        for store in made:
            store.init()
        return engine, made

    yield factory
    for store in stores:
        store.close()
    for engine in engines:
        engine.dispose()
    with admin_engine.connect() as conn:
        for store in stores:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{store.schema}" CASCADE'))


# -- one store per tenant schema -------------------------------------------------------------


def test_tenant_schemas_are_isolated(make_store: Callable[..., EventStore]) -> None:
    tag = uuid.uuid4().hex[:8]
    tenants = {
        f"tenant{i}": make_store(schema=f"tenant{i}_{tag}", name=f"tenant{i}-{tag}")
        for i in (1, 2, 3)
    }
    # The same stream_uuid in every tenant, a different number of events in each.
    account = "account-1"
    for count, (tenant, store) in enumerate(tenants.items(), start=1):
        store.append_to_stream(account, NO_STREAM, tagged(tenant, count))

    for count, (tenant, store) in enumerate(tenants.items(), start=1):
        events = store.read_stream_forward(account)
        assert [e.data for e in events] == [{"tenant": tenant, "n": n} for n in range(1, count + 1)]
        assert store.stream_info(account).stream_version == count
        assert store.stream_info(ALL_STREAM).stream_version == count
        assert {e.data["tenant"] for e in store.read_all_streams_forward()} == {tenant}
    # A stream of one tenant does not exist in another.
    tenants["tenant2"].append_to_stream("only-in-2", NO_STREAM, tagged("tenant2", 1))
    for tenant in ("tenant1", "tenant3"):
        with pytest.raises(StreamNotFoundError):
            tenants[tenant].read_stream_forward("only-in-2")
    assert tenants["tenant2"].stream_info(ALL_STREAM).stream_version == 3


def test_a_tenant_subscription_sees_only_its_tenant(
    make_store: Callable[..., EventStore],
) -> None:
    tag = uuid.uuid4().hex[:8]
    stores = {
        f"tenant{i}": make_store(schema=f"tenant{i}_{tag}", name=f"tenant{i}-{tag}")
        for i in (1, 2, 3)
    }
    # History before subscribing, under one stream_uuid everywhere.
    for tenant, store in stores.items():
        store.append_to_stream("shared-name", NO_STREAM, tagged(tenant, 2))

    # The same subscription name in every tenant: three independent subscriptions.
    persistent = {
        tenant: store.subscribe_to_all_streams("projector", buffer_size=50)
        for tenant, store in stores.items()
    }
    for sub in persistent.values():
        assert sub.wait_subscribed(WAIT)
    live = stores["tenant1"].subscribe(ALL_STREAM)

    # Catch-up from each tenant's own history.
    for tenant, sub in persistent.items():
        history = flatten(collect(sub, 2, ack=True))
        assert [(e.event_number, e.data["tenant"]) for e in history] == [(1, tenant), (2, tenant)]

    # Other tenants write first, and their own subscribers see it (so it was
    # committed and notified) before tenant1 writes.
    for tenant in ("tenant2", "tenant3"):
        stores[tenant].append_to_stream(f"{tenant}-stream", NO_STREAM, tagged(tenant, 3, 3))
        seen = flatten(collect(persistent[tenant], 3, ack=True))
        assert [(e.event_number, e.data["tenant"]) for e in seen] == [
            (n, tenant) for n in (3, 4, 5)
        ]
    stores["tenant1"].append_to_stream("shared-name", 2, tagged("tenant1", 1, 3))

    got = flatten(collect(persistent["tenant1"], 1, ack=True))
    assert [(e.event_number, e.data) for e in got] == [(3, {"tenant": "tenant1", "n": 3})]
    got_live = flatten(collect(live, 1))
    assert [(e.event_number, e.data) for e in got_live] == [(3, {"tenant": "tenant1", "n": 3})]
    assert_quiet(persistent["tenant1"])
    assert_quiet(live)
    assert_quiet(persistent["tenant2"])
    assert_quiet(persistent["tenant3"])

    # Each checkpoint lives in its own schema.
    for tenant, store in stores.items():
        with store.engine.connect() as conn:
            rows = conn.execute(
                text(f'SELECT subscription_name FROM "{store.schema}".subscriptions')
            ).all()
        assert [row[0] for row in rows] == ["projector"], tenant


# -- several stores on one Engine ------------------------------------------------------------


def test_stores_on_one_engine_share_its_pool(
    shared: Callable[..., tuple[Engine, list[EventStore]]], admin_engine: Engine
) -> None:
    engine, stores = shared(3, poolclass=QueuePool, pool_size=1, max_overflow=0)
    assert all(store.engine is engine for store in stores)
    pool = engine.pool

    for i, store in enumerate(stores):
        store.append_to_stream("s", NO_STREAM, tagged(f"store{i}", i + 1))
    for i, store in enumerate(stores):
        assert [e.data["tenant"] for e in store.read_stream_forward("s")] == [f"store{i}"] * (i + 1)
        assert store.stream_info(ALL_STREAM).stream_version == i + 1

    # One pool of one connection did all of it: a pool per store would have
    # opened three server sessions.
    assert engine.pool is pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedout() == 0
    assert pool.checkedin() == 1
    application_name = str(stores[0].name).rsplit("-", 1)[0]  # the engine's, see shared()
    assert len(app_backends(admin_engine, application_name)) == 1

    # By contrast, stores built from a URL each make (and own) an engine.
    separate = [EventStore(engine.url, schema=stores[0].schema) for _ in range(2)]
    try:
        assert separate[0].engine is not separate[1].engine
    finally:
        for store in separate:
            store.close()


def test_closing_one_store_leaves_the_shared_engine_working(
    shared: Callable[..., tuple[Engine, list[EventStore]]],
) -> None:
    engine, (first, second, third) = shared(3, poolclass=QueuePool, pool_size=1, max_overflow=5)
    pool = engine.pool
    pid = backend_pid(engine)

    first.append_to_stream("s", NO_STREAM, tagged("first", 1))
    first.close()

    # close() did not dispose of the engine: same pool, same pooled session.
    assert engine.pool is pool
    assert backend_pid(engine) == pid
    assert first not in EventStore.all_instances()

    # The other stores still work, subscriptions included.
    subs = {
        store: store.subscribe_to_all_streams("after-close", buffer_size=10)
        for store in (second, third)
    }
    for sub in subs.values():
        assert sub.wait_subscribed(WAIT)
    for label, store in (("second", second), ("third", third)):
        store.append_to_stream("s", NO_STREAM, tagged(label, 2))
        assert [e.data["tenant"] for e in store.read_stream_forward("s")] == [label, label]
        assert [e.data["tenant"] for e in flatten(collect(subs[store], 2, ack=True))] == [
            label,
            label,
        ]
    assert engine.pool is pool

    # Closing every store still leaves the caller's engine usable.
    second.close()
    third.close()
    assert engine.pool is pool
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


# -- named stores ---------------------------------------------------------------------------


def test_all_instances_lists_live_stores_by_name(make_store: Callable[..., EventStore]) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"named-{i}-{tag}" for i in range(3)]
    made = [make_store(name=name) for name in names]

    def ours() -> dict[str, EventStore]:
        return {
            str(store.name): store
            for store in EventStore.all_instances()
            if store.name is not None and store.name.endswith(tag)
        }

    live = ours()
    assert sorted(live) == sorted(names)
    assert all(live[store.name or ""] is store for store in made)

    made[1].close()
    assert sorted(ours()) == [names[0], names[2]]

    with make_store(name=f"scoped-{tag}") as scoped:
        assert ours()[f"scoped-{tag}"] is scoped
    assert f"scoped-{tag}" not in ours()
    assert sorted(ours()) == [names[0], names[2]]


def test_two_named_stores_on_one_schema(
    make_store: Callable[..., EventStore], admin_engine: Engine
) -> None:
    tag = uuid.uuid4().hex[:8]
    alpha = make_store(name=f"alpha-{tag}")
    beta = make_store(name=f"beta-{tag}", schema=alpha.schema, init=False)
    assert beta.init() is False  # the schema exists already: nothing to create

    live = beta.subscribe(ALL_STREAM)
    stream_uuid = new_id()
    alpha.append_to_stream(stream_uuid, NO_STREAM, tagged("alpha", 2))
    beta.append_to_stream(stream_uuid, 2, tagged("beta", 1, 3))
    alpha.append_to_stream(stream_uuid, 3, tagged("alpha", 1, 4))
    beta.append_to_stream(f"beta-{stream_uuid}", NO_STREAM, tagged("beta", 1))

    expected = [("alpha", 1), ("alpha", 2), ("beta", 3), ("alpha", 4)]
    for store in (alpha, beta):
        events = store.read_stream_forward(stream_uuid)
        assert [(e.data["tenant"], e.data["n"]) for e in events] == expected
        assert store.stream_info(ALL_STREAM).stream_version == 5
    # beta's transient subscription hears alpha's appends as well as its own.
    heard = flatten(collect(live, 5))
    assert [e.event_number for e in heard] == [1, 2, 3, 4, 5]

    # Each store talks to the server under its own name.
    assert app_backends(admin_engine, f"alpha-{tag}")
    assert app_backends(admin_engine, f"beta-{tag}")
    assert {s.name for s in EventStore.all_instances()} >= {f"alpha-{tag}", f"beta-{tag}"}
