"""Server-side prepared statements on psycopg2: PREPARE once per connection, then EXECUTE.

psycopg2 sends every statement as text with its values inlined, so PostgreSQL
parses and plans the append statement (a few kB of CTEs) on every call: about
a quarter of a millisecond, a sixth of a single-event append. psycopg 3 needs
none of this: it prepares a statement by itself once it has run it five times
on a connection (``prepare_threshold``).

A statement is prepared the first time it runs on a pooled connection, under a
name derived from its text (so stores on different schemas sharing an engine
never collide), and the names prepared are remembered in the connection's
``info`` dict, which SQLAlchemy clears when it replaces an invalidated DBAPI
connection. Prepared statements are session state, not transactional: one
prepared inside a caller's transaction survives its rollback. PostgreSQL
re-plans them by itself after DDL on their tables. They cannot cross a
transaction-mode pooler, so a store given ``session_mode_url`` does without.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import Connection, CursorResult
from sqlalchemy.exc import DBAPIError

__all__ = ["Prepared"]

_PARAM = re.compile(r"%\((\w+)\)s")
_INFO_KEY = "sqlalchemy_eventstore.prepared"
_UNDEFINED_PREPARED_STATEMENT = "26000"


class Prepared:
    """One statement, run prepared on psycopg2 and as plain text elsewhere.

    ``types`` maps each ``%(name)s`` parameter of ``statement`` to its
    PostgreSQL type, in the order of the PREPARE's parameter list.
    """

    def __init__(self, statement: str, types: dict[str, str]) -> None:
        self.statement = statement
        names = list(types)
        unknown = set(_PARAM.findall(statement)) - set(names)
        if unknown:
            raise ValueError(f"no type given for parameters {sorted(unknown)}")
        digest = hashlib.sha1(statement.encode(), usedforsecurity=False).hexdigest()[:16]
        self.name = f"eventstore_{digest}"
        numbered = _PARAM.sub(lambda m: f"${names.index(m.group(1)) + 1}", statement)
        self.prepare = f"PREPARE {self.name} ({', '.join(types.values())}) AS {numbered}"
        args = ", ".join(f"CAST(%({n})s AS {t})" for n, t in types.items())
        self.execute = f"EXECUTE {self.name} ({args})"

    def run(self, conn: Connection, params: dict[str, Any], *, prepare: bool) -> CursorResult[Any]:
        """Execute with ``params``: prepared when asked and on psycopg2, else as text."""
        if not prepare or conn.dialect.driver != "psycopg2":
            return conn.exec_driver_sql(self.statement, params)
        info = conn.connection.info
        prepared: set[str] = info.setdefault(_INFO_KEY, set())
        if self.name not in prepared:
            # Its own round trip, once per connection: marked only once it exists.
            conn.exec_driver_sql(self.prepare)
            prepared.add(self.name)
        try:
            return conn.exec_driver_sql(self.execute, params)
        except DBAPIError as error:
            # Deallocated behind our back (DISCARD ALL, DEALLOCATE): prepare it
            # again and retry -- only outside a transaction, where the failed
            # EXECUTE left nothing to roll back.
            if getattr(error.orig, "pgcode", None) != _UNDEFINED_PREPARED_STATEMENT:
                raise
            prepared.discard(self.name)
            if not conn.connection.dbapi_connection.autocommit:  # type: ignore[union-attr]
                raise
            conn.exec_driver_sql(self.prepare)
            prepared.add(self.name)
            return conn.exec_driver_sql(self.execute, params)
