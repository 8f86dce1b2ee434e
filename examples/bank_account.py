"""An aggregate rebuilt from its stream, with a snapshot every few events.

    python examples/bank_account.py       # DATABASE_URL, or a throwaway PostgreSQL

Loading reads the latest snapshot (if any) and applies only the events after
it; saving appends with the version it loaded (optimistic concurrency) and
records a new snapshot each time the version crosses a multiple of
SNAPSHOT_EVERY.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from _db import database_url

from sqlalchemy_eventstore import EventData, EventStore, RecordedEvent, SnapshotData
from sqlalchemy_eventstore.errors import SnapshotNotFoundError, WrongExpectedVersionError

SNAPSHOT_EVERY = 5


class InsufficientFunds(Exception):
    pass


@dataclass
class BankAccount:
    """The aggregate: state changes only by applying events."""

    account_id: str
    owner: str = ""
    balance: int = 0
    version: int = 0  # the stream version this state reflects
    pending: list[EventData] = field(default_factory=list)

    # -- commands: validate, then record an event ----------------------------------

    def open(self, owner: str) -> None:
        self._record("AccountOpened", {"owner": owner})

    def deposit(self, amount: int) -> None:
        self._record("MoneyDeposited", {"amount": amount})

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFunds(f"balance {self.balance} < {amount}")
        self._record("MoneyWithdrawn", {"amount": amount})

    def _record(self, event_type: str, data: dict[str, object]) -> None:
        event = EventData(event_type, data)
        self._apply(event_type, data)
        self.pending.append(event)

    # -- events: how state changes -------------------------------------------------

    def _apply(self, event_type: str, data: dict[str, object]) -> None:
        if event_type == "AccountOpened":
            self.owner = str(data["owner"])
        elif event_type == "MoneyDeposited":
            self.balance += int(str(data["amount"]))
        elif event_type == "MoneyWithdrawn":
            self.balance -= int(str(data["amount"]))

    def replay(self, event: RecordedEvent) -> None:
        self._apply(event.event_type, event.data)
        self.version = event.stream_version


class Accounts:
    """The repository: load from snapshot + later events, save with a version check."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def load(self, account_id: str, *, use_snapshot: bool = True) -> tuple[BankAccount, int]:
        """The account, and how many events were replayed to rebuild it."""
        account = BankAccount(account_id)
        if use_snapshot:
            try:
                snapshot = self.store.read_snapshot(account_id)
            except SnapshotNotFoundError:
                pass
            else:
                account.owner = snapshot.data["owner"]
                account.balance = snapshot.data["balance"]
                account.version = snapshot.source_version
        replayed = 0
        for event in self.store.stream_forward(account_id, account.version + 1):
            account.replay(event)
            replayed += 1
        return account, replayed

    def save(self, account: BankAccount) -> bool:
        """Append the pending events; True when it recorded a snapshot too."""
        if not account.pending:
            return False
        # Raises WrongExpectedVersionError when someone appended since we loaded.
        self.store.append_to_stream(account.account_id, account.version, account.pending)
        before, account.version = account.version, account.version + len(account.pending)
        account.pending = []
        if account.version // SNAPSHOT_EVERY > before // SNAPSHOT_EVERY:
            self.store.record_snapshot(
                SnapshotData(
                    source_uuid=account.account_id,
                    source_version=account.version,
                    source_type="BankAccount",
                    data={"owner": account.owner, "balance": account.balance},
                )
            )
            return True
        return False


def main() -> None:
    with EventStore(database_url(), schema="bank_account_example") as store:
        store.init()
        accounts = Accounts(store)
        account_id = f"account-{uuid.uuid4()}"

        account = BankAccount(account_id)
        account.open("Ada")
        accounts.save(account)
        for amount in (100, 50, -30, 20, -60, 40, 10, -25, 5, 15, -10):
            account, _ = accounts.load(account_id)
            if amount > 0:
                account.deposit(amount)
            else:
                account.withdraw(-amount)
            snapshot = accounts.save(account)
            print(
                f"{'deposit ' if amount > 0 else 'withdraw'} {abs(amount):>3}: balance "
                f"{account.balance} (version {account.version}){' + snapshot' if snapshot else ''}"
            )

        account, replayed = accounts.load(account_id)
        print(
            f"loaded from snapshot at version {account.version - replayed} "
            f"+ {replayed} later events: balance {account.balance}"
        )
        full, replayed_all = accounts.load(account_id, use_snapshot=False)
        print(f"full replay of {replayed_all} events: balance {full.balance}")
        if full.balance != account.balance or replayed == replayed_all:
            raise SystemExit("the snapshot should give the full replay's balance, reading less")

        try:
            account.withdraw(account.balance + 1)
        except InsufficientFunds as error:
            print(f"rejected: {error}")
        else:
            raise SystemExit("an overdraft should have been rejected")

        # Two writers load version N; the second save is rejected.
        first, _ = accounts.load(account_id)
        second, _ = accounts.load(account_id)
        first.deposit(1)
        accounts.save(first)
        second.withdraw(1)
        try:
            accounts.save(second)
        except WrongExpectedVersionError:
            print(f"concurrent save rejected: expected version {second.version} is stale")
        else:
            raise SystemExit("the second concurrent save should have been rejected")
        final, _ = accounts.load(account_id)
        print(f"final balance {final.balance} at version {final.version}")


if __name__ == "__main__":
    main()
