"""One named subscription, two OS processes (the reference's
distributed_subscription_test.exs, with processes for nodes).

Each child (tests/subscription_child.py, started with ``spawn``) builds its
own EventStore from a URL string and subscribes to the same name. Exactly one
holds the advisory lock and receives events; when it is killed with SIGKILL
-- no cleanup, the server drops its session and so its lock -- the other
takes over within a few seconds and receives every event that was not
acknowledged, none lost. In the mixed variant the first child runs an
AsyncEventStore (asyncpg) and holds the subscription, and a sync one takes
over from it: both APIs share the subscription's advisory lock and
checkpoint, and the async one receives what the sync parent appends.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from sqlalchemy_eventstore import ANY_VERSION, EventData

from . import subscription_child

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")

SPAWN_WAIT = 60.0  # a spawned interpreter imports SQLAlchemy and the store first
WAIT = 15.0


class Child:
    """A subscriber process and what it reported."""

    def __init__(self, ctx: Any, args: tuple[Any, ...], index: int) -> None:
        self.reports = ctx.Queue()
        self.process = ctx.Process(
            target=subscription_child.run,
            args=(*args[:3], self.reports, *args[3:]),
            name=f"subscriber-{index}",
            daemon=True,
        )
        self.started = False
        self.subscribed = False
        self.closed = False
        self.events: list[int] = []

    def drain(self) -> None:
        while True:
            try:
                report = self.reports.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            kind = report[0]
            if kind == "started":
                self.started = True
            elif kind == "subscribed":
                self.subscribed = True
            elif kind == "events":
                self.events.extend(report[2])
            elif kind == "closed":
                self.closed = True


def wait_for(children: list[Child], predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            child.drain()
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def checkpoint(admin_engine: Engine, schema: str, name: str) -> int | None:
    with admin_engine.connect() as conn:
        return conn.execute(
            text(f'SELECT last_seen FROM "{schema}".subscriptions WHERE subscription_name = :n'),
            {"n": name},
        ).scalar()


def backends_of(admin_engine: Engine, pid: int) -> int:
    with admin_engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = :app"
                ),
                {"app": f"child-{pid}"},
            ).scalar_one()
        )


def append(store: Any, n: int) -> None:
    store.append_to_stream("s", ANY_VERSION, [EventData("Tick", {"i": i}) for i in range(n)])


@pytest.mark.parametrize("apis", [("sync", "sync"), ("async", "sync")], ids=["sync", "mixed"])
def test_one_process_runs_the_subscription_and_the_other_takes_over_when_it_is_killed(
    make_store, database_url, admin_engine, apis
):
    store = make_store()  # initialises the schema; the test appends through it
    ctx = multiprocessing.get_context("spawn")
    ack_limit = ctx.Value("i", 12)
    stop = ctx.Event()
    url = database_url.render_as_string(hide_password=False)
    children = [
        Child(ctx, (url, store.schema, "shared", ack_limit, stop, api), index)
        for index, api in enumerate(apis)
    ]
    if apis[0] != apis[1]:
        # Mixed: the async child takes the subscription first, for certain.
        children[0].process.start()
        assert wait_for(children, lambda: children[0].subscribed, SPAWN_WAIT)
        children[1].process.start()
    else:
        for child in children:
            child.process.start()
    try:
        assert wait_for(
            children,
            lambda: all(c.started for c in children) and any(c.subscribed for c in children),
            SPAWN_WAIT,
        ), "the children did not start and subscribe"
        # Five retry intervals later, still exactly one holds the subscription.
        wait_for(children, lambda: False, 1.0)
        assert [c.subscribed for c in children].count(True) == 1
        holder, other = children if children[0].subscribed else children[::-1]
        if apis[0] != apis[1]:
            assert holder is children[0]

        append(store, 10)
        append(store, 10)
        assert wait_for(children, lambda: set(holder.events) >= set(range(1, 21)), WAIT)
        assert wait_for(
            children, lambda: checkpoint(admin_engine, store.schema, "shared") == 12, WAIT
        )
        assert sorted(holder.events) == list(range(1, 21))
        assert other.events == []
        assert not other.subscribed

        # 13..20 were sent to the holder but never acknowledged.
        os.kill(holder.process.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        holder.process.join(WAIT)
        assert holder.process.exitcode == -signal.SIGKILL
        ack_limit.value = 2**31 - 1
        append(store, 10)

        assert wait_for(children, lambda: other.subscribed, WAIT), "no takeover"
        assert time.monotonic() - killed_at < WAIT
        assert wait_for(children, lambda: set(other.events) >= set(range(13, 31)), WAIT), (
            other.events
        )
        # The survivor starts right after the last acknowledged event: nothing
        # acknowledged is redelivered, nothing unacknowledged is lost.
        assert min(other.events) == 13
        assert sorted(set(other.events)) == list(range(13, 31))
        assert set(holder.events) | set(other.events) == set(range(1, 31))
        assert wait_for(
            children, lambda: checkpoint(admin_engine, store.schema, "shared") == 30, WAIT
        )
        # The server dropped the killed process's sessions (and so its lock).
        assert wait_for(children, lambda: backends_of(admin_engine, holder.process.pid) == 0, WAIT)
    finally:
        stop.set()
        for child in children:
            child.process.join(WAIT)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(WAIT)
    assert other.process.exitcode == 0
    assert wait_for(children, lambda: other.closed, WAIT)
    assert wait_for(children, lambda: backends_of(admin_engine, other.process.pid) == 0, WAIT)
    for child in children:
        with contextlib.suppress(Exception):
            child.reports.close()
