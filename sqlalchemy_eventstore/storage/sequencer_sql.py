"""The SQL of ``global_order="sequencer"``: a queue of waiting appends and the
functions and trigger that number them into ``$all``.

How the pieces fit:

* A sequencer-mode append locks only its own stream's row, writes its events
  and their ``stream_events`` rows, and records the range it wrote as one row
  of ``<schema>.unsequenced`` (``seq`` from a sequence, taken *after* the
  stream row's lock, so one stream's waiting rows are in stream order).
* ``<schema>.eventstore_link_waiting()`` is a ``BEFORE UPDATE`` trigger on the
  ``$all`` row. Whoever updates that row holds its lock -- a lock-mode append
  of this package, the reference's own append statement, or the sequencer --
  and the trigger first links every committed waiting event into ``$all`` just
  above the current head, then lets the update go on above them. So every
  writer that numbers ``$all`` numbers the waiting events before its own: a
  stream's events appear in ``$all`` in stream order whoever wrote them, and
  positions stay gap-free because they are only ever given under that lock.
* ``<schema>.eventstore_sequence()`` is the sequencer: when the queue holds a
  committed row it takes the schema's sequencer advisory lock (transaction
  scope: no session needs to outlive the call) and touches the ``$all`` row,
  which fires the trigger. Anyone may call it at any time, any number of
  times: readers of ``$all`` do, appenders after their commit do.

* Neither ever walks numbered queue rows, which a long-running transaction
  anywhere in the cluster keeps from being vacuumed. ``<schema>.sequencer_state``
  holds ``numbered_through`` (every seq up to it is numbered or a *gap*) and
  the gaps: seqs invisible when a run passed them, each with a horizon, a
  transaction id assigned after that run's snapshot. A probe is one index
  descent above ``numbered_through`` plus one lookup per gap, and a run
  deletes (numbers) only those rows. A gap's writer took its seq after its own
  transaction id and before a higher seq that run saw committed, so before the
  snapshot: once a snapshot's xmin passes the horizon, the writer has ended --
  committed, its row is visible to that snapshot and numbered by it; if not,
  the gap is dropped. (``pg_snapshot_xmax`` would not do as the horizon: it is
  one past the latest *completed* id, and a writer's may be higher.) The
  horizon is the xmin of the state row written in a subtransaction, read back
  by the next run. Each run inserts the next state row and deletes the one it
  read: reading the newest is one backward index step, where updating one row
  would leave a chain of versions for every reader to walk.

Both functions are PL/pgSQL and VOLATILE on purpose: in READ COMMITTED each of
their statements takes a fresh snapshot, so they see every append committed
before they run -- even one that committed after the calling statement began
(a lock-mode append whose snapshot predates a waiting append to its stream).
"""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """Quote a Postgres identifier (as ``schema.quote_ident``; schema imports us)."""
    return '"' + name.replace('"', '""') + '"'


__all__ = [
    "BUSY",
    "drop_sequencer_ddl",
    "EMPTIED",
    "EMPTY",
    "HELP_PROCEDURE",
    "HELP_ROUNDS",
    "QUEUE_TABLE",
    "REVISION",
    "STATE_TABLE",
    "has_help_procedure_sql",
    "installed_revision_sql",
    "sequencer_ddl",
]

#: The queue of appends waiting to be numbered into ``$all``.
QUEUE_TABLE = "unsequenced"
#: The sequencer's progress through the queue (one row).
STATE_TABLE = "sequencer_state"

# What eventstore_sequence() returns besides the new head of $all (>= 0):
EMPTY = -1  # nothing committed waited; no lock taken
BUSY = -2  # (wait false) another sequencer holds the lock
EMPTIED = -3  # the lock was taken, and the queue found empty under it
#: Sequencer rounds an appender runs at most for others after its commit.
HELP_ROUNDS = 16
#: The procedure appenders call after their commit, by its signature.
HELP_PROCEDURE = "eventstore_help(integer)"
#: The revision of the routines and triggers :func:`sequencer_ddl` creates.
#: Bump it with any change to them: ``init()`` and ``eventstore migrate``
#: replace them in a schema that records an older one (a comment on
#: :data:`HELP_PROCEDURE`; none: revision 1), and leave a newer one alone (a
#: later version of this package put it there). Alembic users get the new
#: bodies from a new ``eventstore_additions_<REVISION - 1>`` revision running
#: the same statements. ``tests/test_sequencer_revision.py`` fails until both
#: are there after a change.
REVISION = 2
_REVISION_COMMENT = "sqlalchemy_eventstore sequencer revision "


