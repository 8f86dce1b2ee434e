"""Numbering committed appends into ``$all`` after commit, for the async store.

The async twin of :mod:`..storage.sequencer`, with the same rules and the
same statements (:mod:`..storage.sequencing`):

* an append without ``conn=`` numbers its events right after its commit;
* with ``conn=`` an ``AsyncSession``: once its transaction commits. Its
  sync ``Session``'s ``after_commit`` event runs inside ``await
  session.commit()``, after the commit; the numbering is awaited there (on a
  connection of the store's own, never the committed one), so it is done
  when ``commit()`` returns and the event loop runs on meanwhile;
* with ``conn=`` an ``AsyncConnection``: its sync ``Connection``'s
  ``commit`` event fires *before* the commit, so a task of the store's, on
  the event loop, waits for the transaction's outcome (``txid_status``) and
  then numbers it, as the sync store's worker thread does;
* readers of ``$all`` wait for the sequencer first (:meth:`AsyncSequencer.advance`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.util import await_only
from sqlalchemy.util.concurrency import in_greenlet

from ..storage import sequencing
from ..storage.sequencer import watch_connection, watch_session, watching
from ..storage.sql import Statements
from .connection import AsyncConnector, AsyncConnLike, AsyncRunner, resolve_conn

__all__ = ["AsyncSequencer"]

logger = logging.getLogger("sqlalchemy_eventstore.sequencer")


class AsyncSequencer:
    """When and how one async store runs the database's sequencer."""

    def __init__(self, engine: AsyncEngine, sql: Statements, runner: AsyncRunner) -> None:
        self._sql = sql
        self._runner = runner
        # No timeout of its own, nothing changed on the connection (as the sync
        # sequencer): a pooled connection in autocommit mode.
        self._connector = AsyncConnector(engine, "restore", runner)
        self._xids: list[int] = []
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._procedure: bool | None = None  # whether the schema has eventstore_help()

    @asynccontextmanager
    async def _own(self) -> AsyncIterator[AsyncConnection]:
        async with self._connector.connect(None, transaction=False, timeout=None) as own:
            yield own

    # -- running the sequencer -------------------------------------------------------

    async def advance(self) -> int:
        """Number every append committed before this call into ``$all`` (for readers)."""
        async with self._own() as own:
            return await self._runner.run(own, sequencing.advance(self._sql))

    async def help(self) -> None:
        """After a commit: number what waits unless another sequencer is at it."""
        async with self._own() as own:
            self._procedure = await self._runner.run(
                own, sequencing.help_others(self._sql, self._procedure)
            )

    async def help_quietly(self) -> None:
        """:meth:`help` after work that already succeeded: a failure is logged,
        and the events wait for the next reader of ``$all``."""
        try:
            await self.help()
        except Exception:
            logger.warning("could not number waiting events into $all", exc_info=True)

    # -- after an append ---------------------------------------------------------------

    async def appended(self, conn: AsyncConnLike | None) -> None:
        """An append was written on ``conn``: sequence once it is committed."""
        if conn is None:
            await self.help_quietly()
        elif isinstance(conn, AsyncSession):
            watch_session(conn.sync_session, self)
        else:
            c = await resolve_conn(conn)
            sync_conn = c.sync_connection
            if sync_conn is not None and not watching(sync_conn, self):
                xid = await self._runner.run(c, sequencing.current_xid(self._sql))
                watch_connection(sync_conn, self, xid)

    def session_committed(self) -> None:
        """A watched Session committed: number its events before ``commit()`` returns.

        Called by SQLAlchemy inside ``await session.commit()`` (a greenlet of
        the event loop), where the numbering is awaited. A commit of the sync
        Session outside of that (``run_sync`` aside) leaves it to a task.
        """
        if self._closed:
            return
        if in_greenlet():
            await_only(self.help_quietly())
        else:
            self._spawn(self.help_quietly())

    def committing(self, xid: int) -> None:
        """The transaction ``xid`` is about to commit: sequence once it has."""
        if self._closed:
            return
        self._xids.append(xid)
        if self._worker is None or self._worker.done():
            self._worker = self._spawn(self._work())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run ``coro`` as a task of the running loop, kept until it ends."""
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop runs here: the next reader numbers them
            coro.close()
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _work(self) -> None:
        """Wait for the queued transactions to end; number them if one committed."""
        while self._xids:
            xids, self._xids = self._xids, []
            try:
                committed = False
                for xid in xids:
                    committed = await self._wait_committed(xid) or committed
                if committed:
                    await self.help()
            except Exception:
                logger.warning("could not number waiting events into $all", exc_info=True)

    async def _wait_committed(self, xid: int) -> bool:
        """Wait until transaction ``xid`` ended; True when it committed."""
        pause = sequencing.FIRST_POLL
        async with self._own() as own:
            while not self._closed:
                status = await self._runner.run(own, sequencing.xid_status(self._sql, xid))
                if status != "in progress":
                    return status == "committed"
                await asyncio.sleep(pause)
                pause = min(pause * 2, sequencing.MAX_POLL)
        return False

    async def close(self, timeout: float = 5.0) -> None:
        """Finish the numbering under way (what committed gets numbered), then stop."""
        tasks = [t for t in self._tasks if t.get_loop() is asyncio.get_running_loop()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._closed = True
        for task in tasks:
            task.cancel()
