"""Numbering committed appends into ``$all`` after commit (``global_order="sequencer"``).

The database does the numbering (``sequencer_sql``): ``<schema>.eventstore_sequence()``
links every committed waiting append into ``$all``, one caller per schema at a
time. This module decides *when* it is called, so that no deployment leaves a
committed event out of ``$all`` for long:

* an append without ``conn=`` calls it right after its own commit;
* an append with ``conn=`` once the caller's transaction commits: a
  ``Session`` through its ``after_commit`` event; a ``Connection`` through its
  ``commit`` event, which fires *before* the commit, so a worker thread waits
  for the transaction's outcome (``txid_status``) and then calls it;
* writers only *try* the sequencer's lock (:meth:`Sequencer.help`, one round
  trip): when it is busy, its holder numbers their appends in its next round,
  so writers never queue behind one another. (Handing this call to a worker
  thread, so that the append returns before it, was measured: a lower append
  p99, but fewer appends per second and a slower ``$all`` subscriber, for
  the CPU and the second connection the thread costs each writer process;
  BENCHMARKS.md);
* whoever needs ``$all`` complete waits for it (:meth:`Sequencer.advance`):
  reads of ``$all``, ``stream_info("$all")``, subscriptions to ``$all`` (their
  reads, plus a periodic call from the subscription runner) and
  ``eventstore check``. A writer that exits, or is killed, between its
  commit and its call loses nothing: its events wait in the queue for the
  next of these (and :meth:`Sequencer.close`, also run at interpreter exit,
  drains the worker thread of what commit hooks left it).

Calls are cheap when nothing waits (an index probe, no lock, no write).
The statements are :mod:`.sequencing`'s operations, shared with the async
store, whose sequencer hooks into the same commit events through
:func:`watch_session` and :func:`watch_connection`.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

from . import sequencing
from .connection import ConnLike, connection, resolve_conn
from .sql import Statements
from .steps import run

__all__ = ["CommitHooks", "Sequencer", "watch_connection", "watch_session", "watching"]

logger = logging.getLogger("sqlalchemy_eventstore.sequencer")

_PENDING = "sqlalchemy_eventstore.sequencer_pending"  # key in Session.info
_NO_TRANSACTION = 0  # a worker job that only helps (no transaction to wait for)


class CommitHooks(Protocol):
    """What a sequencer does when a watched transaction ends (sync or async store)."""

    def session_committed(self) -> None:
        """A watched Session committed (its ``after_commit`` event)."""

    def committing(self, xid: int) -> None:
        """A watched Connection's transaction ``xid`` is about to commit."""


