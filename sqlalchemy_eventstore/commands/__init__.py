"""The ``eventstore`` command's work as plain functions, one module per concern.

- :mod:`.schema`: the reference's mix tasks -- ``create``, ``drop``, ``init``,
  ``migrate``, ``migrations``;
- :mod:`.check`: ``check``, the schema's invariants;
- :mod:`.parked`: a subscription's parked events -- ``parked_list``,
  ``parked_replay``, ``parked_discard``;
- :mod:`.operate`: running a store -- ``status``, ``tail``,
  ``subscriptions_list``, ``subscription_reset``, ``subscription_delete``;
- :mod:`._common`: URL parsing, connections, failures as :class:`CommandError`.

Each takes the database URL and the event store's schema, prints what it did
(unless ``quiet``) and raises :class:`CommandError` -- one line, password
hidden -- for every failure. The ``eventstore`` console command
(:mod:`sqlalchemy_eventstore.cli`) is a thin shell over them.
"""

from __future__ import annotations

from ._common import CommandError
from .check import CheckReport, check
from .operate import (
    status,
    subscription_delete,
    subscription_reset,
    subscriptions_list,
    tail,
)
from .parked import parked_discard, parked_list, parked_replay
from .schema import MigrationStatus, create, drop, init, migrate, migrations

__all__ = [
    "CheckReport",
    "CommandError",
    "MigrationStatus",
    "check",
    "create",
    "drop",
    "init",
    "migrate",
    "migrations",
    "parked_discard",
    "parked_list",
    "parked_replay",
    "status",
    "subscription_delete",
    "subscription_reset",
    "subscriptions_list",
    "tail",
]