def _literal(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _queue_options(s: str) -> str:
    # The table itself comes from its model (models.UnsequencedRow). One row
    # per waiting append, deleted once numbered: a high-churn queue, vacuumed
    # eagerly (its dead rows lie below numbered_through, where no probe looks,
    # but they take space until vacuumed).
    return f"""
ALTER TABLE {s}.{QUEUE_TABLE}
SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000)
"""


def _initial_state(s: str) -> str:
    # The state row, once (an existing schema keeps its own). A schema of an
    # earlier version holds only waiting rows in its queue (numbered ones were
    # deleted): numbering resumes just below the lowest. The SHARE lock waits
    # for appends in flight, so that lowest row is visible here, and holds off
    # new ones (whose seq is higher anyway) until this transaction ends.
    return f"""
DO $eventstore$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM {s}.{STATE_TABLE}) THEN
    LOCK TABLE {s}.{QUEUE_TABLE} IN SHARE MODE;
    INSERT INTO {s}.{STATE_TABLE} (run, numbered_through)
    SELECT 0, coalesce(
      (SELECT min(seq) - 1 FROM {s}.{QUEUE_TABLE}),
      (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
       FROM {s}.{QUEUE_TABLE}_seq_seq))
    ON CONFLICT (run) DO NOTHING;
  END IF;
END;
$eventstore$
"""


def _waiting_probe(s: str, *, whole_state: bool = False) -> str:
    """PL/pgSQL: sets ``v_waiting``, whether a committed queue row waits
    (``v_nt``, ``v_gaps`` set; with ``whole_state`` also ``v_run``,
    ``v_horizons`` and ``row_xid``).

    One statement reads the state row and probes the queue above
    ``numbered_through``: one index descent (rows there are waiting or in
    flight), never a walk over numbered rows; the gaps, when there are any,
    take one more lookup each.
    """
    if whole_state:
        columns = "st.run, st.numbered_through, st.gaps, st.gap_horizons, st.xmin"
        into = "v_run, v_nt, v_gaps, v_horizons, row_xid"
    else:
        columns, into = "st.numbered_through, st.gaps", "v_nt, v_gaps"
    return f"""
  SELECT {columns},
         EXISTS (SELECT 1 FROM {s}.{QUEUE_TABLE} q WHERE q.seq > st.numbered_through)
  INTO {into}, v_waiting
  FROM (SELECT run, numbered_through, gaps, gap_horizons, xmin
        FROM {s}.{STATE_TABLE} ORDER BY run DESC LIMIT 1) st;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'EventStore: the sequencer_state row is missing (run init or migrate)';
  END IF;
  IF NOT v_waiting AND cardinality(v_gaps) > 0 THEN
    v_waiting := EXISTS (SELECT 1 FROM {s}.{QUEUE_TABLE} WHERE seq = ANY(v_gaps));
  END IF;"""


# Every function reading the queue plans with index lookups only: a
# sequential scan, or a hash or merge join reading a whole table, would walk
# the row versions that a long-running transaction elsewhere keeps from being
# vacuumed -- numbered queue rows, and the streams' old versions (the batch's
# streams are looked up one by one instead). Without JIT: disabling those
# plans inflates their estimated cost past jit_above_cost, and compiling them
# would cost milliseconds per call.
_INDEX_ONLY = (
    "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off"
)


def _link_waiting_function(s: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {s}.eventstore_link_waiting()
  RETURNS trigger AS $$
DECLARE
  v_run bigint;
  v_nt bigint;
  v_gaps bigint[];
  v_waiting boolean;
  v_horizons bigint[];
  row_xid xid;
  row_horizon bigint;
  top bigint;
  linked bigint;
  streams_notified bigint;
  taken_seqs bigint[];
  top_taken bigint;
  taken_above bigint;
  snap_xmin bigint;
  new_nt bigint;
  kept_gaps bigint[];
  kept_horizons bigint[];
  fresh_gaps bigint[];
BEGIN
  -- Nothing waits (the common case): an index descent, plus one per gap.
  -- The state row is read whole here, once.
  {_waiting_probe(s, whole_state=True)}
  IF NOT v_waiting THEN
    IF NEW.stream_version = OLD.stream_version THEN
      RETURN NULL;  -- a sequencer's touch that found nothing: no update
    END IF;
    RETURN NEW;
  END IF;
  -- Runs with the $all row locked by the update that fired it, so no one
  -- else is numbering $all now (nor writing the state row: only numberers
  -- do, under this lock): the waiting events committed so far (this
  -- statement's fresh snapshot) get the positions just above the head, in
  -- queue order, each append's events in stream order. Rows of appends not
  -- committed yet are invisible here and wait for a later run. Only rows
  -- above numbered_through and at the gaps are visited. (The state row read
  -- by the probe is current: only numberers write it, under this lock.)
  WITH taken AS (
    DELETE FROM {s}.{QUEUE_TABLE}
    WHERE seq > v_nt OR seq = ANY(v_gaps)
    RETURNING seq, stream_id, first_version, last_version
  ),
  waiting AS (
    SELECT se.event_id, se.stream_id, se.stream_version,
           row_number() OVER (ORDER BY t.seq, se.stream_version) AS n
    FROM taken t
    JOIN {s}.stream_events se
      ON se.stream_id = t.stream_id
     AND se.stream_version BETWEEN t.first_version AND t.last_version
  ),
  inserted AS (
    INSERT INTO {s}.stream_events
      (event_id, stream_id, stream_version, original_stream_id, original_stream_version)
    SELECT event_id, 0, OLD.stream_version + n, stream_id, stream_version
    FROM waiting
    RETURNING 1
  ),
  -- Sequencer-mode appends do not notify at their commit (NOTIFY takes a
  -- database-wide lock held through commit, which would serialise them
  -- again): their streams are notified here, once per stream per batch, with
  -- the reference's payload. The range ends at the stream's committed
  -- version, so it also covers anything appended to it since.
  notified AS (
    SELECT pg_notify(
             TG_TABLE_SCHEMA || '.events',
             st.stream_uuid || ',' || st.stream_id || ',' || min(t.first_version) || ','
               || greatest(max(t.last_version), st.stream_version))
    FROM taken t
    JOIN {s}.streams st ON st.stream_id = t.stream_id
    GROUP BY st.stream_id, st.stream_uuid, st.stream_version
  )
  SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM notified),
         (SELECT coalesce(array_agg(seq), '{{}}') FROM taken),
         (SELECT max(seq) FROM taken),
         (SELECT count(*) FROM taken WHERE seq > v_nt),
         -- this statement's snapshot: every transaction below it has ended
         CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)
  INTO linked, streams_notified, taken_seqs, top_taken, taken_above, snap_xmin;

  -- The state. Every seq up to the highest taken is now numbered or a gap:
  -- invisible to the snapshot above (its append in flight, rolled back, or
  -- never written). A gap's writer took its seq after its transaction id,
  -- before the higher seq taken here committed, so before the snapshot: any
  -- transaction id assigned after the snapshot is above it (its horizon).
  -- Once the snapshot's xmin passes a gap's horizon, its writer has ended:
  -- committed, its row was visible and taken; otherwise it never will be.
  -- (The statements on gaps below run only when there are gaps: the common
  -- case is a batch of consecutive seqs and no gap.)
  new_nt := greatest(v_nt, top_taken);
  IF array_position(v_horizons, NULL) IS NOT NULL THEN
    -- NULL: this row version's xmin (the subtransaction that wrote it), as a
    -- 64-bit id next to this transaction's own.
    top := CAST(CAST(pg_current_xact_id() AS text) AS bigint);
    row_horizon := top - mod(top, 4294967296) + CAST(CAST(row_xid AS text) AS bigint);
    IF row_horizon > top + 2147483648 THEN
      row_horizon := row_horizon - 4294967296;
    ELSIF row_horizon < top - 2147483648 THEN
      row_horizon := row_horizon + 4294967296;
    END IF;
  END IF;
  IF cardinality(v_gaps) > 0 THEN
    SELECT coalesce(array_agg(g.seq ORDER BY g.seq), '{{}}'),
           coalesce(array_agg(coalesce(g.horizon, row_horizon) ORDER BY g.seq), '{{}}')
    INTO kept_gaps, kept_horizons
    FROM unnest(v_gaps, v_horizons) AS g(seq, horizon)
    WHERE coalesce(g.horizon, row_horizon) >= snap_xmin
      AND NOT EXISTS (SELECT 1 FROM unnest(taken_seqs) x WHERE x = g.seq);
  ELSE
    kept_gaps := v_gaps;
    kept_horizons := v_horizons;
  END IF;
  -- The seqs up to new_nt not taken: none when every one above v_nt was.
  IF new_nt - v_nt > taken_above THEN
    SELECT coalesce(array_agg(f ORDER BY f), '{{}}') INTO fresh_gaps
    FROM (SELECT generate_series(v_nt + 1, new_nt) EXCEPT SELECT unnest(taken_seqs)) AS f(f);
  ELSE
    fresh_gaps := '{{}}';
  END IF;

  -- The next state row replaces the one read (see models.SequencerState).
  IF cardinality(fresh_gaps) > 0 THEN
    -- Written in a subtransaction: the row's xmin is then a transaction id
    -- assigned now, after the snapshot -- the new gaps' horizon (NULL until
    -- the next run reads it).
    BEGIN
      INSERT INTO {s}.{STATE_TABLE} (run, numbered_through, gaps, gap_horizons)
      VALUES (v_run + 1, new_nt, kept_gaps || fresh_gaps,
              kept_horizons
                || array_fill(CAST(NULL AS bigint), ARRAY[cardinality(fresh_gaps)]));
    EXCEPTION WHEN OTHERS THEN
      RAISE;
    END;
    DELETE FROM {s}.{STATE_TABLE} WHERE run = v_run;
  ELSIF new_nt <> v_nt OR kept_gaps IS DISTINCT FROM v_gaps
        OR kept_horizons IS DISTINCT FROM v_horizons THEN
    WITH replaced AS (DELETE FROM {s}.{STATE_TABLE} WHERE run = v_run)
    INSERT INTO {s}.{STATE_TABLE} (run, numbered_through, gaps, gap_horizons)
    VALUES (v_run + 1, new_nt, kept_gaps, kept_horizons);
  END IF;

  IF linked = 0 AND NEW.stream_version = OLD.stream_version THEN
    -- The sequencer's touch found nothing: skip the update (no new row
    -- version, no notification).
    RETURN NULL;
  END IF;
  NEW.stream_version := NEW.stream_version + linked;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql VOLATILE {_INDEX_ONLY};
