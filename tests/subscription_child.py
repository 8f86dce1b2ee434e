"""A subscriber process for test_subscriptions_multiprocess.py.

Started with the ``spawn`` method, it builds its own EventStore from a URL
string, runs one named $all subscription in mailbox mode and reports to the
parent through its own queue: ``("started", pid)`` once subscribe() returned,
``("subscribed", pid)`` once it holds the subscription, ``("events", pid,
[event_number, ...])`` per batch and ``("closed", pid)`` after a clean stop.
It acknowledges only event numbers up to ``ack_limit.value`` (read per batch),
so the parent decides what is left unacknowledged when it kills a holder.
With ``api="async"`` the child runs an AsyncEventStore (asyncpg) instead, on
the same schema: the two APIs share the subscription's lock.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sqlalchemy.engine import make_url

from sqlalchemy_eventstore import EventStore
from sqlalchemy_eventstore.asyncio import AsyncEventStore


def run(
    url: str, schema: str, name: str, reports: Any, ack_limit: Any, stop: Any, api: str = "sync"
) -> None:
    pid = os.getpid()
    if api == "async":
        async_url = make_url(url).set(drivername="postgresql+asyncpg")
        asyncio.run(run_async(async_url, schema, name, reports, ack_limit, stop))
        reports.put(("closed", pid))
        return
    store = EventStore(url, schema=schema, subscription_retry_interval=0.2, name=f"child-{pid}")
    try:
        sub = store.subscribe_to_all_streams(name, buffer_size=100)
        reports.put(("started", pid))
        announced = False
        while not stop.is_set():
            if not announced and sub.subscribed:
                reports.put(("subscribed", pid))
                announced = True
            try:
                batch = sub.receive(timeout=0.05)
            except TimeoutError:
                continue
            received = [event.event_number for event in batch]
            reports.put(("events", pid, received))
            limit = ack_limit.value
            acked = [number for number in received if number <= limit]
            if acked:
                sub.ack(max(acked))
    finally:
        store.close()
    reports.put(("closed", pid))


async def run_async(
    url: Any, schema: str, name: str, reports: Any, ack_limit: Any, stop: Any
) -> None:
    """:func:`run` on an AsyncEventStore."""
    pid = os.getpid()
    store = AsyncEventStore(
        url, schema=schema, subscription_retry_interval=0.2, name=f"child-{pid}"
    )
    try:
        sub = await store.subscribe_to_all_streams(name, buffer_size=100)
        reports.put(("started", pid))
        announced = False
        while not stop.is_set():
            if not announced and sub.subscribed:
                reports.put(("subscribed", pid))
                announced = True
            try:
                batch = await sub.receive(timeout=0.05)
            except TimeoutError:
                continue
            received = [event.event_number for event in batch]
            reports.put(("events", pid, received))
            limit = ack_limit.value
            acked = [number for number in received if number <= limit]
            if acked:
                await sub.ack(max(acked))
    finally:
        await store.close()
