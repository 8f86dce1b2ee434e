"""The SQL text of every storage operation, rendered once per store.

Statements are plain SQL with the store's schema quoted into them and
``%(name)s`` parameters, run with ``Connection.exec_driver_sql``: both psycopg2
and psycopg 3 accept that style, and no per-call SQL compilation is paid on the
hot paths. Event batches travel as arrays unnested server-side, so one append
is one statement whatever its size, with no bind-parameter ceiling.
"""

from __future__ import annotations

from .prepared import Prepared
from .schema import quote_ident
from .sequencer_sql import has_help_procedure_sql

__all__ = ["Statements", "SORT_COLUMNS"]

SORT_COLUMNS = (
    "stream_id",
    "stream_uuid",
    "stream_version",
    "created_at",
    "deleted_at",
)

# Columns of a RecordedEvent row, in the order ``reader.to_recorded_event`` expects.
# UUIDs come as text: RecordedEvent holds them as str, and the drivers' uuid.UUID
# parsing (then str() back) cost a fifth of a page's decoding time.
_EVENT_COLUMNS = """
    se.stream_version AS event_number,
    CAST(e.event_id AS text) AS event_id,
    os.stream_uuid,
    se.original_stream_version,
    e.event_type,
    e.data,
    e.metadata,
    CAST(e.causation_id AS text) AS causation_id,
    CAST(e.correlation_id AS text) AS correlation_id,
    e.created_at
"""


def _append(s: str, data_type: str, *, may_create: bool = True, sequenced: bool = False) -> str:
    # Without may_create (an expected version > 0, or STREAM_EXISTS) the
    # `created` CTE could never insert: the variant leaves it out, which saves
    # its planning (about a tenth of a millisecond per append) and nothing else.
    created = (
        f"""
-- A new stream. ON CONFLICT DO NOTHING waits for a concurrent creator of the
-- same stream_uuid and then yields no row rather than a unique violation: the
-- caller sees the stream as existing (and retries once for ANY_VERSION).
created AS (
    INSERT INTO {s}.streams (stream_uuid, stream_version)
    SELECT %(stream_uuid)s, %(count)s
    WHERE NOT EXISTS (SELECT 1 FROM updated)
    ON CONFLICT (stream_uuid) DO NOTHING
    RETURNING stream_id, CAST(0 AS bigint) AS initial_version
),"""
        if may_create
        else ""
    )
    created_union = (
        """
    UNION ALL
    SELECT stream_id, initial_version FROM created"""
        if may_create
        else ""
    )
    quiet, quiet_check = ("", "")
    if sequenced:
        # The stream row's own NOTIFY is left to the sequencer's batch (see
        # sequencer_sql): a transaction-local setting names this stream, set
        # before its row changes (the check is evaluated before the update).
        quiet = """
quiet AS (
    SELECT set_config('eventstore.quiet_stream', %(stream_uuid)s, true)
),"""
        quiet_check = """
      AND EXISTS (SELECT 1 FROM quiet)"""
    return f"""
WITH{quiet}
new_events AS (
    SELECT * FROM unnest(
        CAST(%(event_ids)s AS uuid[]),
        CAST(%(event_types)s AS text[]),
        CAST(%(causation_ids)s AS uuid[]),
        CAST(%(correlation_ids)s AS uuid[]),
        CAST(%(data)s AS {data_type}[]),
        CAST(%(metadata)s AS {data_type}[])
    ) WITH ORDINALITY AS e(event_id, event_type, causation_id, correlation_id, data, metadata, idx)
),
-- Optimistic concurrency. The UPDATE takes the stream row's lock; a concurrent
-- appender to the same stream waits here until we commit, and READ COMMITTED
-- then re-evaluates its WHERE against our committed row: with the same expected
-- version it matches nothing, and it reports wrong_expected_version instead of
-- writing. With ANY_VERSION (expected < 0) it simply follows on, gap-free.
updated AS (
    UPDATE {s}.streams SET stream_version = stream_version + %(count)s
    WHERE stream_uuid = %(stream_uuid)s
      AND deleted_at IS NULL
      AND (CAST(%(expected)s AS bigint) < 0 OR stream_version = %(expected)s){quiet_check}
    RETURNING stream_id, stream_version - %(count)s AS initial_version
),{created}
stream AS (
    SELECT stream_id, initial_version FROM updated{created_union}
),
{_global_order(s, sequenced)}
inserted_events AS (
    INSERT INTO {s}.events
        (event_id, event_type, causation_id, correlation_id, data, metadata)
    SELECT event_id, event_type, causation_id, correlation_id, data, metadata
    FROM new_events
    WHERE EXISTS (SELECT 1 FROM stream)
),
inserted_stream_events AS (
    INSERT INTO {s}.stream_events
        (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
    SELECT ne.event_id, st.stream_id, st.initial_version + ne.idx,
           st.stream_id, st.initial_version + ne.idx
    FROM new_events ne, stream st
{"" if sequenced else _ALL_LINKS}
)
-- One row when the events were written, none when refused: the caller then
-- reads the stream's state to say why (refusals are rare; the lean statement
-- keeps every successful append cheaper to plan).
SELECT stream_id, initial_version FROM stream
"""


