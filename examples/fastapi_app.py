"""A FastAPI app: rows and events in the request's transaction, a projection fed by a subscription.

    python examples/fastapi_app.py        # a few requests with the test client, printed
    python examples/fastapi_app.py serve  # or serve it (needs uvicorn): curl -XPOST ...

Either runs on DATABASE_URL (any postgresql:// URL; the app uses asyncpg), or a
throwaway PostgreSQL. ``POST /orders`` inserts an ``Order`` row and appends
its ``OrderPlaced`` event in one ``AsyncSession`` transaction: both commit,
or neither. A persistent subscription to ``$all`` with an async handler keeps
the ``order_totals`` projection, together with its own checkpoint row in one
transaction, so a redelivered event is skipped.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from _db import database_url
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import String, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_eventstore import NO_STREAM, EventData, RecordedEvent
from sqlalchemy_eventstore.asyncio import AsyncEventStore
from sqlalchemy_eventstore.errors import StreamNotFoundError

SCHEMA = "fastapi_example"
PROJECTOR = "order-totals"


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    reference: Mapped[str] = mapped_column(String, primary_key=True)
    total: Mapped[int]


class OrderTotals(Base):
    """The projection: one row per projector, with the last $all event it applied."""

    __tablename__ = "order_totals"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    projector: Mapped[str] = mapped_column(String, primary_key=True)
    orders: Mapped[int] = mapped_column(default=0)
    revenue: Mapped[int] = mapped_column(default=0)
    position: Mapped[int] = mapped_column(default=0)


class OrderIn(BaseModel):
    reference: str
    total: int
    card_declined: bool = False


def create_app(url: str) -> FastAPI:
    engine: AsyncEngine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    store = AsyncEventStore(engine, schema=SCHEMA)

    async def project(batch: list[RecordedEvent]) -> None:
        """The subscription's async handler: the projection and its position in one transaction."""
        async with AsyncSession(engine) as session, session.begin():
            row = await session.get(OrderTotals, PROJECTOR, with_for_update=True)
            if row is None:
                row = OrderTotals(projector=PROJECTOR, orders=0, revenue=0, position=0)
                session.add(row)
            for event in batch:
                if event.event_number <= row.position:
                    continue  # applied before: a redelivery
                if event.event_type == "OrderPlaced":
                    row.orders += 1
                    row.revenue += event.data["total"]
                row.position = event.event_number

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await store.init()
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await store.subscribe_to_all_streams(PROJECTOR, handler=project, buffer_size=100)
        yield
        await store.close()  # the subscription's checkpoint is written
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/orders", status_code=201)
    async def place_order(order: OrderIn) -> dict[str, Any]:
        async with AsyncSession(engine) as session:
            try:
                async with session.begin():  # commits both, or rolls both back
                    session.add(Order(reference=order.reference, total=order.total))
                    await store.append_to_stream(
                        f"order-{order.reference}",
                        NO_STREAM,
                        [
                            EventData(
                                "OrderPlaced", {"reference": order.reference, "total": order.total}
                            )
                        ],
                        conn=session,
                    )
                    if order.card_declined:
                        raise PaymentFailed
            except PaymentFailed:
                raise HTTPException(402, "card declined") from None
        return {"reference": order.reference, "total": order.total}

    @app.get("/orders/{reference}/events")
    async def order_events(reference: str) -> dict[str, Any]:
        try:
            events = await store.read_stream_forward(f"order-{reference}")
        except StreamNotFoundError:
            raise HTTPException(404, "no such order") from None
        return {"events": [{"type": e.event_type, "data": e.data} for e in events]}

    @app.get("/totals")
    async def totals() -> dict[str, Any]:
        async with AsyncSession(engine) as session:
            row = await session.get(OrderTotals, PROJECTOR)
            return {"orders": row.orders if row else 0, "revenue": row.revenue if row else 0}

    @app.get("/orders")
    async def orders() -> list[str]:
        async with AsyncSession(engine) as session:
            return list(await session.scalars(select(Order.reference)))

    return app


class PaymentFailed(Exception):
    """Raised inside the transaction: the order row and its event are rolled back."""


def demo(app: FastAPI) -> None:
    from fastapi.testclient import TestClient

    run = uuid.uuid4().hex[:6]
    good, failed = f"A-{run}", f"B-{run}"
    with TestClient(app) as client:  # runs the lifespan: store, tables, subscription
        before = client.get("/totals").json()  # earlier runs on this database count too

        def call(method: str, path: str, body: Any = None) -> Any:
            response = client.request(method, path, json=body)
            print(f"{method} {path.replace(run, '<run>')} -> {response.status_code}", end=" ")
            print(str(response.json()).replace(run, "<run>"))
            return response

        statuses = [
            call("POST", "/orders", {"reference": good, "total": 30}).status_code,
            call(
                "POST", "/orders", {"reference": failed, "total": 5, "card_declined": True}
            ).status_code,
            call("GET", f"/orders/{good}/events").status_code,
            call("GET", f"/orders/{failed}/events").status_code,
        ]
        mine = [r for r in client.get("/orders").json() if r.endswith(run)]
        print("orders of this run:", [r.replace(run, "<run>") for r in mine])
        # The projection follows the subscription: wait until it has the order.
        deadline = time.monotonic() + 20
        totals = client.get("/totals").json()
        while totals["orders"] <= before["orders"] and time.monotonic() < deadline:
            time.sleep(0.05)
            totals = client.get("/totals").json()
        added = {key: totals[key] - before[key] for key in totals}
        print("the projection added:", added)
    # Exit non-zero unless the demo showed what it is about.
    if statuses != [201, 402, 200, 404] or mine != [good]:
        raise SystemExit("the committed order and its event should exist, the failed one not")
    if added != {"orders": 1, "revenue": 30}:
        raise SystemExit("the projection did not follow the committed order")


def main() -> None:
    app = create_app(database_url())
    if sys.argv[1:] == ["serve"]:
        import uvicorn  # not a dependency of the package

        uvicorn.run(app)
        return
    demo(app)


if __name__ == "__main__":
    main()