class Sequencer:
    """When and how one store runs the database's sequencer."""

    def __init__(self, engine: Engine, sql: Statements) -> None:
        self._engine = engine
        self._sql = sql
        self._work: queue.Queue[int | threading.Event | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._help_queued = False
        self._procedure: bool | None = None  # whether the schema has eventstore_help()
        self._pid = os.getpid()
        _open.add(self)

    # -- running the sequencer -------------------------------------------------------

    def advance(self) -> int:
        """Number every append committed before this call into ``$all``.

        For readers: waits for a sequencer run in progress (it may have
        started before the latest commits). Returns the new head of ``$all``,
        or a negative number when nothing waited.
        """
        with connection(self._engine, None, transaction=False) as own:
            return run(own, sequencing.advance(self._sql))

    def help(self) -> None:
        """After a commit: number what waits unless another sequencer is at it.

        Never waits for the sequencer's lock: appenders that all waited would
        form a convoy, each numbering the one or two appends committed since
        the previous run (one fsync each). Instead whoever holds the lock
        probes again after releasing it, so an append committed while it held
        the lock -- whose own try failed -- is numbered by its next round. A
        holder gives up after ``HELP_ROUNDS`` rounds (under endless load):
        the appends still waiting then go with the next append, reader of
        ``$all`` or subscription runner. The rounds run in the database, in
        one round trip (``<schema>.eventstore_help()``), where the schema has
        that procedure.
        """
        with connection(self._engine, None, transaction=False) as own:
            self._procedure = run(own, sequencing.help_others(self._sql, self._procedure))

    def help_quietly(self) -> None:
        """:meth:`help` for callers whose own work already succeeded (an append,
        a commit hook): a failure is logged, and the events wait for the next
        reader of ``$all``."""
        try:
            self.help()
        except Exception:
            logger.warning("could not number waiting events into $all", exc_info=True)

    # -- after an append ---------------------------------------------------------------

    def appended(self, conn: ConnLike | None) -> None:
        """An append was written on ``conn``: sequence once it is committed."""
        if conn is not None:
            conn = resolve_conn(conn)  # a scoped_session's current Session
        if conn is None:
            self.help_quietly()
        elif isinstance(conn, Session):
            watch_session(conn, self)
        elif isinstance(conn, Connection) and not watching(conn, self):
            # The transaction id, to learn the outcome from another session:
            # the commit event fires before the commit itself.
            watch_connection(conn, self, run(conn, sequencing.current_xid(self._sql)))

    def session_committed(self) -> None:
        """A Session this store appended in committed: number its events now."""
        self.help_quietly()

    def help_soon(self) -> None:
        """:meth:`help` on the worker thread, once for every call made before
        it starts (a subscription runner's periodic call: its thread must not
        wait for a lock-mode writer holding ``$all``)."""
        self.committing(_NO_TRANSACTION)

    def committing(self, xid: int) -> None:
        """The transaction ``xid`` is about to commit: sequence once it has."""
        with self._lock:
            if self._closed:
                return
            if self._pid != os.getpid():
                # A forked child: the parent's worker thread is not here.
                self._pid, self._thread, self._help_queued = os.getpid(), None, False
                self._work = queue.Queue()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="eventstore-sequencer", daemon=True
                )
                self._thread.start()
        if xid == _NO_TRANSACTION:
            with self._lock:
                if self._help_queued:
                    return
                self._help_queued = True
        self._work.put(xid)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the worker did everything asked of it so far (the
        numbering after commits that already returned); False on timeout."""
        with self._lock:
            if self._thread is None or self._pid != os.getpid():
                return True
            done = threading.Event()
            self._work.put(done)
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            xid = self._work.get()
            if xid is None:
                return
            if isinstance(xid, threading.Event):
                xid.set()
                continue
            if xid == _NO_TRANSACTION:
                with self._lock:
                    self._help_queued = False
            try:
                if xid == _NO_TRANSACTION or self._wait_committed(xid):
                    self.help()
            except Exception:
                logger.warning("could not number waiting events into $all", exc_info=True)

    def _wait_committed(self, xid: int) -> bool:
        """Wait until transaction ``xid`` ended; True when it committed."""
        pause = sequencing.FIRST_POLL
        with connection(self._engine, None, transaction=False) as own:
            while not self._closed:
                status = run(own, sequencing.xid_status(self._sql, xid))
                if status != "in progress":
                    return status == "committed"
                time.sleep(pause)
                pause = min(pause * 2, sequencing.MAX_POLL)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Finish queued work (sequencing what committed) and stop the worker."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._work.put(None)
            thread.join(timeout)
        self._closed = True
        _open.discard(self)


# Stores not closed when the interpreter exits: the numbering queued on their
# worker thread (a Connection that committed just before) is done, so a script
# that ends right after its commit leaves nothing for the next reader.
_open: weakref.WeakSet[Sequencer] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    for sequencer in list(_open):
        if sequencer._pid == os.getpid():
            sequencer.close(timeout=2.0)


# Module-level listeners: one per Session or Connection, whatever the stores
# (sync or async: an AsyncSession's or AsyncConnection's sync core is watched).


def watch_session(session: Session, sequencer: CommitHooks) -> None:
    """Call ``sequencer.session_committed()`` once ``session``'s transaction commits."""
    pending: set[CommitHooks] = session.info.setdefault(_PENDING, set())
    pending.add(sequencer)
    if not event.contains(session, "after_commit", _session_committed):
        event.listen(session, "after_commit", _session_committed)
        event.listen(session, "after_soft_rollback", _session_rolled_back)


def watching(conn: Connection, sequencer: CommitHooks) -> bool:
    """True when ``conn``'s transaction is watched for ``sequencer`` already."""
    return sequencer in _pending_connections.get(conn, {})


def watch_connection(conn: Connection, sequencer: CommitHooks, xid: int) -> None:
    """Call ``sequencer.committing(xid)`` when ``conn``'s transaction ``xid`` commits."""
    _pending_connections.setdefault(conn, {})[sequencer] = xid
    if not event.contains(conn, "commit", _connection_committing):
        event.listen(conn, "commit", _connection_committing)
        event.listen(conn, "rollback", _connection_rolled_back)


def _session_committed(session: Session) -> None:
    for sequencer in session.info.pop(_PENDING, set()):
        sequencer.session_committed()


def _session_rolled_back(session: Session, previous: Any) -> None:
    if not session.in_transaction():
        session.info.pop(_PENDING, None)


# Per Connection object (not conn.info, which outlives it in the pool).
_pending_connections: weakref.WeakKeyDictionary[Connection, dict[CommitHooks, int]] = (
    weakref.WeakKeyDictionary()
)


def _connection_committing(conn: Connection) -> None:
    for sequencer, xid in _pending_connections.pop(conn, {}).items():
        sequencer.committing(xid)


def _connection_rolled_back(conn: Connection) -> None:
    _pending_connections.pop(conn, None)