_ALL_LINKS = """    UNION ALL
    SELECT ne.event_id, 0, a.initial_version + ne.idx,
           st.stream_id, st.initial_version + ne.idx
    FROM new_events ne, stream st, all_stream a"""


def _global_order(s: str, sequenced: bool) -> str:
    """The CTE that places an append in ``$all``: now (lock) or after commit (sequencer)."""
    if sequenced:
        # global_order="sequencer": no $all lock. The appended range waits in
        # the queue until a sequencer (or any writer numbering $all) links it,
        # after this transaction commits. The queue row is formed from
        # `stream`, so its seq is drawn after this stream's row lock: one
        # stream's waiting rows are in stream order.
        return f"""
queued AS (
    INSERT INTO {s}.unsequenced (stream_id, first_version, last_version)
    SELECT stream_id, initial_version + 1, initial_version + %(count)s FROM stream
),"""
    # Global order. Every append takes the $all row's lock (always after its own
    # stream's row, as the reference does, so appenders never deadlock each other)
    # and holds it until commit: appends commit one at a time in $all order, so
    # $all positions are gap-free and a reader never sees position n+1 before n.
    # It runs only once the stream check passed (EXISTS on `stream`). The
    # eventstore_link_waiting trigger (sequencer_sql) first numbers any
    # committed sequencer-mode appends still waiting, below this one.
    return f"""
all_stream AS (
    UPDATE {s}.streams SET stream_version = stream_version + %(count)s
    WHERE stream_id = 0 AND EXISTS (SELECT 1 FROM stream)
    RETURNING stream_version - %(count)s AS initial_version
),"""


