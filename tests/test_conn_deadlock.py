"""Why docs/usage.md warns about several streams in one ``conn=`` transaction.

An append locks its stream's row, then the ``$all`` row (global_order
"lock"), and a ``conn=`` transaction keeps both until it ends. So a
transaction appending to A and then B can deadlock with a plain append to B
alone: that append holds B and waits for ``$all``, which the transaction
holds while it waits for B. PostgreSQL breaks the cycle by aborting one of
them with a deadlock error (SQLSTATE 40P01). Two real transactions here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from sqlalchemy_eventstore import ANY_VERSION, NO_STREAM, EventData, EventStore

DEADLOCK = "40P01"


def _sqlstate(error: BaseException) -> str | None:
    orig: Any = getattr(error, "orig", None)
    return getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)


def _waiting_on_a_lock(admin_engine: Engine) -> int:
    with admin_engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def test_a_transaction_appending_to_a_then_b_deadlocks_with_a_plain_append_to_b(
    make_store: Callable[..., EventStore], admin_engine: Engine, driver: str
):
    store = make_store(driver=driver)
    store.append_to_stream("b", NO_STREAM, [EventData("T", {})])
    outcomes: dict[str, Any] = {}

    def plain_append_to_b() -> None:
        try:
            store.append_to_stream("b", ANY_VERSION, [EventData("Plain", {})])
            outcomes["plain"] = "ok"
        except DBAPIError as error:
            outcomes["plain"] = error

    with store.engine.connect() as conn:
        conn.begin()
        store.append_to_stream("a", ANY_VERSION, [EventData("Mine", {})], conn=conn)
        plain = threading.Thread(target=plain_append_to_b)
        plain.start()
        deadline = time.monotonic() + 10
        while _waiting_on_a_lock(admin_engine) == 0:  # the plain append holds b, waits for $all
            assert time.monotonic() < deadline, "the plain append never waited for $all"
            time.sleep(0.02)
        try:
            store.append_to_stream("b", ANY_VERSION, [EventData("Mine", {})], conn=conn)
            conn.commit()
            outcomes["transaction"] = "ok"
        except DBAPIError as error:
            conn.rollback()
            outcomes["transaction"] = error
        plain.join(30)

    failed = {who: o for who, o in outcomes.items() if o != "ok"}
    assert len(outcomes) == 2 and len(failed) == 1, outcomes
    (error,) = failed.values()
    assert _sqlstate(error) == DEADLOCK
    # The survivor's events are all there; the victim's none.
    types = [e.event_type for e in store.read_all_streams_forward()]
    assert types == (["T", "Plain"] if "transaction" in failed else ["T", "Mine", "Mine"])
