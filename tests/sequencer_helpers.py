"""Helpers of the sequencer tests: raw views of ``$all`` and of the queue.

They read the tables directly on the admin engine, so looking never advances
the sequencer (a store's reads of ``$all`` would).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Engine


def quoted(schema: str) -> str:
    """``schema`` as a quoted identifier (any name the store accepts)."""
    return '"' + schema.replace('"', '""') + '"'


def all_rows(admin_engine: Engine, schema: str) -> list[tuple[int, str, int]]:
    """``$all`` as stored: (position, original stream_uuid, original version)."""
    with admin_engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"""SELECT se.stream_version, s.stream_uuid, se.original_stream_version
                FROM {quoted(schema)}.stream_events se
                JOIN {quoted(schema)}.streams s ON s.stream_id = se.original_stream_id
                WHERE se.stream_id = 0 ORDER BY se.stream_version"""
        ).all()
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def numbered(
    admin_engine: Engine, schema: str, count: int, timeout: float = 10.0
) -> list[tuple[int, str, int]]:
    """``$all`` as stored once it holds ``count`` rows: an append whose own
    call found the sequencer busy, or whose commit a worker thread watches,
    is numbered milliseconds after the call returns."""
    deadline = time.monotonic() + timeout
    rows = all_rows(admin_engine, schema)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(0.01)
        rows = all_rows(admin_engine, schema)
    return rows


def settle(store: Any) -> None:
    """Wait until ``store``'s worker thread did what it was handed so far."""
    sequencer = store._sequencer
    assert sequencer is not None and sequencer.drain(), "the sequencer's worker is stuck"


def calls_own(store: Any, statements: list[str]) -> list[str]:
    """The statements a storage call sent itself: without the sequencer's
    calls (an append numbering itself into $all after its commit, on a pooled
    connection in autocommit mode) and, in sequencer mode, without the store's
    timeout, which a connection that such a call opened sets once, at its
    first use by a storage call."""
    numbering = ("eventstore_help(", "eventstore_sequence(")
    own = [s for s in statements if not any(call in s for call in numbering)]
    if store.global_order == "sequencer":
        own = [s for s in own if not s.startswith("SELECT set_config('statement_timeout'")]
    return own


def waiting(admin_engine: Engine, schema: str) -> int:
    """Committed appends waiting in the queue."""
    with admin_engine.connect() as conn:
        return int(
            conn.exec_driver_sql(f"SELECT count(*) FROM {quoted(schema)}.unsequenced").scalar()
        )


def all_head(admin_engine: Engine, schema: str) -> int:
    with admin_engine.connect() as conn:
        return int(
            conn.exec_driver_sql(
                f"SELECT stream_version FROM {quoted(schema)}.streams WHERE stream_id = 0"
            ).scalar()
        )


def commit_behind_the_hooks(conn: Connection) -> None:
    """Commit on the DBAPI connection itself: no SQLAlchemy commit event fires,
    as when a process dies right after its commit reached the server."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    dbapi.commit()


def assert_gap_free_in_stream_order(rows: list[tuple[int, str, int]]) -> None:
    """Positions 1..N; each stream's events in $all in stream order, none missing."""
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    last: dict[str, int] = {}
    for _, stream, version in rows:
        assert version == last.get(stream, 0) + 1, (stream, version, last.get(stream))
        last[stream] = version


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def wait_until_blocked(admin_engine: Engine, application_name: str, timeout: float = 5.0) -> None:
    """Wait until a session of ``application_name`` waits on a lock."""

    def blocked() -> bool:
        with admin_engine.connect() as conn:
            return bool(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = %(name)s AND wait_event_type = 'Lock'",
                    {"name": application_name},
                ).scalar()
            )

    assert eventually(blocked, timeout), f"{application_name} never waited on a lock"
