"""LISTEN on the async driver's own notification support, as a task on the store's loop.

The async twin of :class:`~..notifications.listener.Listener`, with its
contract: every payload on ``"<schema>.events"`` becomes ``on_notification``,
every subscription id on ``"<schema>.parked"`` ``on_parked``; a lost
connection is reopened with exponential backoff and jitter, and
``on_reconnect`` is called only once LISTEN is active again, so a caller
re-reading storage then misses nothing. A connection idle for
``idle_check_interval`` is pinged; one that does not answer in time is
dropped (a hung server that TCP keepalives cannot see).

asyncpg delivers notifications to ``add_listener`` callbacks and reports a
lost connection to ``add_termination_listener``; psycopg 3 yields them from
``AsyncConnection.notifies()`` and keeps those that arrive meanwhile (the
ping) for its next call (psycopg >= 3.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..notifications.payload import Notification, parse_payload
from .bridge import discard, submit

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from .bridge import LoopIO

__all__ = ["AsyncListener"]

log = logging.getLogger("sqlalchemy_eventstore.notifications")

_FIRST_BACKOFF = 0.05  # the first pause before reconnecting; doubled per failure
_JITTER = 0.1  # +-10% on every pause, so many listeners do not reconnect in step
_MIN_ANSWER_TIMEOUT = 2.0  # LISTEN and the idle check's SELECT 1 answer within this at least


class AsyncListener:
    """LISTENs on ``"<schema>.events"`` and ``"<schema>.parked"``; started and
    stopped from any thread, runs on the store's loop."""

    def __init__(
        self,
        io: LoopIO,
        schema: str,
        *,
        on_notification: Callable[[Notification], None],
        on_reconnect: Callable[[], None],
        on_parked: Callable[[int], None],
        name: str = "eventstore-listener",
        max_backoff: float = 5.0,
        idle_check_interval: float = 5.0,
    ) -> None:
        self._io = io
        self._channels = (f"{schema}.events", f"{schema}.parked")
        self._on_notification = on_notification
        self._on_reconnect = on_reconnect
        self._on_parked = on_parked
        self._name = name
        self._max_backoff = float(max_backoff)
        self._idle_check_interval = float(idle_check_interval)
        self._answer_timeout = max(self._idle_check_interval, _MIN_ANSWER_TIMEOUT)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._ended = threading.Event()
        self._future: Any = None

    def __repr__(self) -> str:
        return f"<AsyncListener {self._name!r} channel={self._channels[0]!r}>"

    @property
    def listening(self) -> bool:
        """True while LISTEN is active on a live connection."""
        return self._listening.is_set()

    def start(self) -> None:
        """Start the listening task on the store's loop; once only."""
        with self._lock:
            if self._future is not None or self._stopping.is_set():
                raise RuntimeError(f"{self!r} was already started; a listener starts once")
            self._future = submit(self._io.loop, self._run())

    def wait_listening(self, timeout: float) -> bool:
        """Wait (on a thread other than the loop's) until LISTEN is active."""
        return self._listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the task and wait up to ``timeout`` for it to close its connection."""
        with self._lock:
            self._stopping.set()
            future = self._future
        if future is None:
            return
        loop = self._io.loop
        if loop.is_closed() or not loop.is_running():
            return  # nothing runs it any more
        future.cancel()  # cancels the task on its loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop and not self._ended.wait(timeout):
            log.warning("%r: still running %.1f s after stop()", self, timeout)

    # -- the task ---------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0  # consecutive failed connects or short-lived connections
        connected_before = False
        try:
            while not self._stopping.is_set():
                if failures:
                    await asyncio.sleep(self._backoff(failures))
                try:
                    conn, driver = await self._connect()
                except Exception as error:
                    failures += 1
                    log.warning("%r: cannot connect (attempt %d): %s", self, failures, error)
                    continue
                opened = time.monotonic()
                self._listening.set()
                if connected_before:
                    log.info("%r: reconnected and listening again", self)
                    self._call("on_reconnect", self._on_reconnect)
                connected_before = True
                try:
                    await self._serve(driver)
                except Exception as error:
                    if not self._stopping.is_set():
                        log.warning("%r: connection lost, reconnecting: %s", self, error)
                finally:
                    self._listening.clear()
                    await discard(conn)
                # A connection that lived long resets the backoff; a flapping one does not.
                long_lived = time.monotonic() - opened >= self._max_backoff
                failures = 1 if long_lived else failures + 1
        finally:
            self._listening.clear()
            self._ended.set()

    def _backoff(self, failures: int) -> float:
        pause = min(self._max_backoff, _FIRST_BACKOFF * 2.0 ** min(failures - 1, 30))
        return pause * random.uniform(1 - _JITTER, 1 + _JITTER)

    async def _connect(self) -> tuple[AsyncConnection, Any]:
        """A session connection with LISTEN active on both channels, and its driver's."""
        conn = await self._io.open_session(self._name)
        try:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            await asyncio.wait_for(self._listen(driver), self._answer_timeout)
        except BaseException:
            await discard(conn)
            raise
        return conn, driver

    @staticmethod
    def _is_asyncpg(driver: Any) -> bool:
        return type(driver).__module__.partition(".")[0] == "asyncpg"

    async def _listen(self, driver: Any) -> None:
        if self._is_asyncpg(driver):
            for channel in self._channels:  # asyncpg quotes the channel as one identifier
                await driver.add_listener(channel, self._asyncpg_callback)
            return
        from psycopg import sql

        for channel in self._channels:
            # One identifier, quoted whole: the trigger's channel is the text
            # TG_TABLE_SCHEMA || '.events', not a schema-qualified name.
            await driver.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def _asyncpg_callback(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._deliver(payload)

    async def _serve(self, driver: Any) -> None:
        """Deliver notifications until stopped; raise when the connection fails."""
        if self._is_asyncpg(driver):
            lost = asyncio.Event()
            driver.add_termination_listener(lambda _conn: lost.set())
            while not self._stopping.is_set():
                if driver.is_closed():
                    raise ConnectionError("the LISTEN connection was closed")
                try:
                    await asyncio.wait_for(lost.wait(), self._idle_check_interval)
                except asyncio.TimeoutError:
                    await asyncio.wait_for(driver.fetchval("SELECT 1"), self._answer_timeout)
                    continue
                raise ConnectionError("the LISTEN connection was closed")
            return
        while not self._stopping.is_set():
            notifies = driver.notifies(timeout=self._idle_check_interval)
            async with contextlib.aclosing(notifies):
                async for notify in notifies:
                    self._deliver(notify.payload)
            # Idle that long: a dead or hung connection fails here.
            await asyncio.wait_for(driver.execute("SELECT 1"), self._answer_timeout)

    def _deliver(self, payload: str) -> None:
        if payload.isascii() and payload.isdigit():
            self._call("on_parked", self._on_parked, int(payload))
            return
        try:
            notification = parse_payload(payload)
        except ValueError:
            log.warning(
                "%r: ignoring a payload that is not an event notification: %r", self, payload
            )
            return
        self._call("on_notification", self._on_notification, notification)

    def _call(self, what: str, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("%r: %s callback raised; carrying on", self, what)