"""


def _link_waiting_trigger(s: str) -> str:
    # Fires for the $all row only (WHEN), before the row changes and after its
    # lock is taken (a waiter re-fetches the newest row first).
    return f"""
CREATE TRIGGER eventstore_link_waiting
BEFORE UPDATE ON {s}.streams
FOR EACH ROW WHEN (OLD.stream_id = 0)
EXECUTE PROCEDURE {s}.eventstore_link_waiting();
"""


def _quiet_notification_trigger(s: str) -> str:
    # The reference's trigger, fired as before for every row except those a
    # sequencer-mode append marks (its stream's row, named in a transaction-
    # local setting): their notification comes from eventstore_link_waiting(),
    # per batch. Writers that never set it -- the reference, lock mode -- see
    # the reference's behaviour unchanged.
    return f"""
CREATE TRIGGER event_notification
AFTER INSERT OR UPDATE ON {s}.streams
FOR EACH ROW
WHEN (NEW.stream_uuid IS DISTINCT FROM current_setting('eventstore.quiet_stream', true))
EXECUTE PROCEDURE {s}.notify_events();
"""


def _sequence_function(s: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {s}.eventstore_sequence(wait boolean DEFAULT true)
  RETURNS bigint AS $$
DECLARE
  head bigint;
  v_nt bigint;
  v_gaps bigint[];
  v_waiting boolean;
BEGIN
  -- Nothing committed waits: every committed event is in $all already (a
  -- queue row and its $all links are removed and written in one
  -- transaction). The common case costs one index probe and no lock.
  {_waiting_probe(s)}
  IF NOT v_waiting THEN
    RETURN {EMPTY};
  END IF;
  -- One sequencer per schema at a time across every process: the key is the
  -- queue table's oid (unique per database), held for this call's
  -- transaction only, so no session needs to outlive the call. A reader
  -- waits for it (it must see what committed before it); an appender only
  -- tries (BUSY): the holder probes again after its release (see sequencer.py).
  IF wait THEN
    PERFORM pg_advisory_xact_lock(
      CAST(CAST(CAST({_literal(s + "." + QUEUE_TABLE)} AS regclass) AS oid) AS int), 0);
  ELSIF NOT pg_try_advisory_xact_lock(
      CAST(CAST(CAST({_literal(s + "." + QUEUE_TABLE)} AS regclass) AS oid) AS int), 0) THEN
    RETURN {BUSY};
  END IF;
  {_waiting_probe(s)}
  IF NOT v_waiting THEN
    RETURN {EMPTIED};
  END IF;
  -- Touching the $all row fires eventstore_link_waiting() under its lock.
  UPDATE {s}.streams SET stream_version = stream_version
  WHERE stream_id = 0
  RETURNING stream_version INTO head;
  RETURN coalesce(head, {EMPTIED});
END;
$$ LANGUAGE plpgsql VOLATILE {_INDEX_ONLY};
"""


