"""A Flask app whose views write rows and events in one transaction.

    python examples/flask_app.py          # a few requests with the test client, printed
    python examples/flask_app.py serve    # or serve it: curl -XPOST localhost:5000/orders ...

Either runs on DATABASE_URL, or a throwaway PostgreSQL. The ``Order`` table
and the event store share the ``flask_example`` Postgres schema and
Flask-SQLAlchemy's engine; ``db.session.commit()`` makes both durable, and an
error before it discards both.
"""

from __future__ import annotations

import sys
import threading
import uuid
from typing import Any

from _db import database_url
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqlalchemy_eventstore import NO_STREAM, EventData, RecordedEvent
from sqlalchemy_eventstore.errors import StreamNotFoundError
from sqlalchemy_eventstore.flask import FlaskEventStore

SCHEMA = "flask_example"


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
events = FlaskEventStore(db=db)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "orders"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012 - SQLAlchemy reads it once

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(unique=True)
    total: Mapped[int]


class PaymentDeclined(Exception):
    pass


# A persistent subscription, started at the first request: it runs in an app
# context on a worker thread, and is stopped (checkpoint saved) at exit.
placed: list[str] = []
placed_seen = threading.Condition()


@events.handler("order-notifier")
def notify(batch: list[RecordedEvent]) -> None:
    with placed_seen:
        placed.extend(e.data["reference"] for e in batch if e.event_type == "OrderPlaced")
        placed_seen.notify_all()


def place_order(body: dict[str, Any]) -> Order:
    order = Order(reference=body["reference"], total=body["total"])
    db.session.add(order)
    # Joins db.session's transaction: nothing is visible until the commit.
    events.append_to_stream(
        f"order-{order.reference}",
        NO_STREAM,
        [EventData("OrderPlaced", {"reference": order.reference, "total": order.total})],
    )
    return order


def create_app(url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        EVENTSTORE_SCHEMA=SCHEMA,
        EVENTSTORE_INIT=True,  # create the event store's schema and tables at start-up
    )
    db.init_app(app)
    events.init_app(app)
    with app.app_context():
        db.create_all()

    @app.post("/orders")
    def create_order() -> tuple[dict[str, Any], int]:
        order = place_order(request.get_json())
        db.session.commit()  # the row and the event together
        return {"reference": order.reference, "total": order.total}, 201

    @app.post("/orders/failing")
    def create_order_then_fail() -> tuple[dict[str, Any], int]:
        place_order(request.get_json())
        raise PaymentDeclined("card declined")  # before the commit

    @app.errorhandler(PaymentDeclined)
    def declined(error: PaymentDeclined) -> tuple[dict[str, Any], int]:
        db.session.rollback()  # the row and the event are both discarded
        return {"error": str(error)}, 402

    @app.get("/orders")
    def list_orders() -> dict[str, Any]:
        orders = db.session.scalars(db.select(Order).order_by(Order.id)).all()
        return {"orders": [o.reference for o in orders]}

    @app.get("/orders/<reference>/events")
    def order_events(reference: str) -> tuple[dict[str, Any], int]:
        try:
            stream = events.read_stream_forward(f"order-{reference}")
        except StreamNotFoundError:
            return {"error": "no such order"}, 404
        return {"events": [{"type": e.event_type, "data": e.data} for e in stream]}, 200

    return app


def demo(app: Flask) -> None:
    run = uuid.uuid4().hex[:6]  # fresh references, so the demo can run again
    good, bad = f"A-{run}", f"B-{run}"
    client = app.test_client()

    def show(method: str, path: str, body: dict[str, Any] | None = None) -> int:
        response = client.open(path, method=method, json=body)
        print(f"{method} {path.replace(run, '<run>')} -> {response.status_code}", end=" ")
        print(str(response.get_json()).replace(run, "<run>"))
        return response.status_code

    statuses = [
        show("POST", "/orders", {"reference": good, "total": 30}),
        show("POST", "/orders/failing", {"reference": bad, "total": 99}),
        show("GET", f"/orders/{good}/events"),
        show("GET", f"/orders/{bad}/events"),
    ]
    with app.app_context():
        mine = list(
            db.session.scalars(db.select(Order.reference).where(Order.reference.like(f"%{run}")))
        )
        print("orders of this run:", [r.replace(run, "<run>") for r in mine])
    if statuses != [201, 402, 200, 404] or mine != [good]:
        raise SystemExit("the committed order and its event should exist, the failed one not")
    with placed_seen:
        placed_seen.wait_for(lambda: good in placed, timeout=10)
        seen = [r for r in placed if run in r]
        print("the subscription saw:", [r.replace(run, "<run>") for r in seen])
    events.close()
    # Exit non-zero unless the demo showed what it is about.
    if seen != [good]:
        raise SystemExit(f"the subscription should have seen exactly {good!r}, saw {seen}")


if __name__ == "__main__":
    flask_app = create_app(database_url())
    if sys.argv[1:] == ["serve"]:
        flask_app.run()
    else:
        demo(flask_app)
