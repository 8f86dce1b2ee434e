"""The LISTEN connection: one raw DBAPI connection on a thread of its own.

Subscriptions learn of new events from the ``notify_events`` trigger's NOTIFY
on ``"<schema>.events"``. The listener holds one connection of its own (see
``dbapi``), waits on its socket with ``select`` so that ``stop()`` is noticed
within a fifth of a second, and turns every payload into a callback.

Where LISTEN cannot work -- the server refuses it, or it does not hold
because the connection goes through a transaction-mode pooler (PgBouncer),
which hands the session holding it to other clients -- the listener switches
to *polling mode* once, logs why, and ends its thread: ``mode`` says
``"poll"`` and the subscriptions' scheduler polls the streams it follows
instead (see ``subscriptions.polling``). Whether LISTEN holds is checked
once, on the first connection, when a ``probe`` is given: a NOTIFY sent
through another connection must come back within ``probe_timeout``.

Notifications are at-most-once: whatever commits while no LISTEN is active
is never notified. So after a lost connection the listener reconnects with
exponential backoff, re-issues LISTEN and only *then* calls
``on_reconnect``: a caller that re-reads storage from its last known
position in that callback misses nothing -- a commit before the LISTEN is in
the re-read, a commit after it is notified (and may be seen twice).
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import URL

from .dbapi import Connection, opener
from .payload import Notification, parse_payload

__all__ = ["Listener"]

log = logging.getLogger("sqlalchemy_eventstore.notifications")

_POLL_INTERVAL = 0.2  # how long one select() waits: stop() is noticed within this
_FIRST_BACKOFF = 0.05  # the first pause before reconnecting; doubled per failure
_JITTER = 0.1  # +-10% on every pause, so many listeners do not reconnect in step
_STOP_GRACE = 1.0  # stop() waits this long for a clean exit before cutting the socket
_MIN_ANSWER_TIMEOUT = 2.0  # LISTEN and the idle check's SELECT 1 answer within this at least
_PROBE_TIMEOUT = 10.0  # a probe NOTIFY must come back within this, or LISTEN does not hold
# SQLSTATE classes of a server refusing LISTEN itself (feature not supported,
# read-only transaction state, syntax or permission), as opposed to a
# connection that failed: those switch to polling, these reconnect.
_REFUSED_CLASSES = ("0A", "25", "42")


class _ListenRefused(Exception):
    """LISTEN cannot work on this connection: poll instead."""

    def __init__(self, reason: str, *, pooled: bool) -> None:
        super().__init__(reason)
        self.pooled = pooled


def _sqlstate(error: BaseException) -> str | None:
    code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    return code if isinstance(code, str) else None


class Listener:
    """LISTENs on ``"<schema>.events"`` and calls back for every notification.

    ``on_notification`` receives each parsed :class:`Notification`;
    ``on_reconnect`` is called once after every reconnection (not after the
    first connection), once LISTEN is active again. Both run on the
    listener's thread, one at a time: keep them short. A callback that raises
    is logged and the listener carries on.

    ``probe(channel)`` sends a NOTIFY on ``channel`` through another
    connection (the store's pool): given, the first connection checks that
    LISTEN holds. ``polling_reason`` starts the listener in polling mode at
    once, without connecting (the store knows LISTEN cannot hold).
    """

    def __init__(
        self,
        url: URL,
        schema: str,
        *,
        on_notification: Callable[[Notification], None],
        on_reconnect: Callable[[], None],
        on_parked: Callable[[int], None] | None = None,
        name: str = "eventstore-listener",
        max_backoff: float = 5.0,
        idle_check_interval: float = 5.0,
        creator: Callable[[], Any] | None = None,
        probe: Callable[[str], None] | None = None,
        probe_timeout: float = _PROBE_TIMEOUT,
        polling_reason: str | None = None,
    ) -> None:
        if not isinstance(schema, str) or not schema:
            raise ValueError("schema must be a non-empty str")
        if max_backoff <= 0:
            raise ValueError("max_backoff must be > 0 seconds")
        if idle_check_interval <= 0:
            raise ValueError("idle_check_interval must be > 0 seconds")
        self._open = opener(url, name, creator)
        self._url = url
        # One identifier, quoted whole: the trigger's channel is the text
        # TG_TABLE_SCHEMA || '.events', not a schema-qualified name.
        self._channel = f"{schema}.events"
        # Replay and discard requests of parked events: the payload is the
        # subscription's id (digits only, unlike an event notification).
        self._parked_channel = f"{schema}.parked"
        # Where the first connection checks that LISTEN holds (``probe``).
        self._probe_channel = f"{schema}.probe"
        self._probe = probe
        self._probe_timeout = float(probe_timeout)
        self._probe_seen = False
        self._on_parked = on_parked
        self._on_notification = on_notification
        self._on_reconnect = on_reconnect
        self._name = name
        self._max_backoff = float(max_backoff)
        self._idle_check_interval = float(idle_check_interval)
        self._answer_timeout = max(self._idle_check_interval, _MIN_ANSWER_TIMEOUT)

        self._lock = threading.Lock()  # guards _thread, _fd and the stopping transition
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None  # the live connection's socket, for stop() to cut
        # Counted for EventStore.stats(): plain increments on this thread only.
        self.reconnects = 0
        self.notifications = 0
        # "listen" once LISTEN is known to hold, "poll" once it is known not to.
        self._mode: str | None = None
        self._polling_reason = polling_reason
        # Set when LISTEN does not hold on this URL (a transaction-mode pooler):
        # session state -- advisory locks included -- does not hold there either.
        self.session_pooled = False
        # Set once the first connection attempt ended, however it ended.
        self._first_attempt = threading.Event()

    def __repr__(self) -> str:
        url = self._url.render_as_string(hide_password=True)
        return f"<Listener {self._name!r} channel={self._channel!r} url={url!r}>"

    @property
    def listening(self) -> bool:
        """True while LISTEN is active on a live connection -- or, in polling
        mode, for good: changes then come from polling, never from here."""
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
        """Start the listener's daemon thread (named ``name``); once only."""
        with self._lock:
            if self._thread is not None or self._mode is not None or self._stopping.is_set():
                raise RuntimeError(f"{self!r} was already started; a Listener starts once")
            if self._polling_reason is not None:
                self._poll_instead(self._polling_reason, pooled=False)
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        """Wait until LISTEN is active on a live connection (or polling mode is
        on); False on timeout."""
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
        """Close the connection and join the thread. Idempotent.

        The thread notices within one poll interval, also while backing off.
        Should it be stuck in a database call (a server that stopped
        answering), its socket is shut down under it after a grace period.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping.set()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return  # never started (or polling from the start), or called from a callback
        thread.join(min(timeout, _STOP_GRACE))
        if thread.is_alive():
            self._cut_socket()
            thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("%r: thread still running %.1f s after stop()", self, timeout)

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        failures = 0  # consecutive failed connects or short-lived connections
        connected_before = False
        while not self._stopping.is_set():
            if failures and self._stopping.wait(self._backoff(failures)):
                break
            try:
                conn = self._connect()
                if conn is not None and self._mode is None:
                    self._verify(conn)
            except _ListenRefused as refused:
                self._poll_instead(str(refused), pooled=refused.pooled)
                return
            except Exception as error:
                failures += 1
                log.warning("%r: cannot connect (attempt %d): %s", self, failures, error)
                self._first_attempt.set()
                continue
            if conn is None:
                break  # stop() came while connecting
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
                self._serve(conn)
            except Exception as error:
                if not self._stopping.is_set():
                    log.warning("%r: connection lost, reconnecting: %s", self, error)
            finally:
                self._listening.clear()
                self._release(conn)
            # A connection that lived long resets the backoff; a flapping one does not.
            failures = 1 if time.monotonic() - opened >= self._max_backoff else failures + 1
        self._listening.clear()

    def _backoff(self, failures: int) -> float:
        pause = min(self._max_backoff, _FIRST_BACKOFF * 2.0 ** min(failures - 1, 30))
        return pause * random.uniform(1 - _JITTER, 1 + _JITTER)

    def _connect(self) -> Connection | None:
        """A new connection with LISTEN active, or None when stopping."""
        conn = self._open()
        with self._lock:
            stopping = self._stopping.is_set()
            if not stopping:
                self._fd = conn.fileno()
        if stopping:
            self._release(conn)
            return None
        try:
            with self._watchdog():
                conn.listen(self._channel)
                if self._on_parked is not None:
                    conn.listen(self._parked_channel)
        except Exception as error:
            self._release(conn)
            code = _sqlstate(error)
            if code is not None and code[:2] in _REFUSED_CLASSES:
                raise _ListenRefused(
                    f"the server refuses LISTEN ({code}: {str(error).strip()})", pooled=False
                ) from error
            raise
        except BaseException:
            self._release(conn)
            raise
        return conn

    def _verify(self, conn: Connection) -> None:
        """Check that LISTEN holds: a NOTIFY sent through another connection
        must come back. Through a transaction-mode pooler it never does (the
        pooler gave the session holding the LISTEN back to its pool).
        Notifications arriving meanwhile are delivered as usual."""
        if self._probe is None:
            return
        try:
            with self._watchdog():
                conn.listen(self._probe_channel)
            self._probe_seen = False
            self._probe(self._probe_channel)
            deadline = time.monotonic() + self._probe_timeout
            fd = conn.fileno()
            while not self._probe_seen and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                readable, _, _ = select.select([fd], [], [], min(left, _POLL_INTERVAL))
                if readable:
                    for channel, payload in conn.drain():
                        self._deliver(channel, payload)
            if self._probe_seen or self._stopping.is_set():
                return
            with self._watchdog():
                conn.ping()  # alive, so the NOTIFY was lost, not the connection
            for channel, payload in conn.drain():
                self._deliver(channel, payload)
        except BaseException:
            self._release(conn)
            raise
        if not self._probe_seen:
            self._release(conn)
            raise _ListenRefused(
                f"LISTEN does not hold on {self._url.render_as_string(hide_password=True)} "
                f"(no notification came back within {self._probe_timeout:g} s): a "
                "transaction-mode pooler such as PgBouncer? Give the store a "
                "session_mode_url that reaches the server directly or through a "
                "session-mode pool",
                pooled=True,
            )

    def _release(self, conn: Connection) -> None:
        # Forget the socket under the lock before closing it, so that stop()
        # never shuts down a descriptor number the OS has since reused.
        with self._lock:
            self._fd = None
        try:
            conn.close()
        except Exception as error:
            log.debug("%r: error closing the connection: %s", self, error)

    def _serve(self, conn: Connection) -> None:
        """Deliver notifications until stopping; raise when the connection fails."""
        fd = conn.fileno()
        last_traffic = time.monotonic()
        while not self._stopping.is_set():
            readable, _, _ = select.select([fd], [], [], _POLL_INTERVAL)
            now = time.monotonic()
            if readable:
                payloads = conn.drain()  # EOF from a dead server raises here
            elif now - last_traffic >= self._idle_check_interval:
                with self._watchdog():
                    conn.ping()  # a dead or hung connection fails here
                payloads = conn.drain()
            else:
                continue
            last_traffic = now
            for channel, payload in payloads:
                if self._stopping.is_set():
                    return
                self._deliver(channel, payload)

    def _deliver(self, channel: str, payload: str) -> None:
        if channel == self._probe_channel:
            self._probe_seen = True  # any probe: LISTEN holds on this connection
            return
        if channel == self._parked_channel:
            if self._on_parked is not None and payload.isascii() and payload.isdigit():
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

    @contextmanager
    def _watchdog(self) -> Iterator[None]:
        """Cut the socket should the enclosed call get no answer in time.

        A server that stopped answering but whose kernel still acknowledges
        TCP (a hung or SIGSTOPped backend, a proxy that lost its upstream)
        defeats keepalives and tcp_user_timeout; without this the call would
        block for good and the listener would never reconnect.
        """

        def expire() -> None:
            log.warning("%r: no answer within %.1f s, dropping the connection", self, timeout)
            self._cut_socket()

        timeout = self._answer_timeout
        timer = threading.Timer(timeout, expire)
        timer.name = f"{self._name}-watchdog"
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            timer.join()

    def _cut_socket(self) -> None:
        """Shut the live socket down, failing whatever call blocks on it."""
        with self._lock:
            if self._fd is None:
                return
            try:
                duplicate = os.dup(self._fd)
            except OSError as error:
                log.debug("%r: could not shut the socket down: %s", self, error)
                return
            try:
                # shutdown() acts on the socket itself, whichever descriptor names it;
                # closing the duplicate afterwards leaves the driver's descriptor alone.
                sock = socket.socket(fileno=duplicate)
            except OSError as error:
                os.close(duplicate)
                log.debug("%r: could not shut the socket down: %s", self, error)
                return
            with sock:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError as error:
                    log.debug("%r: could not shut the socket down: %s", self, error)