def _help_procedure(s: str) -> str:
    # What an appender runs after its commit, in one round trip: rounds of
    # eventstore_sequence(false), each committed at once (releasing the
    # sequencer's lock), until one finds nothing committed waiting or the lock
    # busy -- whose holder then probes again after its own commit. A procedure,
    # not a function, for the COMMIT: the caller is in autocommit mode.
    return f"""
CREATE OR REPLACE PROCEDURE {s}.eventstore_help(rounds integer DEFAULT {HELP_ROUNDS})
AS $$
DECLARE
  result bigint;
BEGIN
  FOR i IN 1..rounds LOOP
    result := {s}.eventstore_sequence(false);
    COMMIT;
    EXIT WHEN result IN ({EMPTY}, {BUSY});
  END LOOP;
END;
$$ LANGUAGE plpgsql;
"""


def _help_procedure_oid(schema: str) -> str:
    """SQL: the oid of ``schema``'s :data:`HELP_PROCEDURE`, NULL when it has none."""
    return f"to_regprocedure({_literal(quote_ident(schema) + '.' + HELP_PROCEDURE)})"


def has_help_procedure_sql(schema: str) -> str:
    """A query: whether ``schema`` has :data:`HELP_PROCEDURE` (schemas whose
    additions predate it lack it until ``init``/``migrate``)."""
    return f"SELECT {_help_procedure_oid(schema)} IS NOT NULL"


