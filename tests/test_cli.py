"""The ``eventstore`` command and the functions behind it, on a real PostgreSQL.

Ports the reference's mix tasks' behaviour: create/init/migrate/migrations/drop
on a fresh database, idempotent reruns, concurrent migrations under the
advisory lock, migrating databases of older reference versions, and one-line
failures (exit status non-zero, ``FAILED:`` on stderr, no traceback, the
password hidden).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine

from sqlalchemy_eventstore import EventData, EventStore, commands
from sqlalchemy_eventstore.commands import CommandError, MigrationStatus

from .catalog_helpers import (
    make_reference_layout,
    recorded_versions,
    schema_present,
    snapshot,
)

ALL_VERSIONS = ["0.13.0", "0.14.0", "0.17.0", "1.1.0", "1.2.0", "1.3.0", "1.3.2", "additions 1"]


def _eventstore_executable() -> list[str]:
    found = Path(sys.executable).parent / "eventstore"
    if found.exists():
        return [str(found)]
    which = shutil.which("eventstore")
    if which is None:
        pytest.fail("the `eventstore` console script is not installed (pip install -e .)")
    return [which]


EVENTSTORE = _eventstore_executable()
PYTHON_M = [sys.executable, "-m", "sqlalchemy_eventstore"]


def run(
    *args: str, command: list[str] = EVENTSTORE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command; its CompletedProcess (text mode)."""
    full_env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_URL"}
    full_env.update(env or {})
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, env=full_env
    )


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def assert_failed(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, one ``FAILED:`` line on stderr, no traceback; the line."""
    assert result.returncode != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("FAILED: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stderr == "", result.stderr
    return result.stdout


def _drop_database(admin_engine: Engine, name: str) -> None:
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_url(server_url: URL, admin_engine: Engine) -> Iterator[URL]:
    """A URL naming a database that does not exist yet; dropped after the test."""
    name = f"es_cli_{uuid.uuid4().hex[:10]}"
    yield server_url.set(database=name)
    _drop_database(admin_engine, name)


@pytest.fixture
def initialised_url(fresh_url: URL) -> URL:
    """A fresh database, created and initialised (schema public)."""
    commands.create(fresh_url, quiet=True)
    commands.init(fresh_url, quiet=True)
    return fresh_url


def database_exists(admin_engine: Engine, name: str) -> bool:
    with admin_engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        return found.first() is not None


def engine_on(url: URL) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


def append_and_read(url: URL, schema: str = "public", **options) -> None:
    with EventStore(url, schema=schema, **options) as store:
        store.append_to_stream("cli-1", 0, [EventData("Made", {"n": 1})])
        assert [e.data for e in store.read_stream_forward("cli-1")] == [{"n": 1}]


# -- the commands, end to end --------------------------------------------------------


def test_create_init_migrate_migrations_drop(fresh_url: URL, admin_engine: Engine) -> None:
    url = url_text(fresh_url)
    name = fresh_url.database
    assert name is not None

    out = assert_ok(run("create", "--url", url))
    assert f'The EventStore database "{name}" has been created.' in out
    assert database_exists(admin_engine, name)
    assert "already exists" in assert_ok(run("create", "--url", url))

    assert "has been initialized" in assert_ok(run("init", "--url", url))
    assert "already been initialized" in assert_ok(run("init", "--url", url))

    assert "already migrated" in assert_ok(run("migrate", "--url", url))
    assert "already migrated" in assert_ok(run("migrate", "--url", url))

    out = assert_ok(run("migrations", "--url", url))
    for version in ALL_VERSIONS:
        assert any(line.split() == [*version.split(), "applied"] for line in out.splitlines()), out
    assert "pending" not in out

    append_and_read(fresh_url)

    assert "has been dropped" in assert_ok(run("drop", "--url", url, "--yes"))
    assert not database_exists(admin_engine, name)
    # Gone: a failure (a mistyped name must not look like success) unless --if-exists.
    assert_failed(run("drop", "--url", url, "--yes"), f'database "{name}" does not exist')
    assert "nothing to drop" in assert_ok(run("drop", "--url", url, "--yes", "--if-exists"))


def test_quiet_prints_nothing_but_the_answer(fresh_url: URL) -> None:
    url = url_text(fresh_url)
    for command in ("create", "init", "migrate"):
        assert assert_ok(run(command, "--url", url, "--quiet")) == ""
    # The list is what `migrations` is asked for: --quiet keeps it, bare, one per line.
    out = assert_ok(run("migrations", "--url", url, "--quiet"))
    assert out.splitlines() == [f"{version}\tapplied" for version in ALL_VERSIONS]
    assert assert_ok(run("drop", "--url", url, "--quiet", "--yes")) == ""


def test_python_dash_m_and_the_environment_url(fresh_url: URL, admin_engine: Engine) -> None:
    env = {"EVENTSTORE_URL": url_text(fresh_url)}
    assert_ok(run("create", command=PYTHON_M, env=env))
    assert_ok(run("init", command=PYTHON_M, env=env))
    assert "1.3.2" in assert_ok(run("migrations", command=PYTHON_M, env=env))
    assert_ok(run("drop", "--yes", command=PYTHON_M, env=env))
    assert fresh_url.database is not None
    assert not database_exists(admin_engine, fresh_url.database)


def test_a_schema_of_its_own(fresh_url: URL, admin_engine: Engine) -> None:
    url = url_text(fresh_url)
    out = assert_ok(run("create", "--url", url, "--schema", "tenant1"))
    assert 'The EventStore schema "tenant1" has been created.' in out
    assert_ok(run("init", "--url", url, "--schema", "tenant1", "--column-data-type", "jsonb"))
    assert_ok(run("init", "--url", url))  # a second store, in public

    engine = engine_on(fresh_url)
    try:
        with engine.connect() as conn:
            data_type = conn.execute(
                text(
                    "SELECT data_type FROM information_schema.columns WHERE "
                    "table_schema = 'tenant1' AND table_name = 'events' AND column_name = 'data'"
                )
            ).scalar()
        assert data_type == "jsonb"
        append_and_read(fresh_url, "tenant1", column_data_type="jsonb")

        # drop with a schema drops that schema only: the database and public stay.
        out = assert_ok(run("drop", "--url", url, "--schema", "tenant1", "--yes"))
        assert 'The EventStore schema "tenant1" has been dropped.' in out
        with engine.connect() as conn:
            assert not schema_present(conn, "tenant1")
            assert conn.exec_driver_sql("SELECT count(*) FROM public.streams").scalar() == 1
        assert_failed(
            run("drop", "--url", url, "--schema", "tenant1", "--yes"),
            'schema "tenant1" does not exist',
        )
    finally:
        engine.dispose()
    assert fresh_url.database is not None
    assert database_exists(admin_engine, fresh_url.database)


def test_init_without_foreign_keys(fresh_url: URL) -> None:
    url = url_text(fresh_url)
    assert_ok(run("create", "--url", url))
    assert_ok(run("init", "--url", url, "--no-foreign-keys"))
    engine = engine_on(fresh_url)
    try:
        with engine.connect() as conn:
            kinds = conn.exec_driver_sql(
                "SELECT contype FROM pg_constraint "
                "WHERE conrelid = 'public.stream_events'::regclass"
            ).all()
        assert sorted(k for (k,) in kinds if k != "n") == ["p"]
    finally:
        engine.dispose()
    append_and_read(fresh_url)


def test_concurrent_migrate_applies_each_step_once(initialised_url: URL) -> None:
    engine = engine_on(initialised_url)
    try:
        with engine.connect() as conn:
            expected = snapshot(conn, "public")
        append_and_read(initialised_url)
        with engine.connect() as conn:
            make_reference_layout(conn, "public", (0, 14, 0))

        url = url_text(initialised_url)
        env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_URL"}
        processes = [
            subprocess.Popen(
                [*EVENTSTORE, "migrate", "--url", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(3)
        ]
        results = [(p.wait(timeout=120), *p.communicate()) for p in processes]

        for returncode, stdout, stderr in results:
            assert returncode == 0, (stdout, stderr)
            assert stderr == ""
        migrated = [stdout for _, stdout, _ in results if "has been migrated" in stdout]
        assert len(migrated) == 1, results
        for version in ("0.17.0", "1.1.0", "1.2.0", "1.3.0", "1.3.2"):
            assert f"Running migration v{version}..." in migrated[0]
        assert "Running migration additions 1..." in migrated[0]
        assert sum("already migrated" in stdout for _, stdout, _ in results) == 2

        with engine.connect() as conn:
            assert snapshot(conn, "public") == expected
            assert recorded_versions(conn, "public") == [
                (0, 13, 0),
                (0, 14, 0),
                (0, 17, 0),
                (1, 1, 0),
                (1, 2, 0),
                (1, 3, 0),
                (1, 3, 2),
            ]
    finally:
        engine.dispose()
    with EventStore(initialised_url) as store:
        assert [e.data for e in store.read_stream_forward("cli-1")] == [{"n": 1}]
        store.append_to_stream("cli-1", 1, [EventData("Made", {"n": 2})])
        assert store.stream_info("$all").stream_version == 2


# -- the functions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "steps"),
    [
        ((0, 17, 0), ["1.1.0", "1.2.0", "1.3.0", "1.3.2", "additions 1"]),
        ((0, 14, 0), ["0.17.0", "1.1.0", "1.2.0", "1.3.0", "1.3.2", "additions 1"]),
    ],
)
def test_migrate_brings_a_reference_database_up_to_date(
    initialised_url: URL, layout: tuple[int, int, int], steps: list[str]
) -> None:
    engine = engine_on(initialised_url)
    try:
        with engine.connect() as conn:
            expected = snapshot(conn, "public")
        append_and_read(initialised_url)
        with engine.connect() as conn:
            make_reference_layout(conn, "public", layout)
            assert snapshot(conn, "public") != expected

        statuses = commands.migrations(initialised_url, quiet=True)
        assert [s.version for s in statuses] == ALL_VERSIONS
        assert [s.version for s in statuses if s.status == "pending"] == steps

        assert commands.migrate(initialised_url, quiet=True) == steps
        assert commands.migrate(initialised_url, quiet=True) == []
        assert commands.migrations(initialised_url, quiet=True) == [
            MigrationStatus(version, "applied") for version in ALL_VERSIONS
        ]
        with engine.connect() as conn:
            assert snapshot(conn, "public") == expected
    finally:
        engine.dispose()
    with EventStore(initialised_url) as store:
        (event,) = store.read_stream_forward("cli-1")
        assert event.data == {"n": 1}
        store.delete_stream("cli-1")  # soft delete: the 1.2.0 column


def test_migrate_refuses_a_database_older_than_v0_14(initialised_url: URL) -> None:
    engine = engine_on(initialised_url)
    try:
        with engine.connect() as conn:
            make_reference_layout(conn, "public", (0, 14, 0))
            conn.exec_driver_sql("DELETE FROM public.schema_migrations WHERE minor_version = 14")
            before = snapshot(conn, "public")
        with pytest.raises(CommandError, match=r"mix event_store\.migrate"):
            commands.migrate(initialised_url, quiet=True)
        with engine.connect() as conn:
            assert snapshot(conn, "public") == before
    finally:
        engine.dispose()


def test_the_functions_return_what_they_did(fresh_url: URL, capsys) -> None:
    commands.create(fresh_url)
    assert "has been created" in capsys.readouterr().out
    assert commands.init(fresh_url, quiet=True) is True
    assert commands.init(fresh_url, quiet=True) is False
    assert commands.init(fresh_url, "other", quiet=True, column_data_type="jsonb") is True
    assert commands.migrate(fresh_url, quiet=True) == []
    statuses = commands.migrations(fresh_url, "other", quiet=True)
    assert statuses[-2:] == [("1.3.2", "applied"), ("additions 1", "applied")]
    commands.drop(fresh_url, "other", quiet=True)
    commands.drop(fresh_url, quiet=True)
    assert capsys.readouterr().out == ""


def test_command_errors_are_event_store_errors_and_pickle() -> None:
    import pickle

    error = CommandError("cannot connect")
    assert error.reason == "command_failed"
    assert str(pickle.loads(pickle.dumps(error))) == "cannot connect"


# -- failures ----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["create", "drop", "init", "migrate", "migrations"])
def test_unreachable_server(command: str) -> None:
    url = f"postgresql://admin:s3cr3t-pw@127.0.0.1:{closed_port()}/nowhere"
    extra = ["--yes"] if command == "drop" else []
    line = assert_failed(run(command, "--url", url, *extra), "cannot connect to", "***")
    assert "s3cr3t-pw" not in line


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "invalid database URL"),
        ("mysql://root:pw@localhost/db", "expected postgresql://"),
        ("postgresql+nosuchdriver://u@localhost/db", "invalid database URL"),
        ("postgresql://u:pw@localhost:notaport/db", "invalid database URL"),
    ],
)
def test_bad_url(url: str, fragment: str) -> None:
    line = assert_failed(run("init", "--url", url), fragment)
    assert ":pw@" not in line


def test_no_url_and_usage_errors() -> None:
    assert_failed(run("init"), "--url", "EVENTSTORE_URL")
    assert_failed(run("frobnicate", "--url", "postgresql://x/y"), "invalid choice")
    assert_failed(run(), "required")
    assert_failed(run("init", "--column-data-type", "xml"), "invalid choice")


def test_database_needed_in_the_url(server_url: URL) -> None:
    assert_failed(
        run("create", "--url", url_text(server_url._replace(database=None))), "no database"
    )


@pytest.mark.parametrize("command", ["init", "migrate", "migrations"])
def test_missing_database(fresh_url: URL, command: str) -> None:
    assert fresh_url.database is not None
    assert_failed(run(command, "--url", url_text(fresh_url)), fresh_url.database, "does not exist")


@pytest.mark.parametrize("command", ["migrate", "migrations"])
def test_not_initialised(fresh_url: URL, command: str) -> None:
    commands.create(fresh_url, quiet=True)
    assert_failed(run(command, "--url", url_text(fresh_url)), "eventstore init")


@pytest.fixture
def unprivileged_url(server_url: URL, admin_engine: Engine) -> Iterator[URL]:
    """A login role without CREATEDB (nor CREATE on the session database)."""
    role = f"es_nocreatedb_{uuid.uuid4().hex[:8]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        yield server_url.set(username=role, password=None)
    finally:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')


def test_permission_denied(
    unprivileged_url: URL, database_url: URL, admin_engine: Engine, fresh_url: URL
) -> None:
    assert fresh_url.database is not None
    target = unprivileged_url.set(database=fresh_url.database)
    assert_failed(
        run("create", "--url", url_text(target)), "cannot create database", "permission denied"
    )
    assert not database_exists(admin_engine, fresh_url.database)

    # CREATE SCHEMA needs the CREATE privilege on the database: PUBLIC lacks it.
    session_db = unprivileged_url.set(database=database_url.database)
    schema = f"es_denied_{uuid.uuid4().hex[:8]}"
    assert_failed(
        run("init", "--url", url_text(session_db), "--schema", schema),
        "cannot initialise",
        "permission denied",
    )
    with admin_engine.connect() as conn:
        assert not schema_present(conn, schema)
