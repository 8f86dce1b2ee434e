"""Storage operations as I/O-free generators, and the sync runner that drives them.

Every storage operation (append, link, delete, reads, stream info, snapshots)
is written once, as a generator: it yields a :class:`Query` each time it needs
the database and receives that query's rows back (a sequence of tuples; empty
for a statement returning none). Which statement, which parameters, how rows
are read, when to retry and which error to raise are all decided there; a
runner only executes. :func:`run` drives an operation on a sync ``Connection``;
``sqlalchemy_eventstore.asyncio`` drives the same generators on an
``AsyncConnection``. So both APIs share one source of SQL and of rules.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from .connection import translate_db_error
from .prepared import Prepared

__all__ = ["Op", "Query", "Rows", "numeric_dollar", "run", "translated"]

T = TypeVar("T")

#: A query's rows: the driver's tuples (or rows indexable like them).
Rows = Sequence[Any]


@dataclass(frozen=True, slots=True)
class Query:
    """One statement of an operation, with ``%(name)s`` parameters.

    ``translate``: a unique or foreign-key violation of the event tables
    becomes DuplicateEventError / EventNotFoundError (see
    :func:`~.connection.translate_db_error`).
    """

    sql: str | Prepared
    params: Mapping[str, Any] | None = None
    translate: bool = False

    @property
    def text(self) -> str:
        """The statement's text (a Prepared one's plain form)."""
        return self.sql.statement if isinstance(self.sql, Prepared) else self.sql


#: A storage operation: yields queries, receives their rows, returns its result.
Op = Generator[Query, Rows, T]


def translated(error: DBAPIError, query: Query) -> Exception:
    """The exception to raise for ``error`` met by ``query``."""
    if query.translate:
        domain = translate_db_error(error)
        if domain is not None:
            domain.__cause__ = error
            return domain
    return error


def run(conn: Connection, op: Op[T], *, prepare: bool = False) -> T:
    """Drive ``op`` on a sync connection; ``prepare``: psycopg2 prepared statements."""
    try:
        query = next(op)
        while True:
            try:
                if isinstance(query.sql, Prepared):
                    result = query.sql.run(conn, dict(query.params or {}), prepare=prepare)
                elif query.params is None:
                    result = conn.exec_driver_sql(query.sql)
                else:
                    result = conn.exec_driver_sql(query.sql, dict(query.params))
            except DBAPIError as error:
                problem = translated(error, query)
                if problem is error:
                    raise
                raise problem from error
            if result.returns_rows:
                # The driver's own tuples: no Row object per row.
                rows: Rows = result.cursor.fetchall()
                result.close()
            else:
                rows = ()
            query = op.send(rows)
    except StopIteration as stop:
        value: T = stop.value
        return value


_PARAM = re.compile(r"%\((\w+)\)s|%%")


@dataclass(frozen=True, slots=True)
class Numbered:
    """A ``%(name)s`` statement rendered for a ``$1`` paramstyle (asyncpg)."""

    sql: str
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any] | None) -> tuple[Any, ...]:
        if params is None:
            return ()
        return tuple(params[name] for name in self.names)


def numeric_dollar(sql: str) -> Numbered:
    """``sql`` with ``%(name)s`` as ``$n`` (one number per name) and ``%%`` as ``%``."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Numbered(_PARAM.sub(number, sql), tuple(names))
