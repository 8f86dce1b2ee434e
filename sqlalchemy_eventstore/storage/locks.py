"""Advisory locks that keep a named subscription to one instance cluster-wide.

Locks are session-level, so they live on one dedicated connection per store
(the ``session_mode_url`` when given: PgBouncer in transaction mode cannot hold
them). The key is the reference's: the ``subscriptions`` table's oid and the
subscription's id, so this package and the Elixir library exclude each other.
The server releases every lock when the session ends -- a crashed process
frees its subscriptions -- and this connection's loss means all locks are lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .schema import quote_ident

__all__ = ["AdvisoryLocks"]

logger = logging.getLogger("sqlalchemy_eventstore.subscriptions")

# The reference's two-int key: (subscriptions table oid, subscription id).
_KEY = """(
    CAST(CAST(CAST(%(table)s AS regclass) AS oid) AS int),
    CAST(CASE WHEN %(id)s > 2147483647 THEN mod(%(id)s, 2147483647) ELSE %(id)s END AS int)
)"""


class AdvisoryLocks:
    """Try-locks on one session connection; reconnects (holding nothing) when lost."""

    def __init__(
        self,
        url: URL,
        schema: str,
        *,
        application_name: str,
        creator: Callable[[], Any] | None = None,
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
        self._schema = schema
        self._conn: Any = None
        self._held: set[int] = set()
        self._generation = 0
        self._lock = threading.Lock()

    def _params(self, subscription_id: int) -> dict[str, Any]:
        return {"table": f"{quote_ident(self._schema)}.subscriptions", "id": subscription_id}

    @property
    def generation(self) -> int:
        """Incremented whenever the session is replaced (all locks were lost)."""
        return self._generation

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            if self._conn is not None:
                self._lost()
            self._conn = self._engine.connect()
            self._conn.exec_driver_sql(
                "SELECT set_config('application_name', %(name)s, false)",
                {"name": self._application_name},
            )
        return self._conn

    def _lost(self) -> None:
        if self._held:
            logger.warning("advisory lock connection lost; released %d locks", len(self._held))
        self._held.clear()
        self._generation += 1
        self._conn = None

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
                    conn = self._connection()
                    got = conn.exec_driver_sql(
                        "SELECT pg_try_advisory_lock" + _KEY, self._params(subscription_id)
                    ).scalar()
                except Exception:
                    self._drop()
                    if attempt == 2:
                        raise
                    logger.info("advisory lock session failed; retrying on a new one")
                    continue
                if got:
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
                self._connection().exec_driver_sql(
                    "SELECT pg_advisory_unlock" + _KEY, self._params(subscription_id)
                )
            except Exception:
                logger.warning("could not release advisory lock", exc_info=True)
                self._drop()

    def alive(self) -> bool:
        """Check the session still exists (a round trip); False drops every lock."""
        if self._conn is None:
            return False
        try:
            self._conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            self._drop()
            return False

    def holds(self, subscription_id: int) -> bool:
        return subscription_id in self._held

    def _drop(self) -> None:
        try:
            if self._conn is not None:
                self._conn.invalidate()
                self._conn.close()
        except Exception:
            logger.debug("error closing advisory lock connection", exc_info=True)
        self._lost()

    def check(self, subscription_ids: list[int]) -> tuple[int, set[int]] | None:
        """One round trip on the lock session: its generation and which of
        ``subscription_ids`` still have their row (a deleted subscription's
        lock is released here). None when the session is gone: every lock
        taken on it is lost, whatever generation comes next."""
        with self._lock:
            if self._conn is None:
                return None
            try:
                rows = self._conn.exec_driver_sql(
                    f"SELECT subscription_id FROM {quote_ident(self._schema)}.subscriptions "
                    "WHERE subscription_id = ANY(%(ids)s)",
                    {"ids": [i for i in subscription_ids if i > 0] or [0]},
                ).all()
            except Exception:
                self._drop()
                return None
            existing = {int(r[0]) for r in rows}
            return self._generation, existing

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    logger.debug("error closing advisory lock connection", exc_info=True)
                self._conn = None
            self._held.clear()
            self._engine.dispose()
