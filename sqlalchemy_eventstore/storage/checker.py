"""The invariants of an event store's tables, verified by ``eventstore check``.

* ``$all`` holds positions 1..N without holes, N being the ``$all`` row's
  version (holes left by hard deletes are reported apart: allowed on request);
* every stored event is linked into ``$all`` exactly once (the primary key
  ``(event_id, stream_id)`` rules out twice: missing is what can go wrong);
* every stream holds versions 1..stream_version without holes;
* each stream's events appear in ``$all`` in stream order.

Committed appends still waiting to be numbered (``global_order="sequencer"``)
are numbered first, so a waiting event is not reported as unlinked. Every
query is a single pass over an index or a table: fine at millions of events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, text

from .schema import quote_ident
from .sequencer_sql import QUEUE_TABLE

__all__ = ["CheckReport", "check_schema"]

#: How many examples of each violation a report keeps.
EXAMPLES = 10


@dataclass
class CheckReport:
    """What ``check`` found. ``ok`` unless a violation is listed."""

    head: int = 0
    linked: int = 0
    events: int = 0
    streams: int = 0
    numbered_now: int = 0
    holes: list[tuple[int, int]] = field(default_factory=list)
    hole_positions: int = 0
    unlinked_events: int = 0
    unlinked_examples: list[str] = field(default_factory=list)
    broken_streams: list[str] = field(default_factory=list)
    broken_stream_count: int = 0
    out_of_order_streams: list[str] = field(default_factory=list)
    out_of_order_count: int = 0
    allow_holes: bool = False

    def violations(self) -> list[str]:
        """One line per kind of violation found."""
        found = []
        if self.hole_positions and not self.allow_holes:
            shown = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in self.holes)
            found.append(f"$all has {self.hole_positions} missing positions: {shown}")
        if self.unlinked_events:
            found.append(
                f"{self.unlinked_events} events are not linked into $all: "
                + ", ".join(self.unlinked_examples)
            )
        if self.broken_stream_count:
            found.append(
                f"{self.broken_stream_count} streams have missing versions: "
                + ", ".join(self.broken_streams)
            )
        if self.out_of_order_count:
            found.append(
                f"{self.out_of_order_count} streams appear out of stream order in $all: "
                + ", ".join(self.out_of_order_streams)
            )
        return found

    @property
    def ok(self) -> bool:
        return not self.violations()

    def lines(self) -> list[str]:
        """A human summary: the figures, then each violation (or "OK")."""
        out = [
            f"$all head: {self.head}; positions linked: {self.linked}",
            f"events: {self.events}; streams: {self.streams}",
            f"waiting appends numbered now: {self.numbered_now}",
        ]
        if self.hole_positions and self.allow_holes:
            out.append(f"holes in $all (allowed): {self.hole_positions} positions")
        problems = self.violations()
        out.extend(f"VIOLATION: {line}" for line in problems)
        if not problems:
            out.append("OK: no violation found")
        return out


def _number_waiting(conn: Connection, s: str, schema: str) -> int:
    """Number committed waiting appends (when the schema has the queue)."""
    queue = conn.execute(text("SELECT to_regclass(:name)"), {"name": f"{s}.{QUEUE_TABLE}"}).scalar()
    if queue is None:
        return 0
    before = conn.exec_driver_sql(f"SELECT count(*) FROM {s}.{QUEUE_TABLE}").scalar_one()
    conn.exec_driver_sql(f"SELECT {s}.eventstore_sequence(true)")
    return int(before)


def check_schema(conn: Connection, schema: str, *, allow_holes: bool = False) -> CheckReport:
    """Verify the invariants of the event store in ``schema`` (``conn`` in autocommit).

    The figures are read in one REPEATABLE READ transaction, after numbering
    what waits: a consistent view even while writers carry on.
    """
    s = quote_ident(schema)
    report = CheckReport(allow_holes=allow_holes)
    report.numbered_now = _number_waiting(conn, s, schema)
    conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        _figures(conn, s, report)
    finally:
        conn.exec_driver_sql("COMMIT")
    return report


def _figures(conn: Connection, s: str, report: CheckReport) -> None:
    one = conn.exec_driver_sql
    report.head = int(
        one(f"SELECT stream_version FROM {s}.streams WHERE stream_id = 0").scalar_one()
    )
    report.linked = int(
        one(f"SELECT count(*) FROM {s}.stream_events WHERE stream_id = 0").scalar_one()
    )
    report.events = int(one(f"SELECT count(*) FROM {s}.events").scalar_one())
    report.streams = int(one(f"SELECT count(*) FROM {s}.streams WHERE stream_id <> 0").scalar_one())
    gaps = one(
        f"""
        SELECT prev + 1, stream_version - 1 FROM (
            SELECT stream_version,
                   lag(stream_version, 1, CAST(0 AS bigint)) OVER (ORDER BY stream_version) AS prev
            FROM {s}.stream_events WHERE stream_id = 0
        ) x WHERE stream_version > prev + 1
        UNION ALL
        SELECT coalesce(max(stream_version), 0) + 1, %(head)s
        FROM {s}.stream_events WHERE stream_id = 0
        HAVING coalesce(max(stream_version), 0) < %(head)s
        """,
        {"head": report.head},
    ).all()
    report.hole_positions = sum(int(b) - int(a) + 1 for a, b in gaps)
    report.holes = sorted((int(a), int(b)) for a, b in gaps)[:EXAMPLES]
    unlinked = one(
        f"""
        SELECT CAST(e.event_id AS text), count(*) OVER () FROM {s}.events e
        WHERE NOT EXISTS (
            SELECT 1 FROM {s}.stream_events se WHERE se.event_id = e.event_id AND se.stream_id = 0
        ) LIMIT {EXAMPLES}
        """
    ).all()
    report.unlinked_events = int(unlinked[0][1]) if unlinked else 0
    report.unlinked_examples = [str(row[0]) for row in unlinked]
    # With unique (stream_id, stream_version): count = max = version means 1..version.
    broken = one(
        f"""
        SELECT st.stream_uuid, count(*) OVER () FROM {s}.streams st
        LEFT JOIN {s}.stream_events se ON se.stream_id = st.stream_id
        WHERE st.stream_id <> 0
        GROUP BY st.stream_id, st.stream_uuid, st.stream_version
        HAVING count(se.stream_version) <> st.stream_version
            OR coalesce(max(se.stream_version), 0) <> st.stream_version
            OR coalesce(min(se.stream_version), 1) <> 1
        LIMIT {EXAMPLES}
        """
    ).all()
    report.broken_stream_count = int(broken[0][1]) if broken else 0
    report.broken_streams = [str(row[0]) for row in broken]
    disordered = one(
        f"""
        SELECT st.stream_uuid, count(*) OVER () FROM (
            SELECT DISTINCT original_stream_id FROM (
                SELECT original_stream_id, original_stream_version,
                       lag(original_stream_version) OVER (
                           PARTITION BY original_stream_id ORDER BY stream_version
                       ) AS prev
                FROM {s}.stream_events WHERE stream_id = 0
            ) x WHERE original_stream_version < prev
        ) d JOIN {s}.streams st ON st.stream_id = d.original_stream_id
        LIMIT {EXAMPLES}
        """
    ).all()
    report.out_of_order_count = int(disordered[0][1]) if disordered else 0
    report.out_of_order_streams = [str(row[0]) for row in disordered]