def installed_revision_sql(schema: str) -> str:
    """A query: the :data:`REVISION` of the routines installed in ``schema``
    (0: none, the schema's additions predate :data:`HELP_PROCEDURE`; 1: made
    before revisions were recorded)."""
    procedure = _help_procedure_oid(schema)
    return f"""
SELECT CASE WHEN {procedure} IS NULL THEN 0
       ELSE coalesce(CAST(substring(obj_description({procedure}, 'pg_proc')
                                    FROM {_literal(_REVISION_COMMENT + "([0-9]+)$")})
                          AS integer), 1)
       END"""


def sequencer_ddl(schema: str) -> list[str]:
    """Idempotent statements creating the sequencer's functions and triggers
    (after the queue table, which comes from its model), recording
    :data:`REVISION`."""
    s = quote_ident(schema)
    return [
        # Appenders and the sequencer lock streams' rows, then the queue: so
        # does this (the state row's SHARE lock on the queue, then DROP
        # TRIGGER's ACCESS EXCLUSIVE on streams, would deadlock with them).
        # In a DO block: a caller in autocommit mode (no transaction to hold
        # the lock) gets a no-op, not an error.
        f"DO $eventstore$ BEGIN LOCK TABLE {s}.streams IN ACCESS EXCLUSIVE MODE; END $eventstore$",
        _queue_options(s),
        _initial_state(s),
        _link_waiting_function(s),
        # DROP IF EXISTS then CREATE (not CREATE OR REPLACE TRIGGER, which
        # needs PostgreSQL 14): idempotent as a pair, in the caller's transaction.
        f"DROP TRIGGER IF EXISTS eventstore_link_waiting ON {s}.streams",
        _link_waiting_trigger(s),
        _sequence_function(s),
        _help_procedure(s),
        f"DROP TRIGGER IF EXISTS event_notification ON {s}.streams",
        _quiet_notification_trigger(s),
        f"COMMENT ON PROCEDURE {s}.{HELP_PROCEDURE} "
        f"IS {_literal(_REVISION_COMMENT + str(REVISION))}",
    ]


def drop_sequencer_ddl(schema: str, reference_notification_trigger: str) -> list[str]:
    """Statements removing the sequencer's functions and triggers, and putting the
    reference's notification trigger back as it was (no WHEN clause)."""
    s = quote_ident(schema)
    return [
        f"DROP TRIGGER IF EXISTS eventstore_link_waiting ON {s}.streams",
        f"DROP TRIGGER IF EXISTS event_notification ON {s}.streams",
        reference_notification_trigger,
        f"DROP PROCEDURE IF EXISTS {s}.{HELP_PROCEDURE}",
        f"DROP FUNCTION IF EXISTS {s}.eventstore_sequence(boolean), {s}.eventstore_link_waiting()",
    ]
