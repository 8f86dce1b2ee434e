"""The store behind a real PgBouncer in transaction pooling mode.

The reference's "Using with PgBouncer": ``url`` goes through PgBouncer in
transaction mode (which cannot hold a LISTEN or a session advisory lock), and
``session_mode_url`` goes straight to the server; the store opens its LISTEN
connection and its advisory-lock session there and runs everything else
through PgBouncer. Without a direct URL (``transaction_pooling=True``, or a
``session_mode_url`` that is the pooler too), subscriptions poll and
persistent ones are refused.

A ``pgbouncer`` process is started per module on a free 127.0.0.1 port, in
front of the test database (by TCP or by the server's unix socket directory,
as the test URL says). The binary comes from the operating system (Debian's
``pgbouncer`` package); when it is not installed these tests skip -- the only
reason they may skip.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError

from sqlalchemy_eventstore import (
    ALL_STREAM,
    ANY_VERSION,
    NO_STREAM,
    EventData,
    EventStore,
    SnapshotData,
)
from sqlalchemy_eventstore.asyncio import AsyncEventStore
from sqlalchemy_eventstore.errors import (
    SnapshotNotFoundError,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

from .async_facade import SyncFacade
from .conftest import ASYNC_DRIVERS, DRIVERS
from .sequencer_helpers import numbered, waiting
from .subscription_helpers import WAIT, collect, eventually, flatten, new_id

Gate = Callable[[int, Callable[[int], Any]], list[Any]]

# Fewer server connections than the store's pool may open: clients really
# share servers, transaction by transaction.
SERVER_POOL_SIZE = 3
STARTUP_DEADLINE = 30.0
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"]
)


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer", path=_SEARCH_PATH)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_as_user(server_host: str) -> str | None:
    """The user pgbouncer drops to (it refuses to run as root), or None when not root.

    With a unix socket directory, its owner (who can always reach the socket;
    the embedded server's directory is private to its user); otherwise the
    ``postgres`` system user, else ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        owner = os.stat(server_host).st_uid
        if owner != 0:
            return pwd.getpwuid(owner).pw_name
    for candidate in ("postgres", "nobody"):
        try:
            pwd.getpwnam(candidate)
        except KeyError:
            continue
        return candidate
    pytest.fail("running as root and no 'postgres' or 'nobody' user for pgbouncer -u")


class Bouncer:
    """A running pgbouncer in front of the test database, with its admin console."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, base_url: URL) -> None:
        self.process = process
        self.port = port
        self.base_url = base_url
        self.database = str(base_url.database)
        self.user = base_url.username or "postgres"

    def url(self, driver: str = "psycopg2") -> URL:
        """The test database through pgbouncer."""
        return self.base_url.set(
            drivername={**DRIVERS, **ASYNC_DRIVERS}[driver], host="127.0.0.1", port=self.port
        ).difference_update_query(["host", "port"])

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Rows of an admin console command (SHOW ...), as dicts."""
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            dbname="pgbouncer",
            user=self.user,
            password=self.base_url.password or "",
            connect_timeout=5,
        )
        try:
            conn.autocommit = True  # the console takes no BEGIN
            with conn.cursor() as cursor:
                cursor.execute(command)
                if cursor.description is None:
                    return []
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            conn.close()

    def server_pids(self) -> set[int]:
        """Backend pids of pgbouncer's server connections to the test database."""
        return {
            int(row["remote_pid"])
            for row in self.admin("SHOW SERVERS")
            if row["database"] == self.database
        }

    def clients(self) -> list[dict[str, Any]]:
        return [row for row in self.admin("SHOW CLIENTS") if row["database"] == self.database]

    def transactions(self) -> int:
        """How many transactions pgbouncer has run on the test database."""
        for row in self.admin("SHOW STATS"):
            if row["database"] == self.database:
                return int(row["total_xact_count"])
        return 0


def _write_config(directory: Path, database_url: URL, port: int) -> Path:
    host = database_url.host or database_url.query.get("host")
    assert isinstance(host, str), "the test database URL needs a host or socket directory"
    user = database_url.username or "postgres"
    target = [
        f"host={host}",
        f"port={database_url.port or 5432}",
        f"dbname={database_url.database}",
        "pool_mode=transaction",
    ]
    if database_url.password:
        target += [f"user={user}", f"password={database_url.password}"]
    userlist = directory / "userlist.txt"
    userlist.write_text(f'"{user}" "{database_url.password or ""}"\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        "\n".join(
            [
                "[databases]",
                f"{database_url.database} = {' '.join(target)}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {userlist}",
                f"admin_users = {user}",
                "pool_mode = transaction",
                f"default_pool_size = {SERVER_POOL_SIZE}",
                "max_client_conn = 500",
                "ignore_startup_parameters = extra_float_digits",
                "",
            ]
        )
    )
    for path in (directory, userlist, config):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return config


