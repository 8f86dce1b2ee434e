"""The sequencer's routines are replaced when this package brings new ones.

``init()`` and ``eventstore migrate`` create the routines of
``global_order="sequencer"`` only when an addition is missing or outdated: a
schema records the revision of its routines (``sequencer_sql.REVISION``), and
one made by an earlier version of this package gets the current bodies, while
one a later version upgraded is left alone.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

import alembic_migrations
from sqlalchemy_eventstore import EventData, EventStore, commands
from sqlalchemy_eventstore.storage.schema import (
    ADDITIONS_NAME,
    add_additions,
    additions_incomplete,
    create_schema,
    lock_schema_changes,
)
from sqlalchemy_eventstore.storage.sequencer_sql import (
    REVISION,
    installed_revision_sql,
    sequencer_ddl,
)

from .sequencer_helpers import all_rows, settle

Factory = Callable[..., EventStore]

# The digest of sequencer_ddl() (all but its last statement, the revision's
# comment) at each revision. A change to the routines or triggers changes it:
# bump REVISION, and record the new digest here.
DIGESTS = {2: "93733587b15d7922fb591cae1a397dd29e1e3dca610f1814893e61f95ee82ab6"}

# An earlier body, standing in for what an older version installed: it
# numbers nothing (so the test can tell it from the current one).
_OLD_BODY = """
CREATE OR REPLACE FUNCTION {s}.eventstore_sequence(wait boolean DEFAULT true)
  RETURNS bigint AS $$ BEGIN RETURN -1; END; $$ LANGUAGE plpgsql
"""


def test_the_revision_is_bumped_with_every_change_to_the_routines() -> None:
    statements = sequencer_ddl("s")
    digest = hashlib.sha256("\n".join(statements[:-1]).encode()).hexdigest()
    assert DIGESTS.get(REVISION) == digest, (
        "the sequencer's routines or triggers changed: bump sequencer_sql.REVISION "
        "(and record the new digest in DIGESTS)"
    )
    assert statements[-1].endswith(f"'sqlalchemy_eventstore sequencer revision {REVISION}'")


def test_the_routines_are_replaced_with_streams_locked_first() -> None:
    """Appenders lock a stream's row, then write the queue; replacing the
    routines takes a SHARE lock on the queue (the state row) and then
    ``streams``' exclusive lock (the triggers): in that order it deadlocked
    with running appends. ``streams`` is locked before anything else."""
    first = sequencer_ddl("s")[0]
    assert 'LOCK TABLE "s".streams IN ACCESS EXCLUSIVE MODE' in first


def test_the_alembic_branch_has_a_revision_for_the_current_routines() -> None:
    """Alembic users get new routines from a revision of the branch that runs the
    additions' statements again: one per routine revision after the first two
    (``eventstore_additions_1`` made revision 2)."""
    versions = Path(alembic_migrations.__file__).parent / "versions"
    assert (versions / f"eventstore_additions_{REVISION - 1}.py").is_file()


def installed(engine: Engine, schema: str) -> int:
    with engine.connect() as conn:
        value = conn.exec_driver_sql(installed_revision_sql(schema)).scalar()
    assert isinstance(value, int)
    return value


def sequence_body(engine: Engine, schema: str) -> str:
    with engine.connect() as conn:
        body = conn.exec_driver_sql(
            "SELECT prosrc FROM pg_proc WHERE oid = "
            f"to_regprocedure('\"{schema}\".eventstore_sequence(boolean)')"
        ).scalar()
    assert isinstance(body, str)
    return body


def install_old_routines(engine: Engine, schema: str, comment: str | None) -> None:
    """What an older (``comment`` None: before revisions were recorded) or a
    newer version of this package left in ``schema``."""
    s = f'"{schema}"'
    with engine.begin() as conn:
        conn.exec_driver_sql(_OLD_BODY.format(s=s))
        value = "NULL" if comment is None else f"'{comment}'"
        conn.exec_driver_sql(f"COMMENT ON PROCEDURE {s}.eventstore_help(integer) IS {value}")


def test_a_fresh_schema_records_the_current_revision(
    make_store: Factory, admin_engine: Engine
) -> None:
    store = make_store(global_order="sequencer")
    assert installed(admin_engine, store.schema) == REVISION
    with admin_engine.connect() as conn:
        assert additions_incomplete(conn, store.schema) is False
        conn.exec_driver_sql(f'DROP PROCEDURE "{store.schema}".eventstore_help(integer)')
        assert conn.exec_driver_sql(installed_revision_sql(store.schema)).scalar() == 0
        assert additions_incomplete(conn, store.schema) is True
        conn.rollback()


def test_init_replaces_routines_of_an_earlier_version(
    make_store: Factory, admin_engine: Engine
) -> None:
    store = make_store(global_order="sequencer")
    current = sequence_body(admin_engine, store.schema)
    install_old_routines(admin_engine, store.schema, comment=None)
    assert installed(admin_engine, store.schema) == 1
    assert sequence_body(admin_engine, store.schema) != current

    assert store.init() is False  # the event store existed; its routines replaced
    assert installed(admin_engine, store.schema) == REVISION
    assert sequence_body(admin_engine, store.schema) == current
    store.append_to_stream("s", 0, [EventData("E", {"n": 1})])
    settle(store)
    assert store.advance_all_stream() == -1  # the current body numbered it
    assert all_rows(admin_engine, store.schema) == [(1, "s", 1)]


def test_migrate_replaces_them_and_lists_them_as_pending_before(
    make_store: Factory, admin_engine: Engine, database_url: URL
) -> None:
    store = make_store(global_order="sequencer")
    current = sequence_body(admin_engine, store.schema)
    install_old_routines(
        admin_engine, store.schema, comment="sqlalchemy_eventstore sequencer revision 1"
    )
    statuses = commands.migrations(database_url, store.schema, quiet=True)
    assert statuses[-1] == commands.MigrationStatus(ADDITIONS_NAME, "pending")

    assert commands.migrate(database_url, store.schema, quiet=True) == [ADDITIONS_NAME]
    assert sequence_body(admin_engine, store.schema) == current
    assert installed(admin_engine, store.schema) == REVISION
    statuses = commands.migrations(database_url, store.schema, quiet=True)
    assert statuses[-1] == commands.MigrationStatus(ADDITIONS_NAME, "applied")
    assert commands.migrate(database_url, store.schema, quiet=True) == []


@pytest.mark.parametrize("newer", [REVISION, REVISION + 1])
def test_init_leaves_the_current_or_a_newer_revision_alone(
    make_store: Factory, admin_engine: Engine, newer: int
) -> None:
    """A later version of this package put its routines there: an older
    process's init() must not put its own back (nor rewrite equal ones)."""
    store = make_store(global_order="sequencer")
    comment = f"sqlalchemy_eventstore sequencer revision {newer}"
    install_old_routines(admin_engine, store.schema, comment=comment)
    replaced = sequence_body(admin_engine, store.schema)
    assert store.init() is False
    assert sequence_body(admin_engine, store.schema) == replaced
    assert installed(admin_engine, store.schema) == newer


