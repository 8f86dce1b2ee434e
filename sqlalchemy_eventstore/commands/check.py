"""``eventstore check``: verify the schema's invariants."""

from __future__ import annotations

from sqlalchemy.engine import URL

from ..storage import upgrades
from ..storage.checker import CheckReport, check_schema
from ._common import (
    CommandError,
    _check_schema,
    _connection,
    _failures,
    _not_initialised,
    _parse_url,
    _say,
    _show,
)

__all__ = ["CheckReport", "check"]


def check(
    url: str | URL, schema: str = "public", quiet: bool = False, *, allow_holes: bool = False
) -> CheckReport:
    """Verify the event store's invariants; raise :class:`CommandError` on a violation.

    First numbers committed appends still waiting for ``$all``
    (``global_order="sequencer"``), then checks: ``$all`` positions 1..N
    without holes, every event linked into ``$all`` exactly once, every
    stream's versions without holes, each stream in stream order in ``$all``.
    Holes that hard deletes leave in ``$all`` are violations unless
    ``allow_holes``. Prints what it found (unless ``quiet``) and returns it.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    with (
        _failures(f'cannot check schema "{schema}"', given),
        _connection(url_, autocommit=True) as conn,
    ):
        if upgrades.recorded_versions(conn, schema) is None:
            raise _not_initialised(schema, given.database)
        report = check_schema(conn, schema, allow_holes=allow_holes)
    _say(quiet, f"EventStore: {_show(given)} schema {schema}")
    for line in report.lines():
        _say(quiet, f"  {line}")
    problems = report.violations()
    if problems:
        raise CommandError(f"check found {len(problems)} kinds of violation in schema {schema!r}")
    return report
