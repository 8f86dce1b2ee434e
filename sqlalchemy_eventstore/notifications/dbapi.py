"""The raw DBAPI connection the listener holds, for psycopg2 and psycopg 3 alike.

A pooled SQLAlchemy connection cannot hold a LISTEN (the pool would hand it
to someone else, and PgBouncer in transaction mode drops it), so the listener
opens its own connection from the store's URL. This module hides the two
drivers' differences -- how LISTEN is quoted, how notifications are read
without blocking -- behind the few calls the listener makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.engine import URL

__all__ = ["Connection", "driver_of", "opener"]

# libpq options for noticing a dead peer. Keepalives cover an idle socket;
# tcp_user_timeout (libpq >= 12) covers the idle check's SELECT 1 waiting on a
# network that silently dropped it. libpq ignores both on Unix sockets. A
# URL's own values win (setdefault).
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
_TCP_USER_TIMEOUT_MS = 15_000
_CONNECT_TIMEOUT_S = 5  # bounds how long one connect attempt (and so stop()) can block


class Connection(Protocol):
    """A DBAPI connection reduced to what the listener thread does with it."""

    def fileno(self) -> int: ...

    def listen(self, channel: str) -> None: ...

    def ping(self) -> None: ...

    def drain(self) -> list[tuple[str, str]]:
        """The (channel, payload) pairs received so far, read without blocking."""
        ...

    def close(self) -> None: ...


class _Psycopg2Connection:
    def __init__(self, params: dict[str, Any], conn: Any = None) -> None:
        import psycopg2

        self._conn = conn if conn is not None else psycopg2.connect(**params)
        try:
            self._conn.autocommit = True  # LISTEN takes effect at once, outside a transaction
        except BaseException:
            self._conn.close()
            raise

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def listen(self, channel: str) -> None:
        from psycopg2 import sql

        with self._conn.cursor() as cursor:
            cursor.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def ping(self) -> None:
        with self._conn.cursor() as cursor:
            cursor.execute("SELECT 1")

    def drain(self) -> list[tuple[str, str]]:
        self._conn.poll()  # reads what the socket holds; raises if the server is gone
        payloads = [(str(notify.channel), str(notify.payload)) for notify in self._conn.notifies]
        del self._conn.notifies[:]
        return payloads

    def close(self) -> None:
        self._conn.close()


class _PsycopgConnection:
    def __init__(self, params: dict[str, Any], conn: Any = None) -> None:
        import psycopg

        self._conn: psycopg.Connection[Any]
        if conn is not None:
            conn.autocommit = True
            self._conn = conn
        else:
            self._conn = psycopg.connect(**params, autocommit=True)

    def fileno(self) -> int:
        return self._conn.fileno()

    def listen(self, channel: str) -> None:
        from psycopg import sql

        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    def ping(self) -> None:
        self._conn.execute("SELECT 1")

    def drain(self) -> list[tuple[str, str]]:
        # timeout=0: yields what arrived (also during ping/LISTEN), never waits.
        return [(notify.channel, notify.payload) for notify in self._conn.notifies(timeout=0)]

    def close(self) -> None:
        self._conn.close()


def _named(wrapped: Connection, conn: Any, application_name: str) -> Connection:
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT set_config('application_name', %s, false)", (application_name,))
    finally:
        cursor.close()
    return wrapped


_WRAPPERS: dict[str, Callable[[dict[str, Any], Any], Connection]] = {
    "psycopg2": _Psycopg2Connection,
    "psycopg": _PsycopgConnection,
}


def driver_of(url: URL) -> str:
    """The DBAPI driver SQLAlchemy uses for ``url``: the one it names, else the
    dialect's default (psycopg2 on SQLAlchemy 2.0, psycopg 3 on 2.1 for a
    plain ``postgresql://``)."""
    if url.drivername == "postgres":  # libpq's spelling, unknown to SQLAlchemy 2
        return "psycopg2"
    driver: str = url.get_dialect().driver
    return driver


def _wrapper(driver: str) -> Callable[[dict[str, Any], Any], Connection]:
    try:
        return _WRAPPERS[driver]
    except KeyError:
        raise ValueError(
            "the listener needs a postgresql+psycopg2 or postgresql+psycopg URL "
            f"(or engine), got driver {driver!r}"
        ) from None


def _driver_of_connection(conn: Any) -> str:
    """``psycopg2`` or ``psycopg``: the package a DBAPI connection comes from."""
    return type(conn).__module__.partition(".")[0]


def opener(
    url: URL,
    application_name: str,
    creator: Callable[[], Any] | None = None,
    driver: str | None = None,
) -> Callable[[], Connection]:
    """A function opening a connection to ``url`` for the listener.

    ``driver`` (an engine's ``dialect.driver``) says which DBAPI to use;
    left out, the one SQLAlchemy picks for ``url`` (:func:`driver_of`) --
    never guessed from the URL's spelling, since a plain ``postgresql://``
    means psycopg2 on SQLAlchemy 2.0 and psycopg 3 on 2.1. The keyword
    arguments come from SQLAlchemy's own dialect, so the listener connects
    exactly as an engine on the same URL would (``?host=/socket/dir``,
    several hosts, sslmode and other query options included). With
    ``creator`` (a function returning a new DBAPI connection, e.g. one made
    by the caller's Engine with its ``connect_args``), connections come from
    it instead, each wrapped for the driver it actually is.
    """
    if creator is not None:

        def adopt() -> Connection:
            conn = creator()
            try:
                wrapped = _wrapper(_driver_of_connection(conn))({}, conn)
                return _named(wrapped, conn, application_name)
            except BaseException:
                conn.close()
                raise

        return adopt

    chosen = driver if driver is not None else driver_of(url)
    wrap = _wrapper(chosen)
    url = url.set(drivername=f"postgresql+{chosen}")
    _, params = url.get_dialect()().create_connect_args(url)
    params = dict(params)
    params["application_name"] = application_name  # how pg_stat_activity shows the listener
    params.setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
    for key, value in _KEEPALIVES.items():
        params.setdefault(key, value)
    if _libpq_version(chosen) >= 120000:
        params.setdefault("tcp_user_timeout", _TCP_USER_TIMEOUT_MS)
    return lambda: wrap(params, None)


def _libpq_version(driver: str) -> int:
    if driver == "psycopg":
        import psycopg

        return psycopg.pq.version()
    import psycopg2

    return int(psycopg2.__libpq_version__)
