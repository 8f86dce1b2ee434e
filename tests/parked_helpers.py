"""Parking events directly in storage, and listening for the parked-events channel.

The subscription runner parks events when user code keeps failing; these
helpers park them with ``storage.parked.park`` instead, so that listing,
replay requests and discards can be tested on their own.
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2 import sql as pgsql
from sqlalchemy.engine import URL

from sqlalchemy_eventstore import ALL_STREAM, EventStore
from sqlalchemy_eventstore.storage.parked import ParkRow, park
from sqlalchemy_eventstore.storage.subscriptions import subscribe


def subscription_id(store: EventStore, name: str, stream_uuid: str = ALL_STREAM) -> int:
    """The subscription's id; its row is created (at checkpoint 0) when missing."""
    with store.engine.begin() as conn:
        return subscribe(conn, store.schema, stream_uuid, name, 0).subscription_id


def park_numbers(
    store: EventStore,
    name: str,
    numbers: Sequence[int],
    *,
    stream_uuid: str = ALL_STREAM,
    reason: str = "ValueError: boom",
    partition_key: str | None = None,
) -> int:
    """Park the events at ``numbers`` of the subscribed stream; the subscription id.

    Event ids are read in SQL, so that events the serializer cannot read park too.
    """
    with store.engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT se.stream_version, CAST(se.event_id AS text) "
            f'FROM "{store.schema}".stream_events se '
            f'JOIN "{store.schema}".streams s ON s.stream_id = se.stream_id '
            "WHERE s.stream_uuid = %(stream_uuid)s",
            {"stream_uuid": stream_uuid},
        ).all()
    by_number = {int(row[0]): str(row[1]) for row in found}
    rows = [ParkRow(n, by_number[n], reason, partition_key) for n in numbers]
    sub_id = subscription_id(store, name, stream_uuid)
    with store.engine.begin() as conn:
        park(conn, store.schema, sub_id, rows)
    return sub_id


def parked_rows(store: EventStore) -> list[tuple[Any, ...]]:
    """Every parked_events row: (subscription_id, event_number, reason, replay_requested)."""
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT subscription_id, event_number, reason, replay_requested "
            f'FROM "{store.schema}".parked_events ORDER BY 1, 2'
        ).all()
    return [tuple(row) for row in rows]


class ChannelListener:
    """A raw psycopg2 connection LISTENing on one channel (a single quoted identifier)."""

    def __init__(self, database_url: URL, channel: str) -> None:
        self.channel = channel
        params = database_url.translate_connect_args(username="user", database="dbname")
        params.update(database_url.query)
        self.conn = psycopg2.connect(**params)
        self.conn.autocommit = True
        with self.conn.cursor() as cursor:
            cursor.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))

    def __enter__(self) -> ChannelListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def received(self, wait: float = 1.0) -> list[str]:
        """The payloads that arrive within ``wait`` seconds (all of them, not just one)."""
        payloads: list[str] = []
        if select.select([self.conn], [], [], wait)[0]:
            self.conn.poll()
        while True:
            while self.conn.notifies:
                note = self.conn.notifies.pop(0)
                assert note.channel == self.channel
                payloads.append(note.payload)
            if not select.select([self.conn], [], [], 0.2)[0]:
                return payloads
            self.conn.poll()
