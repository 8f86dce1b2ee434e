"""Alembic integration: the event store's branch, and autogenerate filters.

The package ships an Alembic branch labelled ``eventstore`` whose base revision
creates what ``EventStore.init()`` creates. Use it from your own environment:

1. Add it to ``version_locations`` in ``alembic.ini``, beside your own, in the
   package-resource form that holds wherever the package is installed (it
   contains a ``:``, so separate the list with spaces)::

       [alembic]
       script_location = %(here)s/migrations
       path_separator = space
       version_locations = %(here)s/migrations/versions sqlalchemy_eventstore.alembic_migrations:versions

   Code that builds its own ``Config`` can use the directory,
   :func:`version_location`, with ``config.set_main_option(
   "version_locations", ...)`` before running a command.

2. Choose the event store's schema and column type, once, in the same
   ``[alembic]`` section (the defaults are shown)::

       eventstore_schema = public
       eventstore_column_data_type = bytea

   These persist with the project, so ``upgrade`` and ``downgrade`` always
   agree on the schema (a ``-x`` argument forgotten on a downgrade would aim it
   at the wrong one). Code can set them with ``config.set_main_option()``.

3. ``alembic upgrade eventstore@head`` (or ``heads``);
   ``alembic downgrade eventstore@base`` removes only the event store.

4. Keep autogenerate off the event store's tables in ``env.py``::

       from functools import partial
       from sqlalchemy_eventstore import migrations

       context.configure(
           ...,
           include_name=partial(migrations.include_name, schema="public"),
           include_object=partial(migrations.include_object, schema="public"),
       )

   Alternatively, when your models refer to the event store's tables (a
   ``ForeignKey("streams.stream_id")``) or you want autogenerate to compare
   them, add their metadata to ``target_metadata`` instead of filtering::

       from sqlalchemy_eventstore.models import metadata as eventstore_metadata
       target_metadata = [Base.metadata, eventstore_metadata]

   ``models.metadata`` is the ``public``/``bytea`` layout; for another schema
   or ``jsonb`` use ``models.metadata_for(column_data_type, schema)``. Do not
   combine that with ``include_name`` alone: it hides the reflected tables
   only, so autogenerate would propose creating them.

Your own revisions live on their own branch: create the first with
``alembic revision -m "..." --head=base --branch-label=app
--version-path=migrations/versions``, and each later one with
``--head=app@head`` (the script directory has two heads).
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .models import metadata

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "BRANCH_LABEL",
    "COLUMN_DATA_TYPE_OPTION",
    "SCHEMA_OPTION",
    "TABLE_NAMES",
    "VERSION_LOCATION_RESOURCE",
    "BranchOptions",
    "branch_options",
    "include_name",
    "include_object",
    "version_location",
]

#: The branch label of the event store's revisions.
BRANCH_LABEL = "eventstore"
#: ``[alembic]`` option naming the event store's Postgres schema.
SCHEMA_OPTION = "eventstore_schema"
#: ``[alembic]`` option naming the data/metadata column type: bytea or jsonb.
COLUMN_DATA_TYPE_OPTION = "eventstore_column_data_type"
#: :func:`version_location` in Alembic's ``package:path`` resource form.
VERSION_LOCATION_RESOURCE = "sqlalchemy_eventstore.alembic_migrations:versions"
#: The event store's table names.
TABLE_NAMES: frozenset[str] = frozenset(table.name for table in metadata.sorted_tables)


def version_location() -> str:
    """The directory of the ``eventstore`` branch's revisions, for ``version_locations``.

    Found through the import system, so it is right for a wheel install (inside
    site-packages) and for an editable install (the repository's
    ``alembic_migrations/versions``) alike.
    """
    ref = resources.files("sqlalchemy_eventstore.alembic_migrations").joinpath("versions")
    if not isinstance(ref, Path) or not ref.is_dir():
        raise RuntimeError(
            f"the eventstore Alembic branch is not a directory ({ref!r}): "
            "install sqlalchemy_eventstore unzipped"
        )
    return str(ref)


class BranchOptions(NamedTuple):
    """Where the branch puts the event store, and its payload column type."""

    schema: str
    column_data_type: str


def branch_options(config: Config) -> BranchOptions:
    """Read :data:`SCHEMA_OPTION` and :data:`COLUMN_DATA_TYPE_OPTION` from ``config``.

    Both are main options (the ``[alembic]`` section, or ``set_main_option``);
    unset or empty means ``public`` and ``bytea``.
    """
    schema = (config.get_main_option(SCHEMA_OPTION) or "").strip() or "public"
    column_data_type = (config.get_main_option(COLUMN_DATA_TYPE_OPTION) or "").strip() or "bytea"
    if column_data_type not in ("bytea", "jsonb"):
        raise ValueError(
            f"{COLUMN_DATA_TYPE_OPTION} must be 'bytea' or 'jsonb', got {column_data_type!r}"
        )
    return BranchOptions(schema, column_data_type)


def _is_eventstore_table(name: str | None, table_schema: str | None, schema: str) -> bool:
    # Alembic reports the default schema as None; count it as "public".
    return name in TABLE_NAMES and (table_schema or "public") == schema


def include_name(
    name: str | None,
    type_: str,
    parent_names: Mapping[str, str | None],
    *,
    schema: str = "public",
) -> bool:
    """Alembic ``include_name`` hook: skip reflecting the event store's tables.

    ``schema`` is the event store's (bind it with ``functools.partial``); tables
    of the same names in other schemas are left alone.
    """
    if type_ == "table":
        return not _is_eventstore_table(name, parent_names.get("schema_name"), schema)
    return True


def include_object(
    object_: Any,
    name: str | None,
    type_: str,
    reflected: bool,
    compare_to: Any,
    *,
    schema: str = "public",
) -> bool:
    """Alembic ``include_object`` hook: leave the event store's tables out of the diff.

    Applies to the database's tables and to those of ``target_metadata`` alike.
    """
    if type_ == "table":
        return not _is_eventstore_table(name, getattr(object_, "schema", None), schema)
    return True