def _link(s: str) -> str:
    return f"""
WITH
link_ids AS (
    SELECT * FROM unnest(CAST(%(event_ids)s AS uuid[])) WITH ORDINALITY AS l(event_id, idx)
),
originals AS (
    SELECT l.event_id, l.idx, se.original_stream_id, se.original_stream_version
    FROM link_ids l
    JOIN {s}.stream_events se
      ON se.event_id = l.event_id AND se.stream_id = se.original_stream_id
),
current_stream AS (
    SELECT stream_id, stream_version, deleted_at FROM {s}.streams
    WHERE stream_uuid = %(stream_uuid)s
),
checks AS (
    SELECT
        (SELECT count(*) FROM originals) AS found,
        EXISTS (
            SELECT 1 FROM {s}.stream_events se, current_stream c
            WHERE se.stream_id = c.stream_id
              AND se.event_id IN (SELECT event_id FROM link_ids)
        ) AS already_linked
),
-- Same optimistic concurrency as an append (see the append statement); writes
-- happen only when every event exists and none is linked here yet.
updated AS (
    UPDATE {s}.streams SET stream_version = stream_version + %(count)s
    WHERE stream_uuid = %(stream_uuid)s
      AND deleted_at IS NULL
      AND (CAST(%(expected)s AS bigint) < 0 OR stream_version = %(expected)s)
      AND (SELECT found = %(count)s AND NOT already_linked FROM checks)
    RETURNING stream_id, stream_version - %(count)s AS initial_version
),
created AS (
    INSERT INTO {s}.streams (stream_uuid, stream_version)
    SELECT %(stream_uuid)s, %(count)s
    WHERE %(may_create)s AND NOT EXISTS (SELECT 1 FROM updated)
      AND (SELECT found = %(count)s AND NOT already_linked FROM checks)
    ON CONFLICT (stream_uuid) DO NOTHING
    RETURNING stream_id, CAST(0 AS bigint) AS initial_version
),
stream AS (
    SELECT stream_id, initial_version FROM updated
    UNION ALL
    SELECT stream_id, initial_version FROM created
),
inserted AS (
    INSERT INTO {s}.stream_events
        (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
    SELECT o.event_id, st.stream_id, st.initial_version + o.idx,
           o.original_stream_id, o.original_stream_version
    FROM originals o, stream st
)
SELECT st.stream_id, st.initial_version,
       c.stream_id AS current_id, c.stream_version AS current_version,
       c.deleted_at IS NOT NULL AS deleted,
       k.found, k.already_linked
FROM checks k
LEFT JOIN stream st ON true
LEFT JOIN current_stream c ON true
"""


def _read(s: str, direction: str) -> str:
    cmp, order = (">=", "ASC") if direction == "forward" else ("<=", "DESC")
    # One round trip: the stream row (absent -> not found; deleted_at -> deleted)
    # with its page of events joined laterally, in stream order.
    #
    # The plan must cost O(page) at any position, with or without statistics.
    # So the page is taken from stream_events alone -- a range scan of
    # ix_stream_events (stream_id, stream_version) in index order, stopped by the
    # LIMIT -- and only those rows are then joined to events and to their
    # original stream, one primary-key lookup each (LATERAL ... OFFSET 0 keeps
    # the planner from flattening them into a hash join). Two traps avoided:
    # - joining before the LIMIT lets the planner sort every row from `start`
    #   on, whenever it underestimates the stream's rows (it judges a stream_id
    #   known only at run time by the column's distinct count: 1/streams);
    # - a LIMIT it can read as a constant lets it pick "bitmap scan + sort" when
    #   it estimates fewer matching rows than the limit. `LIMIT (SELECT n)` is
    #   an init-plan value, so the planner assumes a small fraction of the rows
    #   is wanted and keeps the ordered index scan.
    # The nested loops keep the index order, so the ORDER BY costs no sort.
    return f"""
SELECT t.stream_id AS target_id, t.deleted_at IS NOT NULL AS deleted, x.*
FROM {s}.streams t
LEFT JOIN LATERAL (
    SELECT {_EVENT_COLUMNS}
    FROM (
        SELECT se.stream_version, se.event_id,
               se.original_stream_id, se.original_stream_version
        FROM {s}.stream_events se
        WHERE se.stream_id = t.stream_id
          AND t.deleted_at IS NULL
          AND se.stream_version {cmp} %(start)s
        ORDER BY se.stream_version {order}
        LIMIT (SELECT CAST(%(count)s AS bigint))
    ) se
    CROSS JOIN LATERAL (
        SELECT e.event_id, e.event_type, e.data, e.metadata,
               e.causation_id, e.correlation_id, e.created_at
        FROM {s}.events e WHERE e.event_id = se.event_id OFFSET 0
    ) e
    CROSS JOIN LATERAL (
        SELECT os.stream_uuid FROM {s}.streams os
        WHERE os.stream_id = se.original_stream_id OFFSET 0
    ) os
    ORDER BY se.stream_version {order}
) x ON true
WHERE t.stream_uuid = %(stream_uuid)s
"""


