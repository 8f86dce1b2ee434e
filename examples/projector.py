"""A read model kept by a subscription, in the same transaction as its checkpoint.

    python examples/projector.py          # DATABASE_URL, or a throwaway PostgreSQL

The handler of a persistent subscription to ``$all`` updates a balances table
and the projector's own checkpoint row in one Session transaction, and skips
events at or below that checkpoint. Delivery is at-least-once (a crash between
the commit and the subscription's ack redelivers the batch), so the skip is
what makes redelivery harmless -- the demo forces one to show it.
"""

from __future__ import annotations

import threading
import uuid

from _db import database_url
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sqlalchemy_eventstore import ALL_STREAM, EventData, EventStore, RecordedEvent

SCHEMA = "projector_example"
PROJECTOR = "balances"


class Base(DeclarativeBase):
    pass


class Balance(Base):
    """The read model: one row per account."""

    __tablename__ = "balances"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    account_id: Mapped[str] = mapped_column(String, primary_key=True)
    balance: Mapped[int] = mapped_column(default=0)
    deposits: Mapped[int] = mapped_column(default=0)


class ProjectorCheckpoint(Base):
    """The last $all event number each projector has applied."""

    __tablename__ = "projector_checkpoints"
    __table_args__ = {"schema": SCHEMA}  # noqa: RUF012

    name: Mapped[str] = mapped_column(String, primary_key=True)
    position: Mapped[int] = mapped_column(default=0)


class BalanceProjector:
    """The subscription handler: applies a batch of events in one transaction."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.applied = 0
        self.skipped = 0
        self.position = 0
        self.changed = threading.Condition()

    def __call__(self, batch: list[RecordedEvent]) -> None:
        with Session(self.store.engine) as session, session.begin():
            # FOR UPDATE: a second projector process (say, during a deploy)
            # waits here instead of applying the same events concurrently.
            checkpoint = session.get(ProjectorCheckpoint, PROJECTOR, with_for_update=True)
            if checkpoint is None:
                checkpoint = ProjectorCheckpoint(name=PROJECTOR, position=0)
                session.add(checkpoint)
            applied = skipped = 0
            for event in batch:
                if event.event_number <= checkpoint.position:
                    skipped += 1  # applied before: a redelivery
                    continue
                self.apply(session, event)
                checkpoint.position = event.event_number
                applied += 1
            position = checkpoint.position
        # Committed: the read model and its checkpoint moved together.
        with self.changed:
            self.applied += applied
            self.skipped += skipped
            self.position = position
            self.changed.notify_all()

    @staticmethod
    def apply(session: Session, event: RecordedEvent) -> None:
        row = session.get(Balance, event.stream_uuid)
        if row is None:
            row = Balance(account_id=event.stream_uuid, balance=0, deposits=0)
            session.add(row)
        if event.event_type == "MoneyDeposited":
            row.balance += event.data["amount"]
            row.deposits += 1
        elif event.event_type == "MoneyWithdrawn":
            row.balance -= event.data["amount"]

    def wait_for(self, position: int, timeout: float = 20.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.position >= position, timeout)


def main() -> None:
    with EventStore(database_url(), schema=SCHEMA) as store:
        store.init()
        Base.metadata.create_all(store.engine)
        run = uuid.uuid4().hex[:6]
        accounts = {name: f"{name}-{run}" for name in ("alice", "bob", "carol")}
        for name, amounts in (("alice", [100, -30]), ("bob", [50]), ("carol", [10, 20, -5])):
            store.append_to_stream(
                accounts[name],
                0,
                [
                    EventData("MoneyDeposited" if a > 0 else "MoneyWithdrawn", {"amount": abs(a)})
                    for a in amounts
                ],
            )
        last = store.stream_info(ALL_STREAM).stream_version

        projector = BalanceProjector(store)
        subscription = store.subscribe_to_all_streams(PROJECTOR, handler=projector, buffer_size=10)
        if not projector.wait_for(last):
            raise SystemExit("the projector did not catch up")
        print(f"projected up to event {projector.position}: applied {projector.applied}")

        # Forget the subscription's own checkpoint: the store redelivers all of
        # $all from the origin, and the projector's checkpoint skips every event.
        subscription.unsubscribe()
        store.delete_all_streams_subscription(PROJECTOR)
        before = projector.applied
        projector.skipped = 0
        store.subscribe_to_all_streams(PROJECTOR, handler=projector, buffer_size=10)
        with projector.changed:
            redelivered = projector.changed.wait_for(lambda: projector.skipped >= last, 20)
        if not redelivered:
            raise SystemExit("the subscription did not redeliver $all from the origin")
        print(f"redelivered {projector.skipped} events: applied {projector.applied - before}")

        store.append_to_stream(accounts["bob"], 1, [EventData("MoneyDeposited", {"amount": 7})])
        if not projector.wait_for(last + 1):
            raise SystemExit("the projector missed a live event")
        print(f"live event {projector.position} applied")

        with Session(store.engine) as session:
            rows = session.scalars(
                select(Balance).where(Balance.account_id.in_(accounts.values()))
            ).all()
            print("read model:")
            for row in sorted(rows, key=lambda r: r.account_id):
                name = row.account_id.removesuffix(f"-{run}")
                print(f"  {name}: balance {row.balance}, {row.deposits} deposits")


if __name__ == "__main__":
    main()
