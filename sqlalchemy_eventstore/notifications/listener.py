"""The LISTEN connection: one raw DBAPI connection on a thread of its own.

Subscriptions learn of new events from the ``notify_events`` trigger's NOTIFY
on ``"<schema>.events"``. The listener holds one connection of its own (see
``dbapi``), waits on its socket with ``select`` so that ``stop()`` is noticed
within a fifth of a second, and turns every payload into a callback.

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


class Listener:
    """LISTENs on ``"<schema>.events"`` and calls back for every notification.

    ``on_notification`` receives each parsed :class:`Notification`;
    ``on_reconnect`` is called once after every reconnection (not after the
    first connection), once LISTEN is active again. Both run on the
    listener's thread, one at a time: keep them short. A callback that raises
    is logged and the listener carries on.
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

    def __repr__(self) -> str:
        url = self._url.render_as_string(hide_password=True)
        return f"<Listener {self._name!r} channel={self._channel!r} url={url!r}>"

    @property
    def listening(self) -> bool:
        """True while LISTEN is active on a live connection."""
        return self._listening.is_set()

    def start(self) -> None:
        """Start the listener's daemon thread (named ``name``); once only."""
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                raise RuntimeError(f"{self!r} was already started; a Listener starts once")
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        """Wait until LISTEN is active on a live connection; False on timeout."""
        return self._listening.wait(timeout)

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
            return  # never started, or stop() called from one of our callbacks
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
            except Exception as error:
                failures += 1
                log.warning("%r: cannot connect (attempt %d): %s", self, failures, error)
                continue
            if conn is None:
                break  # stop() came while connecting
            opened = time.monotonic()
            self._listening.set()
            if connected_before:
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
        except BaseException:
            self._release(conn)
            raise
        return conn

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
            for payload in payloads:
                if self._stopping.is_set():
                    return
                self._deliver(payload)

    def _deliver(self, payload: str) -> None:
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