def test_init_by_a_role_that_does_not_own_them_keeps_outdated_routines(
    make_store: Factory, admin_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """An application's restricted role still starts on a schema whose routines
    are outdated (they work as they are), and says so; the owner's migrate
    replaces them. Strictly (migrate, Alembic), the same role is refused."""
    store = make_store(global_order="sequencer")
    install_old_routines(admin_engine, store.schema, comment=None)
    outdated = sequence_body(admin_engine, store.schema)
    role = f"es_user_{uuid.uuid4().hex[:8]}"
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}"')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{store.schema}" TO "{role}"')
        conn.commit()
    try:
        with store.engine.connect() as conn:
            with conn.begin(), caplog.at_level(logging.WARNING, "sqlalchemy_eventstore.schema"):
                conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
                assert create_schema(conn, store.schema, "bytea") is False
            assert "revision 1" in caplog.text and "eventstore migrate" in caplog.text
            with pytest.raises(Exception, match=r"permission denied|must be owner"), conn.begin():
                conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
                lock_schema_changes(conn)
                add_additions(conn, store.schema)
        assert sequence_body(admin_engine, store.schema) == outdated
        assert installed(admin_engine, store.schema) == 1
    finally:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
            conn.commit()
    assert store.init() is False  # the owner replaces them
    assert installed(admin_engine, store.schema) == REVISION


def test_init_leaves_them_while_a_long_reader_holds_streams(
    make_store: Factory, admin_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Replacing the routines needs ``streams``' exclusive lock, and appends queue
    behind the request: init() gives up after REPLACE_LOCK_TIMEOUT rather than
    stall them behind a long reader (a report, pg_dump), and says so."""
    store = make_store(global_order="sequencer")
    install_old_routines(admin_engine, store.schema, comment=None)
    appended: list[int] = []
    with store.engine.connect() as reader:  # in a transaction, not autocommit
        reader.exec_driver_sql(f'SELECT count(*) FROM "{store.schema}".streams').scalar()
        with caplog.at_level(logging.WARNING, "sqlalchemy_eventstore.schema"):
            assert store.init() is False
        assert "lock timeout" in caplog.text and "revision 1" in caplog.text
        # Nothing of the attempt is left holding or waiting: appends go on.
        worker = threading.Thread(
            target=lambda: appended.append(
                store.append_to_stream("during", 0, [EventData("E", {"n": 1})])
            )
        )
        worker.start()
        worker.join(60)
        assert appended and not worker.is_alive()
        reader.rollback()
    assert installed(admin_engine, store.schema) == 1
    assert store.init() is False
    assert installed(admin_engine, store.schema) == REVISION


def test_init_by_an_owner_without_create_on_the_schema_keeps_them(
    admin_engine: Engine, database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    """Owning the routines is not enough: replacing a function needs CREATE on its
    schema, which hardened roles lose once the schema is made."""
    role, schema = f"es_owner_{uuid.uuid4().hex[:8]}", f"rev_{uuid.uuid4().hex[:8]}"
    engine = create_engine(database_url)  # transactions (admin_engine autocommits)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}"')
        conn.exec_driver_sql(f'GRANT CREATE ON DATABASE "{database_url.database}" TO "{role}"')
        conn.commit()
    try:
        with engine.connect() as conn:
            with conn.begin():
                conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
                assert create_schema(conn, schema, "bytea") is True
            conn.exec_driver_sql(f'REVOKE CREATE ON SCHEMA "{schema}" FROM "{role}"')
            conn.commit()
        install_old_routines(admin_engine, schema, comment=None)
        with (
            engine.connect() as conn,
            conn.begin(),
            caplog.at_level(logging.WARNING, "sqlalchemy_eventstore.schema"),
        ):
            conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
            assert create_schema(conn, schema, "bytea") is False
        assert "permission denied" in caplog.text
        assert installed(admin_engine, schema) == 1
    finally:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
            conn.commit()
        engine.dispose()
