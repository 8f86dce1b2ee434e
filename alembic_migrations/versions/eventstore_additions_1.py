"""Event store additions 1: this package's own tables beside the reference's.

Creates the ``parked_events`` table (parked events of persistent
subscriptions) and what ``global_order="sequencer"`` needs (the ``unsequenced``
queue, its functions and triggers) with the idempotent statements that ``EventStore.init()`` and
the ``migrate`` command run (``sqlalchemy_eventstore.storage.schema.additions_ddl``),
so a schema made by any of them, or by the Elixir library, ends up the same.
The reference's tables, functions and ``schema_migrations`` rows are left as
they are. Downgrading drops the additions only.

Revision ID: eventstore_additions_1
Revises: eventstore_1_3_2
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from alembic import context, op

from sqlalchemy_eventstore.migrations import branch_options
from sqlalchemy_eventstore.storage.schema import (
    additions_ddl,
    drop_additions_ddl,
    lock_schema_changes,
)

revision = "eventstore_additions_1"
down_revision: str | None = "eventstore_1_3_2"
branch_labels: tuple[str, ...] | None = None
depends_on: str | None = None


def _run(statements: list[str]) -> None:
    if context.is_offline_mode():
        # Printed as a script: Alembic adds the terminating semicolons.
        for statement in statements:
            op.execute(statement.strip().rstrip(";"))
    else:
        bind = op.get_bind()
        # Serialised with init() and the migrate command, as the base revision is.
        lock_schema_changes(bind)
        for statement in statements:
            bind.exec_driver_sql(statement)


def upgrade() -> None:
    _run(additions_ddl(branch_options(context.config).schema))


def downgrade() -> None:
    _run(drop_additions_ddl(branch_options(context.config).schema))
