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

Polling mode as in the sync listener: ``polling_reason`` starts it polling
without connecting; otherwise the first connection checks that LISTEN holds
(a NOTIFY sent through the store's pool must come back) and a server
refusing LISTEN, or a session URL that is a transaction-mode pooler, switch
it to polling for good (``mode == "poll"``; ``session_pooled`` in the
latter case). The counters ``stats()`` reads are kept on the loop.
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

from ..notifications.listener import _PROBE_TIMEOUT, _REFUSED_CLASSES, _sqlstate
from ..notifications.payload import Notification, parse_payload
from ..storage.polls import notify_op
from .bridge import discard, submit

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from .bridge import LoopIO

__all__ = ["AsyncListener"]

log = logging.getLogger("sqlalchemy_eventstore.notifications")

_FIRST_BACKOFF = 0.05  # the first pause before reconnecting; doubled per failure
_JITTER = 0.1  # +-10% on every pause, so many listeners do not reconnect in step
_MIN_ANSWER_TIMEOUT = 2.0  # LISTEN and the idle check's SELECT 1 answer within this at least


class _ListenRefused(Exception):
    """LISTEN cannot work on this connection: poll instead."""

    def __init__(self, reason: str, *, pooled: bool) -> None:
        super().__init__(reason)
        self.pooled = pooled


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
        polling_reason: str | None = None,
        probe: bool = True,
        probe_timeout: float = _PROBE_TIMEOUT,
    ) -> None:
        self._io = io
        self._channels = (f"{schema}.events", f"{schema}.parked")
        # Where the first connection checks that LISTEN holds (``probe``).
        self._probe_channel = f"{schema}.probe"
        self._probe = probe
        self._probe_timeout = float(probe_timeout)
        self._probe_seen: asyncio.Event | None = None
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
        # Counted for stats(): plain increments on the loop only.
        self.reconnects = 0
        self.notifications = 0
        # "listen" once LISTEN is known to hold, "poll" once it is known not to.
        self._mode: str | None = None
        self._polling_reason = polling_reason
        # Set when LISTEN does not hold on this URL (a transaction-mode pooler).
        self.session_pooled = False
        # Set once the first connection attempt ended, however it ended.
        self._first_attempt = threading.Event()

    def __repr__(self) -> str:
        return f"<AsyncListener {self._name!r} channel={self._channels[0]!r}>"

    @property
    def listening(self) -> bool:
        """True while LISTEN is active on a live connection -- or, in polling
        mode, for good."""
        return self._listening.is_set()

    @property
    def mode(self) -> str | None:
        """``"listen"``, ``"poll"``, or None until the first connection decided."""
        return self._mode

    @property
    def polling_reason(self) -> str | None:
        """Why the listener polls (None when it does not)."""
        return self._polling_reason if self._mode == "poll" else None

    def start(self) -> None:
        """Start the listening task on the store's loop; once only."""
        with self._lock:
            if self._future is not None or self._mode is not None or self._stopping.is_set():
                raise RuntimeError(f"{self!r} was already started; a listener starts once")
            if self._polling_reason is not None:
                self._poll_instead(self._polling_reason, pooled=False)
                return
            self._future = submit(self._io.loop, self._run())

    def wait_listening(self, timeout: float) -> bool:
        """Wait (on a thread other than the loop's) until LISTEN is active (or
        polling mode is on)."""
        return self._listening.wait(timeout)

    def wait_first_attempt(self, timeout: float) -> bool:
        """Wait until the first connection attempt ended (listening, polling or
        failed); False on timeout."""
        return self._first_attempt.wait(timeout)

    def _poll_instead(self, reason: str, *, pooled: bool) -> None:
        """Switch to polling mode for good (logged once, here)."""
        self._polling_reason = reason
        self.session_pooled = pooled
        self._mode = "poll"
        log.warning("%r: %s; subscriptions poll for new events instead", self, reason)
        self._listening.set()
        self._first_attempt.set()

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
                    if self._mode is None:
                        await self._verify(conn, driver)
                except _ListenRefused as refused:
                    self._poll_instead(str(refused), pooled=refused.pooled)
                    return
                except Exception as error:
                    failures += 1
                    log.warning("%r: cannot connect (attempt %d): %s", self, failures, error)
                    self._first_attempt.set()
                    continue
                opened = time.monotonic()
                self._mode = "listen"
                self._listening.set()
                self._first_attempt.set()
                if connected_before:
                    self.reconnects += 1
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
            if self._mode != "poll":
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
        except Exception as error:
            await discard(conn)
            code = _sqlstate(error)
            if code is not None and code[:2] in _REFUSED_CLASSES:
                raise _ListenRefused(
                    f"the server refuses LISTEN ({code}: {str(error).strip()})", pooled=False
                ) from error
            raise
        except BaseException:
            await discard(conn)
            raise
        return conn, driver

    async def _verify(self, conn: AsyncConnection, driver: Any) -> None:
        """Check that LISTEN holds: a NOTIFY sent through the store's pool must
        come back. Through a transaction-mode pooler it never does (the pooler
        gave the session holding the LISTEN back to its pool). Notifications
        arriving meanwhile are delivered as usual."""
        if not self._probe:
            return
        seen = self._probe_seen = asyncio.Event()
        channel = self._probe_channel
        try:
            if self._is_asyncpg(driver):
                await driver.add_listener(channel, self._asyncpg_callback)
                await self._io._autocommit(lambda: notify_op(channel))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(seen.wait(), self._probe_timeout)
                if not seen.is_set():
                    await asyncio.wait_for(driver.fetchval("SELECT 1"), self._answer_timeout)
            else:
                from psycopg import sql

                await driver.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                await self._io._autocommit(lambda: notify_op(channel))
                deadline = time.monotonic() + self._probe_timeout
                while not seen.is_set() and not self._stopping.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    notifies = driver.notifies(timeout=min(left, 0.2))
                    async with contextlib.aclosing(notifies):
                        async for notify in notifies:
                            self._deliver(notify.channel, notify.payload)
                            if seen.is_set():
                                break
                if not seen.is_set():
                    # Alive, so the NOTIFY was lost, not the connection.
                    await asyncio.wait_for(driver.execute("SELECT 1"), self._answer_timeout)
        except BaseException:
            await discard(conn)
            raise
        if not seen.is_set() and not self._stopping.is_set():
            await discard(conn)
            raise _ListenRefused(
                "LISTEN does not hold on the session URL "
                f"(no notification came back within {self._probe_timeout:g} s): a "
                "transaction-mode pooler such as PgBouncer? Give the store a "
                "session_mode_url that reaches the server directly or through a "
                "session-mode pool",
                pooled=True,
            )

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
        self._deliver(channel, payload)

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
                    self._deliver(notify.channel, notify.payload)
            # Idle that long: a dead or hung connection fails here.
            await asyncio.wait_for(driver.execute("SELECT 1"), self._answer_timeout)

    def _deliver(self, channel: str, payload: str) -> None:
        if channel == self._probe_channel:
            if self._probe_seen is not None:
                self._probe_seen.set()  # any probe: LISTEN holds on this connection
            return
        if channel == self._channels[1]:
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
        self.notifications += 1
        self._call("on_notification", self._on_notification, notification)

    def _call(self, what: str, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("%r: %s callback raised; carrying on", self, what)