def _start(binary: str, directory: Path, database_url: URL) -> Bouncer:
    host = str(database_url.host or database_url.query.get("host"))
    user = run_as_user(host)
    last_log = ""
    for _attempt in range(3):  # another process may take the free port first
        port = free_port()
        config = _write_config(directory, database_url, port)
        log_path = directory / f"pgbouncer-{port}.log"
        command = [binary, *(["-u", user] if user else []), str(config)]
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        bouncer = Bouncer(process, port, database_url)
        deadline = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < deadline and process.poll() is None:
            try:
                bouncer.admin("SHOW VERSION")
            except psycopg2.OperationalError:
                time.sleep(0.1)
                continue
            return bouncer
        _stop(process)
        last_log = log_path.read_text(errors="replace")
        if "Address already in use" not in last_log:
            break
    pytest.fail(f"pgbouncer did not start ({' '.join(command)}):\n{last_log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def bouncer(database_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bouncer]:
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip(
            "pgbouncer is not installed (e.g. apt-get install pgbouncer): "
            "the PgBouncer tests need a real pgbouncer binary"
        )
    running = _start(binary, tmp_path_factory.mktemp("pgbouncer"), database_url)
    try:
        # The pool really is in transaction mode.
        settings = {row["key"]: row["value"] for row in running.admin("SHOW CONFIG")}
        assert settings["pool_mode"] == "transaction"
        yield running
    finally:
        _stop(running.process)


@pytest.fixture
def bouncer_store(
    bouncer: Bouncer, database_url: URL, admin_engine: Engine
) -> Iterator[Callable[..., EventStore]]:
    """Initialised stores whose ``url`` is pgbouncer and ``session_mode_url`` the server."""
    made: list[EventStore] = []

    def factory(*, driver: str = "psycopg2", **options: Any) -> EventStore:
        store = EventStore(
            bouncer.url(driver),
            schema=f"es_pgb_{uuid.uuid4().hex[:10]}",
            session_mode_url=database_url,
            name=f"pgb-{uuid.uuid4().hex[:8]}",
            **options,
        )
        made.append(store)
        store.init()
        return store

    yield factory
    for store in made:
        store.close()
    with admin_engine.connect() as conn:
        for store in made:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{store.schema}" CASCADE'))


def backends(admin_engine: Engine) -> list[dict[str, Any]]:
    """The test database's client backends, as the server sees them (direct)."""
    with admin_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid, application_name, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND backend_type = 'client backend'"
            )
        )
        return [dict(row._mapping) for row in rows]


def advisory_lock_holders(admin_engine: Engine) -> set[int]:
    with admin_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid FROM pg_locks "
                "WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
        return {int(row[0]) for row in rows}


def ticks(count: int, tag: str) -> list[EventData]:
    return [EventData("Tick", {"tag": tag, "n": n}) for n in range(count)]


