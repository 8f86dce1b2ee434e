"""Event store schema v1.3.2: tables, functions, triggers and the ``$all`` stream.

The base of the ``eventstore`` branch. Upgrading creates exactly what
``EventStore.init()`` creates (both take their DDL from
``sqlalchemy_eventstore.storage.schema``); a schema that already holds an event
store -- made by ``init()`` or by the Elixir library -- is adopted and brought up
to v1.3.2 instead. This package's own additions come with the next revision,
``eventstore_additions_1``. Downgrading drops the event store's tables and functions,
and its schema when nothing else is left in it (never ``public``).

The schema and the data/metadata column type come from the ``[alembic]``
options ``eventstore_schema`` (default ``public``) and
``eventstore_column_data_type`` (``bytea`` or ``jsonb``, default ``bytea``).

Revision ID: eventstore_1_3_2
Revises:
Create Date: 2024-01-01 00:00:00
"""

from __future__ import annotations

from alembic import context, op

from sqlalchemy_eventstore.migrations import branch_options
from sqlalchemy_eventstore.storage.schema import drop_schema_ddl, schema_ddl
from sqlalchemy_eventstore.storage.upgrades import upgrade_schema

revision = "eventstore_1_3_2"
down_revision: str | None = None
branch_labels = ("eventstore",)
depends_on: str | None = None


def _run(statements: list[str]) -> None:
    if context.is_offline_mode():
        # Printed as a script: Alembic adds the terminating semicolons.
        for statement in statements:
            op.execute(statement.strip().rstrip(";"))
    else:
        # Sent as they are, like init() sends them (no bind-parameter parsing).
        bind = op.get_bind()
        for statement in statements:
            bind.exec_driver_sql(statement)


def upgrade() -> None:
    options = branch_options(context.config)
    if context.is_offline_mode():
        # No database to look at: print the statements that create it all.
        _run(schema_ddl(options.schema, options.column_data_type))
    else:
        # The additions (parked_events, ...) are the next revision's.
        upgrade_schema(op.get_bind(), options.schema, options.column_data_type, additions=False)


def downgrade() -> None:
    _run(drop_schema_ddl(branch_options(context.config).schema))
