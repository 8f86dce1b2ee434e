"""The sequencer's calls as operations of :mod:`.steps`, shared by the sync and async stores.

:mod:`.sequencer` (sync) and ``sqlalchemy_eventstore.asyncio.sequencer``
decide *when* to number waiting appends into ``$all``; what they send is
written here once. The numbering itself is the database's
(``<schema>.eventstore_sequence()``, :mod:`.sequencer_sql`).
"""

from __future__ import annotations

from .sequencer_sql import BUSY, EMPTY, HELP_ROUNDS
from .sql import Statements
from .steps import Op, Query

__all__ = [
    "FIRST_POLL",
    "HELP_ROUNDS",
    "MAX_POLL",
    "advance",
    "current_xid",
    "help_others",
    "xid_status",
]

FIRST_POLL = 0.0005  # seconds between txid_status checks, doubled up to MAX_POLL
MAX_POLL = 0.05


def advance(sql: Statements) -> Op[int]:
    """Number every append committed before the call (waiting for a sequencer
    run in progress); the new head of ``$all``, or a negative number when
    nothing waited."""
    ((head,),) = yield Query(sql.sequence, {"wait": True})
    return int(head)


def help_others(sql: Statements, procedure: bool | None) -> Op[bool]:
    """After a commit: number what waits unless another sequencer is at it.

    Only *tries* the sequencer's lock (see :meth:`.sequencer.Sequencer.help`),
    and probes again after each round it ran, at most ``HELP_ROUNDS`` times:
    in one round trip, ``<schema>.eventstore_help()`` (on a connection in
    autocommit mode: it commits each round), or, on a schema whose additions
    predate that procedure, one call per round. ``procedure`` says whether
    the schema has it (None: unknown, looked up first); returns what it knows
    now, for the caller's next call.
    """
    if procedure is None:
        ((found,),) = yield Query(sql.has_help)
        procedure = bool(found)
    if procedure:
        yield Query(sql.help)
        return True
    for _ in range(HELP_ROUNDS):
        ((result,),) = yield Query(sql.sequence, {"wait": False})
        if int(result) in (EMPTY, BUSY):
            break
    return False


def current_xid(sql: Statements) -> Op[int]:
    """The id of the transaction the operation runs in (assigning one)."""
    ((xid,),) = yield Query(sql.current_xid)
    return int(xid)


def xid_status(sql: Statements, xid: int) -> Op[str | None]:
    """``"in progress"``, ``"committed"``, ``"aborted"`` (None: too old to know)."""
    ((status,),) = yield Query(sql.xid_status, {"xid": xid})
    return None if status is None else str(status)