# -- (a) everything works through pgbouncer; LISTEN and locks go direct --------------------


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_operations_and_subscriptions_through_transaction_pooling(
    bouncer: Bouncer,
    bouncer_store: Callable[..., EventStore],
    admin_engine: Engine,
    driver: str,
) -> None:
    store = bouncer_store(driver=driver, enable_hard_deletes=True)
    assert store.engine.url.port == bouncer.port
    transactions_before = bouncer.transactions()

    transient = store.subscribe(ALL_STREAM)
    persistent = store.subscribe_to_all_streams("pgb-projector", buffer_size=100)
    assert persistent.wait_subscribed(WAIT)

    # Appends and reads, repeated well past psycopg 3's prepare threshold
    # (5 runs of one statement on one connection) so that any server-side
    # prepared statement would meet a server that never saw it.
    streams = [f"pgb-{new_id()}" for _ in range(8)]
    for stream_uuid in streams:
        store.append_to_stream(stream_uuid, NO_STREAM, ticks(2, stream_uuid))
        store.append_to_stream(stream_uuid, 2, ticks(1, stream_uuid))
        assert [e.stream_version for e in store.read_stream_forward(stream_uuid)] == [1, 2, 3]
        assert store.stream_info(stream_uuid).stream_version == 3
    with pytest.raises(WrongExpectedVersionError):
        store.append_to_stream(streams[0], 1, ticks(1, "stale"))
    first = store.read_stream_forward(streams[0])
    assert [e.stream_version for e in store.read_stream_backward(streams[0])] == [3, 2, 1]
    assert len(list(store.stream_all_forward(read_batch_size=5))) == 24
    assert store.paginate_streams(search="pgb-", page_size=100).total_entries == 8

    # In the caller's own transaction, through pgbouncer.
    with store.engine.begin() as conn:
        store.append_to_stream(streams[1], 3, ticks(1, "in-tx"), conn=conn)
        assert store.stream_info(streams[1], conn=conn).stream_version == 4

    # Both subscriptions got every appended event (8 streams x 3, plus 1 in a
    # transaction), before a hard delete takes any away.
    live = flatten(collect(transient, 25))
    assert [e.event_number for e in live] == list(range(1, 26))
    delivered = flatten(collect(persistent, 25, ack=True))
    assert [e.event_number for e in delivered] == list(range(1, 26))
    assert {e.stream_uuid for e in delivered} == set(streams)
    # The persistent subscription's checkpoint is written through pgbouncer too.
    with admin_engine.connect() as conn:
        assert eventually(
            lambda: (
                conn.execute(
                    text(
                        f'SELECT last_seen FROM "{store.schema}".subscriptions '
                        "WHERE subscription_name = 'pgb-projector'"
                    )
                ).scalar()
                == 25
            )
        )

    # Links.
    linked = f"linked-{new_id()}"
    store.link_to_stream(linked, NO_STREAM, first)
    assert [e.event_id for e in store.read_stream_forward(linked)] == [e.event_id for e in first]

    # Snapshots.
    source = f"snap-{new_id()}"
    store.record_snapshot(SnapshotData(source, 3, "Counter", {"count": 3}))
    store.record_snapshot(SnapshotData(source, 7, "Counter", {"count": 7}))
    assert store.read_snapshot(source).data == {"count": 7}
    store.delete_snapshot(source)
    with pytest.raises(SnapshotNotFoundError):
        store.read_snapshot(source)

    # Soft and hard deletes.
    store.delete_stream(streams[2], 3)
    with pytest.raises(StreamDeletedError):
        store.read_stream_forward(streams[2])
    store.delete_stream(streams[3], hard=True)
    with pytest.raises(StreamNotFoundError):
        store.read_stream_forward(streams[3])
    remaining = {e.stream_uuid for e in store.read_all_streams_forward()}
    assert streams[3] not in remaining
    assert streams[2] in remaining

    # Evidence: the listener and the lock session are direct server
    # connections, not pgbouncer's; the ordinary work went through pgbouncer.
    listener_name = f"eventstore-listener-{store.schema}"
    locks_name = f"eventstore-locks-{store.schema}"
    activity = backends(admin_engine)
    listeners = [row for row in activity if row["application_name"] == listener_name]
    lockers = [row for row in activity if row["application_name"] == locks_name]
    assert len(listeners) == 1, activity
    assert len(lockers) == 1, activity
    assert listeners[0]["query"].startswith(("LISTEN", "SELECT 1"))  # or its idle check
    bouncer_pids = bouncer.server_pids()
    assert bouncer_pids, "pgbouncer holds no server connection"
    assert listeners[0]["pid"] not in bouncer_pids
    assert lockers[0]["pid"] not in bouncer_pids
    # The persistent subscription's advisory lock is held by that direct session.
    assert lockers[0]["pid"] in advisory_lock_holders(admin_engine)
    assert not advisory_lock_holders(admin_engine) & bouncer_pids

    clients = bouncer.clients()
    client_names = {row["application_name"] for row in clients}
    assert store.name in client_names  # the store's pooled connections are pgbouncer clients
    assert not {
        n for n in client_names if n.startswith(("eventstore-listener", "eventstore-locks"))
    }
    # Every backend doing the store's own work is one of pgbouncer's servers.
    store_backends = {row["pid"] for row in activity if row["application_name"] == store.name}
    assert store_backends <= bouncer_pids
    # And pgbouncer counted that work: far more than 40 transactions.
    assert eventually(lambda: bouncer.transactions() - transactions_before >= 40)


