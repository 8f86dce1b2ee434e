"""The ``eventstore`` Alembic branch inside a throwaway application's own environment.

Each test writes an application to ``tmp_path`` -- alembic.ini, env.py, a model
and one revision of its own creating that model's table -- with the package's
``version_location()`` added to ``version_locations``, and runs Alembic on a
fresh database: through ``alembic.command`` and through the ``alembic`` console
command. The branch must create exactly what ``EventStore.init()`` creates
(compared catalog to catalog), leave the application's table alone on
``downgrade eventstore@base``, stay out of autogenerate's diff, and ship inside
the wheel.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Integer, MetaData, String, create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_eventstore import EventData, EventStore, migrations
from sqlalchemy_eventstore.migrations import VERSION_LOCATION_RESOURCE, version_location
from sqlalchemy_eventstore.models import metadata as eventstore_metadata

from .catalog_helpers import (
    EVENTSTORE_FUNCTIONS,
    EVENTSTORE_TABLES,
    EVENTSTORE_TRIGGERS,
    REFERENCE_TABLES,
    make_reference_layout,
    make_reference_v1_3_2,
    objects,
    recorded_versions,
    schema_present,
    snapshot,
)

REPO = Path(__file__).resolve().parent.parent
BASE_REVISION = "eventstore_1_3_2"
HEAD_REVISION = "eventstore_additions_1"

MODELS = '''
"""The application's own model."""

from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(40), nullable=False)
'''

ENV_PY = '''
"""The application's Alembic environment, with the event store's helpers."""

import importlib.util
import sys
import uuid
from functools import partial
from pathlib import Path

from alembic import context
from sqlalchemy import engine_from_config, pool

from sqlalchemy_eventstore import migrations as eventstore_migrations

config = context.config
here = Path(__file__).resolve().parent.parent

# The application's models, loaded from beside alembic.ini.
name = f"app_models_{uuid.uuid4().hex}"
spec = importlib.util.spec_from_file_location(name, here / "models.py")
models = importlib.util.module_from_spec(spec)
sys.modules[name] = models
spec.loader.exec_module(models)

target_metadata = models.Base.metadata
schema = eventstore_migrations.branch_options(config).schema
options = dict(
    target_metadata=target_metadata,
    include_schemas=True,
    include_name=partial(eventstore_migrations.include_name, schema=schema),
    include_object=partial(eventstore_migrations.include_object, schema=schema),
)

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
'''

APP_REVISION = '''
"""orders

Revision ID: app_0001
Revises:
Create Date: 2024-01-01 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "app_0001"
down_revision = None
branch_labels = ("app",)
depends_on = None


def upgrade():
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("reference", sa.String(length=40), nullable=False),
    )


def downgrade():
    op.drop_table("orders")
'''


class AppBase(DeclarativeBase):
    pass


class AppOrder(AppBase):
    """The same model, for comparisons run from the test itself."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(40), nullable=False)


