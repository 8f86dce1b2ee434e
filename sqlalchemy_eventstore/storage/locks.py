"""Advisory locks that keep a named subscription to one instance cluster-wide.

Locks are session-level, so they live on one dedicated connection per store
(the ``session_mode_url`` when given: PgBouncer in transaction mode cannot hold
them). The key is the reference's: the ``subscriptions`` table's oid and the
subscription's id, so this package and the Elixir library exclude each other
-- and a sync and an async store of this package too: both run these
statements, each on its own driver (a :class:`LockSession`).
The server releases every lock when the session ends -- a crashed process
frees its subscriptions -- and this connection's loss means all locks are lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .schema import quote_ident

__all__ = ["SET_APPLICATION_NAME", "AdvisoryLocks", "EngineLockSession", "LockSession"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")

# The reference's two-int key: (subscriptions table oid, subscription id).
# The casts name every parameter's type, so a driver that prepares the
# statement server-side (asyncpg) binds the same values as one that does not.
_KEY = """(
    CAST(CAST(CAST(CAST(%(table)s AS text) AS regclass) AS oid) AS int),
    CAST(CASE WHEN CAST(%(id)s AS bigint) > 2147483647
              THEN mod(CAST(%(id)s AS bigint), 2147483647)
              ELSE CAST(%(id)s AS bigint) END AS int)
)"""

SET_APPLICATION_NAME = "SELECT set_config('application_name', %(name)s, false)"


class LockSession(Protocol):
    """One session connection for the locks, on whichever driver the store runs."""

    @property
    def open(self) -> bool:
        """A connection is open (not closed); it may still turn out dead."""
        ...

    def connect(self) -> None:
        """Open a new, named connection (autocommit)."""
        ...

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        """Run a ``%(name)s`` statement; its rows."""
        ...

    def drop(self) -> None:
        """Throw the connection away (invalidated), ignoring errors."""
        ...

    def close(self) -> None:
        """Close the connection and whatever the session made."""
        ...


class EngineLockSession:
    """The locks' session on a sync driver: a NullPool engine's one connection."""

    def __init__(
        self, url: URL, application_name: str, creator: Callable[[], Any] | None = None
    ) -> None:
        # ``creator`` (a new DBAPI connection from the caller's Engine) wins
        # over the URL's connect arguments; either way the session is named.
        options: dict[str, Any] = (
            {"creator": creator}
            if creator is not None
            else {"connect_args": {"application_name": application_name}}
        )
        self._engine: Engine = create_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT", **options
        )
        self._application_name = application_name
        self._conn: Connection | None = None

    @property
    def open(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> None:
        self._conn = self._engine.connect()
        self._conn.exec_driver_sql(SET_APPLICATION_NAME, {"name": self._application_name})

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
        assert self._conn is not None
        result = self._conn.exec_driver_sql(sql, dict(params or {}))
        return result.all() if result.returns_rows else ()

    def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:
                logger.debug("error closing advisory lock connection", exc_info=True)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                logger.debug("error closing advisory lock connection", exc_info=True)
        self._engine.dispose()


class AdvisoryLocks:
    """Try-locks on one session connection; reconnects (holding nothing) when lost."""

    def __init__(self, session: LockSession, schema: str) -> None:
        self._session = session
        self._schema = schema
        # A session was connected and not dropped since: its loss loses the locks.
        self._live = False
        self._held: set[int] = set()
        self._generation = 0
        self._lock = threading.Lock()

    def _params(self, subscription_id: int) -> dict[str, Any]:
        return {"table": f"{quote_ident(self._schema)}.subscriptions", "id": subscription_id}

    @property
    def generation(self) -> int:
        """Incremented whenever the session is replaced (all locks were lost)."""
        return self._generation

    def _connection(self) -> LockSession:
        if self._live and not self._session.open:
            self._lost()  # closed under us
        if not self._live:
            self._session.connect()
            self._live = True
        return self._session

    def _lost(self) -> None:
        if self._held:
            logger.warning("advisory lock connection lost; released %d locks", len(self._held))
        self._held.clear()
        self._generation += 1
        self._live = False

    def try_lock(self, subscription_id: int) -> int | None:
        """Take the subscription's lock if free (or already ours).

        Returns the session generation the lock belongs to (compare it with
        :meth:`check`'s), or None when another session holds it. A dead
        session is replaced and the attempt made once more at once, so a
        takeover never waits a retry interval because of a stale connection.
        """
        with self._lock:
            if subscription_id in self._held and self.alive():
                return self._generation
            for attempt in (1, 2):
                try:
                    rows = self._connection().execute(
                        "SELECT pg_try_advisory_lock" + _KEY, self._params(subscription_id)
                    )
                except Exception:
                    self._drop()
                    if attempt == 2:
                        raise
                    logger.info("advisory lock session failed; retrying on a new one")
                    continue
                if rows[0][0]:
                    self._held.add(subscription_id)
                    return self._generation
                return None
            return None  # pragma: no cover -- the loop returns or raises

    def unlock(self, subscription_id: int) -> None:
        with self._lock:
            if subscription_id not in self._held:
                return
            self._held.discard(subscription_id)
            try:
                self._connection().execute(
                    "SELECT pg_advisory_unlock" + _KEY, self._params(subscription_id)
                )
            except Exception:
                logger.warning("could not release advisory lock", exc_info=True)
                self._drop()

    def alive(self) -> bool:
        """Check the session still exists (a round trip); False drops every lock."""
        if not self._live:
            return False
        try:
            self._session.execute("SELECT 1")
            return True
        except Exception:
            self._drop()
            return False

    def holds(self, subscription_id: int) -> bool:
        return subscription_id in self._held

    def _drop(self) -> None:
        self._session.drop()
        self._lost()

    def check(self, subscription_ids: list[int]) -> tuple[int, set[int]] | None:
        """One round trip on the lock session: its generation and which of
        ``subscription_ids`` still have their row (a deleted subscription's
        lock is released here). None when the session is gone: every lock
        taken on it is lost, whatever generation comes next."""
        with self._lock:
            if not self._live:
                return None
            try:
                rows = self._session.execute(
                    f"SELECT subscription_id FROM {quote_ident(self._schema)}.subscriptions "
                    "WHERE subscription_id = ANY(CAST(%(ids)s AS bigint[]))",
                    {"ids": [i for i in subscription_ids if i > 0] or [0]},
                )
            except Exception:
                self._drop()
                return None
            existing = {int(r[0]) for r in rows}
            return self._generation, existing

    def close(self) -> None:
        with self._lock:
            self._session.close()
            self._live = False
            self._held.clear()