def test_hard_delete_through_transaction_pooling_leaks_no_setting(
    bouncer: Bouncer, bouncer_store: Callable[..., EventStore]
) -> None:
    store = bouncer_store(enable_hard_deletes=True)
    kept = f"kept-{new_id()}"
    store.append_to_stream(kept, NO_STREAM, ticks(2, "kept"))
    for round_ in range(2 * SERVER_POOL_SIZE):
        stream_uuid = f"hard-{round_}-{new_id()}"
        store.append_to_stream(stream_uuid, NO_STREAM, ticks(3, stream_uuid))
        store.delete_stream(stream_uuid, 3, hard=True)
        with pytest.raises(StreamNotFoundError):
            store.stream_info(stream_uuid)
        # The stream_uuid is new again.
        store.append_to_stream(stream_uuid, NO_STREAM, ticks(1, "again"))
        assert [e.stream_version for e in store.read_stream_forward(stream_uuid)] == [1]

    # The transaction-local enable_hard_deletes did not stay on any server
    # connection pgbouncer hands out: a plain DELETE is still refused on each.
    held = [store.engine.connect() for _ in range(2 * SERVER_POOL_SIZE)]
    try:
        for conn in held:
            assert conn.execute(
                text("SELECT current_setting('eventstore.enable_hard_deletes', true)")
            ).scalar() in (None, "")
            with pytest.raises(DBAPIError, match="Cannot delete events"):
                conn.execute(text(f'DELETE FROM "{store.schema}".events'))
            conn.rollback()
    finally:
        for conn in held:
            conn.close()
    assert [e.data["n"] for e in store.read_stream_forward(kept)] == [0, 1]


# -- (b) concurrent writers through pgbouncer -------------------------------------------------


WRITERS = 8


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_concurrent_appends_through_transaction_pooling(
    bouncer: Bouncer,
    bouncer_store: Callable[..., EventStore],
    start_gate: Gate,
    driver: str,
) -> None:
    store = bouncer_store(driver=driver)

    def appender(stream_uuid: str, expected: Any) -> Callable[[int], None]:
        def append(i: int) -> None:
            store.append_to_stream(
                stream_uuid, expected, [EventData("W", {"w": i, "i": k}) for k in range(3)]
            )

        return append

    for expected, error in ((2, WrongExpectedVersionError), (NO_STREAM, StreamExistsError)):
        for _round in range(3):
            stream_uuid = new_id()
            if expected == 2:
                store.append_to_stream(stream_uuid, 0, ticks(2, "seed"))
            results = start_gate(WRITERS, appender(stream_uuid, expected))
            winners = [i for i, result in enumerate(results) if result is None]
            assert len(winners) == 1, results
            assert all(type(r) is error for r in results if r is not None), results
            events = store.read_stream_forward(stream_uuid)
            tail = events[-3:]
            assert [e.data["w"] for e in tail] == winners * 3
            assert [e.stream_version for e in events] == list(range(1, len(events) + 1))

    # ANY_VERSION: every writer wins, versions gap-free, batches not interleaved.
    stream_uuid = new_id()
    results = start_gate(WRITERS, appender(stream_uuid, ANY_VERSION))
    assert results == [None] * WRITERS
    events = store.read_stream_forward(stream_uuid)
    assert [e.stream_version for e in events] == list(range(1, 3 * WRITERS + 1))
    for start in range(0, len(events), 3):
        batch = events[start : start + 3]
        assert len({e.data["w"] for e in batch}) == 1
        assert [e.data["i"] for e in batch] == [0, 1, 2]
    assert sorted({e.data["w"] for e in events}) == list(range(WRITERS))
    # pgbouncer never opened more server connections than its pool allows.
    assert len(bouncer.server_pids()) <= SERVER_POOL_SIZE


# -- (c) no session_mode_url: subscriptions poll, persistent ones are refused -----------------