def _paginate(s: str, sort_by: str, sort_dir: str) -> str:
    return f"""
SELECT total.n AS total_entries, p.*
FROM (
    SELECT count(*) AS n FROM {s}.streams
    WHERE CAST(%(pattern)s AS text) IS NULL OR stream_uuid LIKE %(pattern)s
) total
LEFT JOIN LATERAL (
    SELECT stream_id, stream_uuid, stream_version, created_at, deleted_at
    FROM {s}.streams
    WHERE CAST(%(pattern)s AS text) IS NULL OR stream_uuid LIKE %(pattern)s
    ORDER BY {sort_by} {sort_dir} NULLS LAST, stream_id {sort_dir}
    LIMIT %(limit)s OFFSET %(offset)s
) p ON true
"""


class Statements:
    """Every statement of one store, for its schema and column data type.

    ``prepare``: run the hot statements (appends, page reads) as server-side
    prepared statements on psycopg2 (see :mod:`.prepared`); False behind a
    transaction-mode pooler. ``global_order``: "lock" (appends number $all
    themselves) or "sequencer" (appends wait in the queue; see
    :mod:`.sequencer_sql`).
    """

    def __init__(
        self,
        schema: str,
        column_data_type: str,
        *,
        prepare: bool = False,
        global_order: str = "lock",
    ) -> None:
        self.schema = schema
        self.column_data_type = column_data_type
        self.prepare = prepare
        s = quote_ident(schema)
        sequenced = global_order == "sequencer"
        self.append = _append(s, self.column_data_type, sequenced=sequenced)
        self.append_existing = _append(
            s, self.column_data_type, may_create=False, sequenced=sequenced
        )
        self.link = _link(s)
        self.read_forward = _read(s, "forward")
        self.read_backward = _read(s, "backward")
        payload = f"{column_data_type}[]"
        append_types = {
            "stream_uuid": "text",
            "count": "bigint",
            "expected": "bigint",
            "event_ids": "uuid[]",
            "event_types": "text[]",
            "causation_ids": "uuid[]",
            "correlation_ids": "uuid[]",
            "data": payload,
            "metadata": payload,
        }
        read_types = {"stream_uuid": "text", "start": "bigint", "count": "bigint"}
        self.prepared_append = Prepared(self.append, append_types)
        self.prepared_append_existing = Prepared(self.append_existing, append_types)
        self.prepared_read_forward = Prepared(self.read_forward, read_types)
        self.prepared_read_backward = Prepared(self.read_backward, read_types)
        self.stream_info = f"""SELECT stream_id, stream_uuid, stream_version, created_at, deleted_at
                FROM {s}.streams WHERE stream_uuid = %(stream_uuid)s"""
        self.paginate = {
            (col, d): _paginate(s, col, d) for col in SORT_COLUMNS for d in ("ASC", "DESC")
        }
        # Soft delete: the stream row keeps its events; reads and appends then
        # see deleted_at and refuse. The UPDATE's row lock orders it against
        # concurrent appends exactly as an append would be.
        self.soft_delete = f"""
WITH current_stream AS (
    SELECT stream_id, stream_version, deleted_at FROM {s}.streams
    WHERE stream_uuid = %(stream_uuid)s
),
deleted AS (
    UPDATE {s}.streams SET deleted_at = now()
    WHERE stream_uuid = %(stream_uuid)s AND deleted_at IS NULL
      AND (CAST(%(expected)s AS bigint) < 0 OR stream_version = %(expected)s)
    RETURNING stream_id
)
SELECT d.stream_id, c.stream_id AS current_id, c.stream_version AS current_version,
       c.deleted_at IS NOT NULL AS deleted
FROM (SELECT 1) AS one LEFT JOIN deleted d ON true LEFT JOIN current_stream c ON true
"""
        self.enable_hard_deletes = (
            "SELECT set_config('eventstore.enable_hard_deletes', %(value)s, true)"
        )
        self.current_hard_deletes = (
            "SELECT coalesce(current_setting('eventstore.enable_hard_deletes', true), '')"
        )
        # Hard delete. Locks the stream row first (FOR UPDATE), so a concurrent
        # append to it either commits before (and its events are deleted too) or
        # waits and then starts the stream anew. Only the events whose original
        # stream this is are deleted -- from every stream they were linked to
        # and from $all; links this stream held to other streams' events are
        # removed without touching those events.
        self.hard_delete = f"""
WITH current_stream AS (
    SELECT stream_id, stream_version, deleted_at FROM {s}.streams
    WHERE stream_uuid = %(stream_uuid)s
    FOR UPDATE
),
target AS (
    SELECT stream_id FROM current_stream
    WHERE deleted_at IS NULL
      AND (CAST(%(expected)s AS bigint) < 0 OR stream_version = %(expected)s)
),
own_rows AS (
    DELETE FROM {s}.stream_events
    WHERE stream_id IN (SELECT stream_id FROM target)
    RETURNING event_id, original_stream_id
),
owned_events AS (
    SELECT event_id FROM own_rows WHERE original_stream_id IN (SELECT stream_id FROM target)
),
linked_rows AS (
    DELETE FROM {s}.stream_events
    WHERE event_id IN (SELECT event_id FROM owned_events)
      AND stream_id NOT IN (SELECT stream_id FROM target)
),
deleted_events AS (
    DELETE FROM {s}.events WHERE event_id IN (SELECT event_id FROM owned_events)
),
deleted_stream AS (
    DELETE FROM {s}.streams WHERE stream_id IN (SELECT stream_id FROM target)
    RETURNING stream_id
)
SELECT d.stream_id, c.stream_id AS current_id, c.stream_version AS current_version,
       c.deleted_at IS NOT NULL AS deleted
FROM (SELECT 1) AS one LEFT JOIN deleted_stream d ON true LEFT JOIN current_stream c ON true
"""
        # Sequencer mode, before a hard delete in its transaction: lock the
        # stream (appends to it in flight commit first), then take its waiting
        # queue rows in a statement of its own (a fresh snapshot sees every
        # committed one; a sequencer linking them now is waited for). No one
        # can then link its events into $all behind the delete's back.
        self.lock_stream = (
            f"SELECT stream_id FROM {s}.streams WHERE stream_uuid = %(stream_uuid)s FOR UPDATE"
        )
        self.drop_waiting: str | None = (
            f"DELETE FROM {s}.unsequenced WHERE stream_id = %(stream_id)s" if sequenced else None
        )
        # The sequencer (see sequencer_sql): numbering committed waiting appends
        # into $all; a transaction's id, and its outcome seen from another session.
        self.sequence = f"SELECT {s}.eventstore_sequence(%(wait)s)"
        self.help = f"CALL {s}.eventstore_help()"
        self.has_help = has_help_procedure_sql(schema)
        self.current_xid = "SELECT txid_current()"
        self.xid_status = "SELECT txid_status(%(xid)s)"
        self.record_snapshot = f"""
INSERT INTO {s}.snapshots
    (source_uuid, source_version, source_type, data, metadata, created_at)
VALUES (%(source_uuid)s, %(source_version)s, %(source_type)s,
        CAST(%(data)s AS {self.column_data_type}),
        CAST(%(metadata)s AS {self.column_data_type}),
        coalesce(CAST(%(created_at)s AS timestamptz), now()))
ON CONFLICT (source_uuid) DO UPDATE SET
    source_version = excluded.source_version,
    source_type = excluded.source_type,
    data = excluded.data,
    metadata = excluded.metadata,
    created_at = excluded.created_at
"""
        self.read_snapshot = f"""
SELECT source_uuid, source_version, source_type, data, metadata, created_at
FROM {s}.snapshots WHERE source_uuid = %(source_uuid)s"""
        self.delete_snapshot = f"DELETE FROM {s}.snapshots WHERE source_uuid = %(source_uuid)s"
