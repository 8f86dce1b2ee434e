"""How the subscription runner reaches the database: one narrow port, two shells.

The runner (its scheduler thread, its reader thread, the acking threads)
decides everything and only ever waits for I/O through a :class:`StorageIO`:
three ways to run a storage operation of :mod:`..storage` (the same
generators both APIs run), the LISTEN connection and the advisory-lock
session. :class:`EngineIO` is the sync store's, on its ``Engine`` and a
psycopg2 / psycopg 3 connection of its own; the async store's
(``sqlalchemy_eventstore.asyncio``) runs the same operations as coroutines on
the store's event loop, with the async driver's own LISTEN. So both APIs share
one state machine, one failure policy and one source of SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ..notifications.listener import Listener
from ..notifications.payload import Notification
from ..storage.connection import connection
from ..storage.locks import AdvisoryLocks, EngineLockSession
from ..storage.polls import notify_op
from ..storage.steps import Op, run

__all__ = ["EngineIO", "ListenerLike", "MakeOp", "StorageIO"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")
T = TypeVar("T")

#: Builds the operation to run: called again for a retry on a new connection.
MakeOp = Callable[[], Op[T]]


class ListenerLike(Protocol):
    """What the runner needs of a LISTEN connection (see ``Listener``): its
    lifecycle, its mode (LISTEN or polling, and why), whether the session
    URL turned out to be a transaction-mode pooler, and the counters
    ``stats()`` reads."""

    reconnects: int
    notifications: int
    session_pooled: bool

    @property
    def listening(self) -> bool: ...

    @property
    def mode(self) -> str | None: ...

    @property
    def polling_reason(self) -> str | None: ...

    def start(self) -> None: ...

    def wait_listening(self, timeout: float) -> bool: ...

    def wait_first_attempt(self, timeout: float) -> bool: ...

    def stop(self, timeout: float = 5.0) -> None: ...


class StorageIO(Protocol):
    """The runner's way to the database; every call blocks the calling thread."""

    def read(self, make_op: MakeOp[T]) -> T:
        """Run a one-statement read (no transaction of its own)."""
        ...

    def transact(self, make_op: MakeOp[T]) -> T:
        """Run ``make_op()`` in a transaction, once more on a new connection
        should the pooled one turn out dead."""
        ...

    def autocommit(self, make_op: MakeOp[T]) -> T:
        """Run a one-statement write committed at once, retried as :meth:`transact`."""
        ...

    def listener(
        self,
        schema: str,
        *,
        on_notification: Callable[[Notification], None],
        on_reconnect: Callable[[], None],
        on_parked: Callable[[int], None],
        name: str,
        polling_reason: str | None,
    ) -> ListenerLike:
        """A LISTEN connection on ``"<schema>.events"`` and ``"<schema>.parked"``
        (not started), whose first connection checks that LISTEN holds with a
        NOTIFY sent through the store's pool (``storage.polls.notify_op``);
        ``polling_reason``: poll from the start instead, without connecting."""
        ...

    def locks(self, schema: str, application_name: str) -> AdvisoryLocks:
        """The advisory locks, on a session connection of their own."""
        ...


def _fresh(attempt: Callable[[], T]) -> T:
    """``attempt()``, once more at once should the pooled connection turn out
    dead (a restarted server, a terminated backend): the pool has discarded
    it by then, so the retry gets a new one."""
    for number in (1, 2):
        try:
            return attempt()
        except DBAPIError as error:
            if number == 2 or not error.connection_invalidated:
                raise
            logger.info("stale pooled connection; retrying at once")
    raise AssertionError("unreachable")  # pragma: no cover


class EngineIO:
    """The sync store's :class:`StorageIO`: its Engine, psycopg2 or psycopg 3."""

    def __init__(
        self,
        engine: Engine,
        *,
        prepare: bool,
        session_url: URL,
        session_creator: Callable[[], Any] | None,
    ) -> None:
        self.engine = engine
        self._prepare = prepare  # psycopg2 prepared statements for the reads
        # Where LISTEN and the advisory locks connect, and how (None: from the URL).
        self.session_url = session_url
        self.session_creator = session_creator

    def read(self, make_op: MakeOp[T]) -> T:
        with self.engine.connect() as conn:
            return run(conn, make_op(), prepare=self._prepare)

    def transact(self, make_op: MakeOp[T]) -> T:
        def attempt() -> T:
            with self.engine.begin() as conn:
                return run(conn, make_op())

        return _fresh(attempt)

    def autocommit(self, make_op: MakeOp[T]) -> T:
        def attempt() -> T:
            with connection(self.engine, None, transaction=False) as conn:
                return run(conn, make_op())

        return _fresh(attempt)

    def listener(
        self,
        schema: str,
        *,
        on_notification: Callable[[Notification], None],
        on_reconnect: Callable[[], None],
        on_parked: Callable[[int], None],
        name: str,
        polling_reason: str | None,
    ) -> Listener:
        return Listener(
            self.session_url,
            schema,
            on_notification=on_notification,
            on_reconnect=on_reconnect,
            on_parked=on_parked,
            name=name,
            creator=self.session_creator,
            probe=lambda channel: self.autocommit(lambda: notify_op(channel)),
            polling_reason=polling_reason,
        )

    def locks(self, schema: str, application_name: str) -> AdvisoryLocks:
        return AdvisoryLocks(
            EngineLockSession(self.session_url, application_name, self.session_creator), schema
        )
