"""The reference's schema migrations, numbered as it numbers them, and applying them.

A database records each applied step as a ``schema_migrations`` row; a schema
created at the current layout records only :data:`~.schema.SCHEMA_VERSION`
(1.3.2) and so has nothing pending. Older databases made by the Elixir library
(EventStore v0.14 to v1.3) are brought up to date step by step, each step the
reference's, schema-qualified rather than run under ``SET search_path``.

Two deliberate differences: every step that installs ``notify_events()``
installs the current body (the intermediate ones are superseded by 1.3.2, and
the 1.3.0 one fails on older PostgreSQL), and the 0.13.0 and 0.14.0 steps, which
convert the pre-2018 layout, are listed but not ported: a database that old is
refused with a message saying how to upgrade it.

This package's own additions (:func:`.schema.additions_ddl`) are versioned
apart: they record no ``schema_migrations`` row (that table is the
reference's), and count as applied when their tables exist. They are applied
after the reference's steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from .schema import (
    SCHEMA_VERSION,
    add_additions,
    create_schema,
    delete_function_ddl,
    exception_function_ddl,
    lock_schema_changes,
    notification_trigger_ddl,
    notify_function_ddl,
    protection_trigger_ddl,
    quote_ident,
    record_version_ddl,
    schema_exists,
)

__all__ = [
    "MIGRATIONS",
    "Migration",
    "Version",
    "apply",
    "pending",
    "recorded_versions",
    "unsupported",
    "upgrade_schema",
    "version_name",
]

Version = tuple[int, int, int]


def version_name(version: Version) -> str:
    """``(1, 3, 2)`` as the reference writes it: ``"1.3.2"``."""
    return ".".join(str(part) for part in version)


def _v0_17_0(schema: str) -> list[str]:
    # Timestamps become timestamptz; the old values were written in UTC.
    s = quote_ident(schema)
    columns = [
        ("streams", "created_at"),
        ("events", "created_at"),
        ("subscriptions", "created_at"),
        ("snapshots", "created_at"),
        ("schema_migrations", "migrated_at"),
    ]
    statements: list[str] = []
    for table, column in columns:
        statements += [
            f"ALTER TABLE {s}.{table} ALTER COLUMN {column} TYPE timestamp with time zone "
            f"USING {column} AT TIME ZONE 'UTC'",
            f"ALTER TABLE {s}.{table} ALTER COLUMN {column} SET DEFAULT now()",
        ]
    return statements


def _v1_1_0(schema: str) -> list[str]:
    # NOTIFY on the schema's own channel ("<schema>.events").
    return [notify_function_ddl(schema)]


def _v1_2_0(schema: str) -> list[str]:
    # Rules that silently ignored UPDATE/DELETE become triggers that raise (and
    # let a hard delete through); streams gain ``deleted_at`` (soft deletes).
    s = quote_ident(schema)
    return [
        f"DROP RULE IF EXISTS no_update_stream_events ON {s}.stream_events",
        f"DROP RULE IF EXISTS no_delete_stream_events ON {s}.stream_events",
        f"DROP RULE IF EXISTS no_update_events ON {s}.events",
        f"DROP RULE IF EXISTS no_delete_events ON {s}.events",
        exception_function_ddl(schema),
        delete_function_ddl(schema),
        *protection_trigger_ddl(schema),
        f"ALTER TABLE {s}.streams ADD COLUMN deleted_at timestamp with time zone",
    ]


def _v1_3_0(schema: str) -> list[str]:
    # The trigger fires on INSERT too, so a new stream's first append notifies.
    s = quote_ident(schema)
    return [
        notify_function_ddl(schema),
        f"DROP TRIGGER event_notification ON {s}.streams",
        notification_trigger_ddl(schema),
    ]


def _v1_3_2(schema: str) -> list[str]:
    # The NOTIFY function that works on every supported PostgreSQL.
    return [notify_function_ddl(schema)]


@dataclass(frozen=True)
class Migration:
    """One step of the reference's numbering; ``ddl`` is None when not ported."""

    version: Version
    ddl: Callable[[str], list[str]] | None

    @property
    def name(self) -> str:
        return version_name(self.version)

    def statements(self, schema: str) -> list[str]:
        """The step's statements for ``schema``, ending with its version row."""
        if self.ddl is None:
            raise RuntimeError(f"migration v{self.name} is not ported")
        return [*self.ddl(schema), record_version_ddl(schema, self.version)]