def write_app(
    root: Path,
    url: URL,
    *,
    schema: str | None = None,
    column_data_type: str | None = None,
    eventstore_location: str | None = None,
    separator: str = "os",
) -> Path:
    """Write the throwaway application; the path of its alembic.ini."""
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "models.py").write_text(MODELS)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "migrations" / "versions" / "app_0001_orders.py").write_text(APP_REVISION)
    join = {"os": os.pathsep, "space": " "}[separator]
    locations = join.join(
        ["%(here)s/migrations/versions", eventstore_location or version_location()]
    )
    lines = [
        "[alembic]",
        "script_location = %(here)s/migrations",
        f"path_separator = {separator}",
        f"version_locations = {locations}",
        "sqlalchemy.url = " + url.render_as_string(hide_password=False).replace("%", "%%"),
    ]
    if schema is not None:
        lines.append(f"eventstore_schema = {schema}")
    if column_data_type is not None:
        lines.append(f"eventstore_column_data_type = {column_data_type}")
    ini = root / "alembic.ini"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def alembic_cli(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "alembic"
    prefix = [str(executable)] if executable.exists() else [sys.executable, "-m", "alembic"]
    return subprocess.run(
        [*prefix, "-c", str(ini), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def fresh_database(server_url: URL, admin_engine: Engine) -> Iterator[URL]:
    """A new, empty database for one test; dropped after it."""
    name = f"es_alembic_{uuid.uuid4().hex[:10]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield server_url.set(database=name)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(fresh_database: URL) -> Iterator[Engine]:
    engine = create_engine(fresh_database, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def table_names(engine: Engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        return objects(conn, schema)["tables"]


def heads_in_database(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}


def init_snapshot(engine: Engine, url: URL, schema: str, column_data_type: str = "bytea"):
    """The catalog of a schema that ``EventStore.init()`` created."""
    with EventStore(url, schema=schema, column_data_type=column_data_type) as store:
        assert store.init() is True
    with engine.connect() as conn:
        return snapshot(conn, schema)


def append_and_read(url: URL, schema: str, column_data_type: str = "bytea") -> None:
    with EventStore(url, schema=schema, column_data_type=column_data_type) as store:
        assert store.init() is False  # the branch created all of it already
        store.append_to_stream("order-1", 0, [EventData("OrderPlaced", {"total": 42})])
        (event,) = store.read_stream_forward("order-1")
        assert event.data == {"total": 42}
        assert store.stream_info("$all").stream_version == 1


# -- the branch itself ---------------------------------------------------------------


def test_version_location_is_the_packaged_branch() -> None:
    location = Path(version_location())
    assert location.is_dir()
    assert (location / f"{BASE_REVISION}_schema.py").is_file()
    # Alembic's package:path form names the same directory.
    from alembic.util import coerce_resource_to_filename

    assert coerce_resource_to_filename(VERSION_LOCATION_RESOURCE).resolve() == location.resolve()

    script = ScriptDirectory(str(REPO / "alembic_migrations"), version_locations=[str(location)])
    head = script.get_revision("eventstore@head")
    assert head is not None and head.revision == HEAD_REVISION
    assert head.down_revision == BASE_REVISION
    base = script.get_revision(BASE_REVISION)
    assert base is not None
    assert base.branch_labels == {"eventstore"}
    assert base.down_revision is None
    assert script.get_heads() == [HEAD_REVISION]


# -- upgrade, use, downgrade ------------------------------------------------------------


def test_upgrade_heads_creates_the_app_and_the_event_store(
    tmp_path: Path, fresh_database: URL, db: Engine, make_store: Callable[..., EventStore]
) -> None:
    cfg = Config(str(write_app(tmp_path, fresh_database)))
    command.upgrade(cfg, "heads")

    assert heads_in_database(db) == {"app_0001", HEAD_REVISION}
    with db.connect() as conn:
        found = objects(conn, "public")
        alembic_created = snapshot(conn, "public")
    assert found["tables"] == EVENTSTORE_TABLES | {"orders", "alembic_version"}
    assert found["functions"] == EVENTSTORE_FUNCTIONS
    assert found["triggers"] == EVENTSTORE_TRIGGERS

    # Identical to what init() creates (here in a schema of the session database).
    store = make_store()
    with store.engine.connect() as conn:
        init_created = snapshot(conn, store.schema)
    app_only = {"orders", "alembic_version"}
    for key in ("tables", "columns", "indexes", "constraints"):
        alembic_created[key] = [row for row in alembic_created[key] if row[0] not in app_only]
    alembic_created["sequences"] = [
        row for row in alembic_created["sequences"] if row[0] != "orders_id_seq"
    ]
    assert alembic_created == init_created

    append_and_read(fresh_database, "public")

    # Downgrading the branch removes the event store and nothing else.
    command.downgrade(cfg, "eventstore@base")
    assert heads_in_database(db) == {"app_0001"}
    with db.connect() as conn:
        assert objects(conn, "public") == {
            "tables": {"orders", "alembic_version"},
            "functions": set(),
            "triggers": set(),
        }
        assert schema_present(conn, "public")

    # ... and it comes back on the next upgrade.
    command.upgrade(cfg, "eventstore@head")
    assert heads_in_database(db) == {"app_0001", HEAD_REVISION}
    append_and_read(fresh_database, "public")


def test_the_alembic_command_with_a_schema_and_jsonb(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    ini = write_app(tmp_path, fresh_database, schema="es_cli", column_data_type="jsonb")

    result = alembic_cli(ini, "upgrade", "heads")
    assert result.returncode == 0, result.stderr

    assert table_names(db, "es_cli") == EVENTSTORE_TABLES
    assert table_names(db, "public") == {"orders", "alembic_version"}
    with db.connect() as conn:
        types = conn.execute(
            text(
                "SELECT DISTINCT data_type FROM information_schema.columns WHERE "
                "table_schema = 'es_cli' AND column_name IN ('data', 'metadata')"
            )
        ).all()
    assert [tuple(row) for row in types] == [("jsonb",)]
    append_and_read(fresh_database, "es_cli", "jsonb")

    result = alembic_cli(ini, "heads")
    assert result.returncode == 0, result.stderr
    assert "eventstore" in result.stdout and "app" in result.stdout

    result = alembic_cli(ini, "downgrade", "eventstore@base")
    assert result.returncode == 0, result.stderr
    with db.connect() as conn:
        # The schema was the event store's alone: it goes too.
        assert not schema_present(conn, "es_cli")
    assert table_names(db, "public") == {"orders", "alembic_version"}


def test_downgrade_keeps_a_schema_that_holds_other_things(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    cfg = Config(str(write_app(tmp_path, fresh_database, schema="shared")))
    command.upgrade(cfg, "heads")
    with db.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE shared.mine (id int)")
    command.downgrade(cfg, "eventstore@base")
    assert table_names(db, "shared") == {"mine"}
    with db.connect() as conn:
        assert objects(conn, "shared")["functions"] == set()


def test_the_package_resource_form_of_the_location(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    ini = write_app(
        tmp_path,
        fresh_database,
        schema="es_resource",
        eventstore_location=VERSION_LOCATION_RESOURCE,
        separator="space",
    )
    command.upgrade(Config(str(ini)), "eventstore@head")
    assert table_names(db, "es_resource") == EVENTSTORE_TABLES
    assert heads_in_database(db) == {HEAD_REVISION}


@pytest.mark.parametrize("column_data_type", ["bytea", "jsonb"])
def test_the_branch_and_init_build_identical_schemas(
    tmp_path: Path, fresh_database: URL, db: Engine, column_data_type: str
) -> None:
    cfg = Config(
        str(
            write_app(
                tmp_path, fresh_database, schema="by_alembic", column_data_type=column_data_type
            )
        )
    )
    command.upgrade(cfg, "eventstore@head")
    with db.connect() as conn:
        by_alembic = snapshot(conn, "by_alembic")
    by_init = init_snapshot(db, fresh_database, "by_init", column_data_type)

    assert by_alembic == by_init
    assert by_alembic["tables"] and by_alembic["functions"] and by_alembic["triggers"]
    with db.connect() as conn:
        rows = [
            conn.exec_driver_sql(
                f"SELECT stream_id, stream_uuid, stream_version, deleted_at FROM {s}.streams"
            ).all()
            for s in ("by_alembic", "by_init")
        ]
        assert rows[0] == rows[1] == [(0, "$all", 0, None)]
        assert recorded_versions(conn, "by_alembic") == recorded_versions(conn, "by_init")


def test_offline_sql_builds_the_same_schema(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    ini = write_app(tmp_path, fresh_database, schema="offline")
    buffer = io.StringIO()
    command.upgrade(Config(str(ini), output_buffer=buffer), "eventstore@head", sql=True)
    script = buffer.getvalue()
    assert "CREATE TABLE offline.streams" in script

    raw = db.raw_connection()
    try:
        raw.cursor().execute(script)
        raw.commit()
    finally:
        raw.close()
    with db.connect() as conn:
        offline = snapshot(conn, "offline")
    assert offline == init_snapshot(db, fresh_database, "by_init")

    buffer = io.StringIO()
    command.downgrade(Config(str(ini), output_buffer=buffer), f"{HEAD_REVISION}:base", sql=True)
    raw = db.raw_connection()
    try:
        raw.cursor().execute(buffer.getvalue())
        raw.commit()
    finally:
        raw.close()
    with db.connect() as conn:
        assert not schema_present(conn, "offline")


def test_upgrade_adopts_a_schema_made_by_init(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    with EventStore(fresh_database, schema="earlier") as store:
        store.init()
        store.append_to_stream("s-1", 0, [EventData("Happened", {"n": 1})])
    with db.connect() as conn:
        before = snapshot(conn, "earlier")

    command.upgrade(Config(str(write_app(tmp_path, fresh_database, schema="earlier"))), "heads")

    with db.connect() as conn:
        assert snapshot(conn, "earlier") == before
    with EventStore(fresh_database, schema="earlier") as store:
        assert [e.data for e in store.read_stream_forward("s-1")] == [{"n": 1}]


def test_upgrade_migrates_an_older_reference_schema(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    expected = init_snapshot(db, fresh_database, "older")
    with EventStore(fresh_database, schema="older") as store:
        store.append_to_stream("s-1", 0, [EventData("Happened", {"n": 1})])
    with db.connect() as conn:
        make_reference_layout(conn, "older", (0, 17, 0))

    command.upgrade(Config(str(write_app(tmp_path, fresh_database, schema="older"))), "heads")

    with db.connect() as conn:
        assert snapshot(conn, "older") == expected
        assert recorded_versions(conn, "older")[-4:] == [(1, 1, 0), (1, 2, 0), (1, 3, 0), (1, 3, 2)]
    with EventStore(fresh_database, schema="older") as store:
        assert [e.data for e in store.read_stream_forward("s-1")] == [{"n": 1}]


# -- the additions revision --------------------------------------------------------------


def test_the_additions_revision_upgrades_and_downgrades_alone(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    cfg = Config(str(write_app(tmp_path, fresh_database, schema="steps")))
    by_init = init_snapshot(db, fresh_database, "by_init")

    # The base revision alone is the reference's layout: no additions.
    command.upgrade(cfg, BASE_REVISION)
    assert table_names(db, "steps") == REFERENCE_TABLES
    with db.connect() as conn:
        make_reference_v1_3_2(conn, "by_init")
        assert snapshot(conn, "steps") == snapshot(conn, "by_init")
    with EventStore(fresh_database, schema="steps") as store:
        store.append_to_stream("s-1", 0, [EventData("Happened", {"n": 1})])

    command.upgrade(cfg, "eventstore@head")
    assert heads_in_database(db) == {HEAD_REVISION}
    with db.connect() as conn:
        assert snapshot(conn, "steps") == by_init
        assert recorded_versions(conn, "steps") == [(1, 3, 2)]

    # Downgrading one step drops the additions and keeps the events.
    command.downgrade(cfg, BASE_REVISION)
    assert table_names(db, "steps") == REFERENCE_TABLES
    with EventStore(fresh_database, schema="steps") as store:
        assert [e.data for e in store.read_stream_forward("s-1")] == [{"n": 1}]


def test_upgrade_adds_them_to_a_reference_schema(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    expected = init_snapshot(db, fresh_database, "made_by_reference")
    with db.connect() as conn:
        make_reference_v1_3_2(conn, "made_by_reference")
    cfg = Config(str(write_app(tmp_path, fresh_database, schema="made_by_reference")))

    command.upgrade(cfg, "heads")

    with db.connect() as conn:
        assert snapshot(conn, "made_by_reference") == expected
        assert recorded_versions(conn, "made_by_reference") == [(1, 3, 2)]


def test_offline_sql_of_the_additions_revision(tmp_path: Path, fresh_database: URL) -> None:
    ini = write_app(tmp_path, fresh_database, schema="offline")
    buffer = io.StringIO()
    command.upgrade(
        Config(str(ini), output_buffer=buffer), f"{BASE_REVISION}:{HEAD_REVISION}", sql=True
    )
    script = buffer.getvalue()
    assert "CREATE TABLE IF NOT EXISTS offline.parked_events" in script
    assert "CREATE TABLE offline.streams" not in script

    buffer = io.StringIO()
    command.downgrade(
        Config(str(ini), output_buffer=buffer), f"{HEAD_REVISION}:{BASE_REVISION}", sql=True
    )
    downgrade = buffer.getvalue()
    assert (
        'DROP TABLE IF EXISTS "offline".parked_events, "offline".sequencer_state, '
        '"offline".unsequenced;' in downgrade
    )
    assert "streams" not in downgrade.split("parked_events")[-1]
    # The reference's notification trigger is put back without the WHEN clause.
    assert "DROP TRIGGER IF EXISTS eventstore_link_waiting" in downgrade


# -- autogenerate ----------------------------------------------------------------------


def _diff(engine: Engine, metadata: MetaData | list[MetaData], **options: Any) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"target_metadata": metadata, "include_schemas": True, **options}
        )
        diffs: list[Any] = compare_metadata(context, metadata)  # type: ignore[arg-type]
        return diffs


def _dropped_tables(diffs: list[Any]) -> set[str]:
    return {diff[1].name for diff in diffs if isinstance(diff, tuple) and diff[0] == "remove_table"}


@pytest.mark.parametrize("schema", ["public", "es_auto"])
def test_autogenerate_leaves_the_event_store_alone(
    tmp_path: Path, fresh_database: URL, db: Engine, schema: str
) -> None:
    cfg = Config(str(write_app(tmp_path, fresh_database, schema=schema)))
    command.upgrade(cfg, "heads")

    # Without the helpers autogenerate would drop the event store (the control).
    assert _dropped_tables(_diff(db, AppBase.metadata)) == EVENTSTORE_TABLES

    # With them: nothing to do, through the application's own env.py ...
    command.check(cfg)
    # ... and directly.
    helpers = {
        "include_name": lambda *args: migrations.include_name(*args, schema=schema),
        "include_object": lambda *args: migrations.include_object(*args, schema=schema),
    }
    assert _diff(db, AppBase.metadata, **helpers) == []

    # A same-named table elsewhere is not the event store's: still compared.
    other = "public" if schema != "public" else "es_other"
    assert migrations.include_name("events", "table", {"schema_name": other}, schema=schema)


def test_autogenerate_with_the_models_in_target_metadata(
    tmp_path: Path, fresh_database: URL, db: Engine
) -> None:
    command.upgrade(Config(str(write_app(tmp_path, fresh_database))), "heads")
    assert _diff(db, [AppBase.metadata, eventstore_metadata]) == []


# -- packaging --------------------------------------------------------------------------


def test_the_wheel_ships_the_branch(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("sqlalchemy_eventstore", "alembic_migrations"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)

    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    expected = {
        f"{package}/{path.relative_to(REPO / directory).as_posix()}"
        for directory, package in [
            ("sqlalchemy_eventstore", "sqlalchemy_eventstore"),
            ("alembic_migrations", "sqlalchemy_eventstore/alembic_migrations"),
        ]
        for path in (REPO / directory).rglob("*.py")
    }
    assert expected <= names, sorted(expected - names)

    target = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    probe = textwrap.dedent(
        """
        from alembic.script import ScriptDirectory
        from sqlalchemy_eventstore.migrations import version_location
        location = version_location()
        script = ScriptDirectory(location, version_locations=[location])
        print(location)
        print(script.get_revision("eventstore@head").revision)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    location, head = result.stdout.split()
    assert Path(location) == target / "sqlalchemy_eventstore" / "alembic_migrations" / "versions"
    assert head == HEAD_REVISION