@pytest.fixture
def pooled_store(
    bouncer: Bouncer, admin_engine: Engine, request: pytest.FixtureRequest
) -> Iterator[Callable[..., EventStore]]:
    """Initialised stores whose only URL is pgbouncer's (options as given);
    ``driver="async-..."``: an AsyncEventStore behind tests.async_facade."""
    made: list[Any] = []

    def factory(*, driver: str = "psycopg2", **options: Any) -> EventStore:
        store: Any
        names = {"schema": f"es_pgb_{uuid.uuid4().hex[:10]}", "name": f"pgb-{uuid.uuid4().hex[:8]}"}
        if driver.startswith("async-"):
            loop = request.getfixturevalue("loop_thread")
            store = SyncFacade(AsyncEventStore(bouncer.url(driver), **names, **options), loop)
        else:
            store = EventStore(bouncer.url(driver), **names, **options)
        made.append(store)
        store.init()
        return store

    yield factory
    for store in made:
        store.close()
    with admin_engine.connect() as conn:
        for store in made:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{store.schema}" CASCADE'))


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "async-psycopg", "async-asyncpg"])
def test_transaction_pooling_without_a_session_url_polls(
    bouncer: Bouncer,
    pooled_store: Callable[..., EventStore],
    admin_engine: Engine,
    caplog: pytest.LogCaptureFixture,
    driver: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="sqlalchemy_eventstore")
    store = pooled_store(driver=driver, transaction_pooling=True, poll_interval=0.1)
    stream = f"pgb-{new_id()}"
    store.append_to_stream(stream, NO_STREAM, ticks(2, "before"))

    everything = store.subscribe(ALL_STREAM)
    one_stream = store.subscribe(stream)
    assert store.stats().notification_mode == "poll"
    assert eventually(lambda: everything.stats.head == 2 and one_stream.stats.head == 2)
    # Well past psycopg 3's prepare threshold, and more than the pool's servers.
    for round_ in range(3 * SERVER_POOL_SIZE):
        store.append_to_stream(stream, ANY_VERSION, ticks(1, f"r{round_}"))
    other = f"pgb-{new_id()}"
    store.append_to_stream(other, NO_STREAM, ticks(1, "other"))
    store.link_to_stream(stream, ANY_VERSION, store.read_stream_forward(other))
    count = 3 * SERVER_POOL_SIZE
    assert [e.event_number for e in flatten(collect(everything, count + 1))] == list(
        range(3, count + 4)
    )
    assert [e.event_number for e in flatten(collect(one_stream, count + 1))] == list(
        range(3, count + 4)
    )
    assert store.stats().notifications >= 1

    # A persistent subscription cannot hold its advisory lock here: refused, saying how.
    with pytest.raises(RuntimeError, match="session_mode_url"):
        store.subscribe_to_all_streams("projector")
    with pytest.raises(RuntimeError, match="transaction-mode pooler"):
        store.subscribe_to_stream(stream, "projector", transient=True)

    # Why, once; and nothing of the store reaches the server but through pgbouncer.
    why = [r.getMessage() for r in caplog.records if "poll for new events" in r.getMessage()]
    assert len(why) == 1 and "transaction_pooling=True" in why[0], why
    names = {row["application_name"] for row in backends(admin_engine)}
    assert f"eventstore-listener-{store.schema}" not in names
    assert f"eventstore-locks-{store.schema}" not in names
    assert store.name in {row["application_name"] for row in bouncer.clients()}


@pytest.mark.parametrize("driver", ["psycopg2", "async-psycopg", "async-asyncpg"])
def test_a_session_url_through_the_pooler_is_found_out(
    bouncer: Bouncer,
    pooled_store: Callable[..., EventStore],
    caplog: pytest.LogCaptureFixture,
    driver: str,
) -> None:
    """LISTEN through transaction pooling succeeds, but never hears a thing:
    the listener's check finds it out, and the store polls."""
    caplog.set_level(logging.WARNING, logger="sqlalchemy_eventstore")
    store = pooled_store(driver=driver, session_mode_url=bouncer.url(driver), poll_interval=0.1)
    sub = store.subscribe(ALL_STREAM)  # returns once the check is over
    assert store.stats().notification_mode == "poll"
    why = [r.getMessage() for r in caplog.records if "poll for new events" in r.getMessage()]
    assert len(why) == 1 and "LISTEN does not hold" in why[0], why
    with pytest.raises(RuntimeError, match="session_mode_url"):
        store.subscribe_to_all_streams("projector")

    assert eventually(lambda: sub.stats.head == 0)
    store.append_to_stream(f"pgb-{new_id()}", NO_STREAM, ticks(3, "found"))
    assert [e.event_number for e in flatten(collect(sub, 3))] == [1, 2, 3]


# -- (d) global_order="sequencer" through transaction pooling ------------------------------


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "async-psycopg", "async-asyncpg"])
def test_sequencer_numbering_through_transaction_pooling(
    pooled_store: Callable[..., EventStore],
    admin_engine: Engine,
    start_gate: Gate,
    driver: str,
) -> None:
    """The writers' numbering call, a procedure that commits each round, runs
    through the pooler: every append is numbered by the writers' own calls
    (no reader asks), gap-free, streams in order."""
    store = pooled_store(driver=driver, transaction_pooling=True, global_order="sequencer")

    def writer(i: int) -> None:
        for n in range(5):
            store.append_to_stream(f"w-{i}", ANY_VERSION, ticks(2, f"{i}-{n}"))

    assert start_gate(WRITERS, writer) == [None] * WRITERS
    rows = numbered(admin_engine, store.schema, WRITERS * 10)
    assert [r[0] for r in rows] == list(range(1, WRITERS * 10 + 1))
    for i in range(WRITERS):
        assert [r[2] for r in rows if r[1] == f"w-{i}"] == list(range(1, 11))
    assert waiting(admin_engine, store.schema) == 0