#: Every migration of the reference (v1.4), oldest first; the last is the layout
#: that ``EventStore.init()`` creates.
MIGRATIONS: tuple[Migration, ...] = (
    Migration((0, 13, 0), None),
    Migration((0, 14, 0), None),
    Migration((0, 17, 0), _v0_17_0),
    Migration((1, 1, 0), _v1_1_0),
    Migration((1, 2, 0), _v1_2_0),
    Migration((1, 3, 0), _v1_3_0),
    Migration((1, 3, 2), _v1_3_2),
)
assert MIGRATIONS[-1].version == SCHEMA_VERSION


def recorded_versions(conn: Connection, schema: str) -> list[Version] | None:
    """The versions ``schema_migrations`` records, oldest first; None without the table."""
    table = f"{quote_ident(schema)}.schema_migrations"
    if conn.execute(text("SELECT to_regclass(:name)"), {"name": table}).scalar() is None:
        return None
    rows = conn.execute(
        text(f"SELECT major_version, minor_version, patch_version FROM {table} ORDER BY 1, 2, 3")
    )
    return [(int(major), int(minor), int(patch)) for major, minor, patch in rows]


def pending(recorded: Sequence[Version]) -> list[Migration]:
    """The migrations newer than the latest recorded one (all of them when none is)."""
    latest = max(recorded, default=None)
    return [m for m in MIGRATIONS if latest is None or m.version > latest]


def unsupported(migrations: Sequence[Migration], schema: str) -> str | None:
    """Why ``migrations`` cannot be applied here, or None when they all can."""
    missing = [m.name for m in migrations if m.ddl is None]
    if not missing:
        return None
    return (
        f"schema {schema!r} predates EventStore v0.14 (pending migrations "
        f"{', '.join('v' + name for name in missing)} are not ported): upgrade it with "
        "the Elixir EventStore's `mix event_store.migrate` first"
    )


def apply(conn: Connection, schema: str, migration: Migration) -> None:
    """Run one migration's statements (the caller owns the transaction)."""
    for statement in migration.statements(schema):
        conn.exec_driver_sql(statement)


def upgrade_schema(
    conn: Connection, schema: str, column_data_type: str, *, additions: bool = True
) -> list[Version]:
    """Create the event store in ``schema``, or bring an existing one up to date.

    Runs in the caller's transaction (the Alembic branch's) under the schema
    lock, so it serialises with ``init()`` and the ``migrate`` command. Returns
    the reference's versions applied: ``[SCHEMA_VERSION]`` for a new schema,
    ``[]`` when it was already current. With ``additions`` (the default) this
    package's additions are then created where missing; the Alembic branch's
    base revision passes False, leaving them to their own revision.
    """
    lock_schema_changes(conn)
    if not schema_exists(conn, schema):
        create_schema(conn, schema, column_data_type, additions=additions)
        return [SCHEMA_VERSION]
    recorded = recorded_versions(conn, schema)
    if not recorded:
        raise RuntimeError(
            f"schema {schema!r} holds events but records no schema version "
            "(schema_migrations is missing or empty): it cannot be upgraded"
        )
    steps = pending(recorded)
    problem = unsupported(steps, schema)
    if problem is not None:
        raise RuntimeError(problem)
    for migration in steps:
        apply(conn, schema, migration)
    if additions:
        add_additions(conn, schema)
    return [m.version for m in steps]
