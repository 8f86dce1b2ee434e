"""Append events to a stream, read them back, and read the global $all stream.

python examples/quickstart.py        # DATABASE_URL, or a throwaway PostgreSQL
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from _db import database_url

from sqlalchemy_eventstore import EventData, EventStore


@dataclass
class AccountOpened:
    account_id: str
    owner: str


def main() -> None:
    with EventStore(database_url(), schema="quickstart") as store:
        store.init()  # creates the schema and tables once; a no-op afterwards

        stream = f"account-{uuid.uuid4()}"
        store.append_to_stream(
            stream,
            0,  # expected version: 0 means "a new stream"
            [
                EventData(None, AccountOpened(stream, "Ada")),  # type from the class
                EventData("MoneyDeposited", {"amount": 100}, metadata={"user": "ada"}),
            ],
        )

        events = store.read_stream_forward(stream)
        for event in events:
            print(f"{event.stream_uuid} #{event.event_number} {event.event_type}: {event.data}")
        if [e.event_number for e in events] != [1, 2]:
            raise SystemExit("the stream should hold the two events just appended")

        info = store.stream_info(stream)
        print(f"stream version {info.stream_version}, status {info.status}")
        last = store.read_all_streams_backward(count=1)[0]
        print(f"$all now holds {last.event_number} events")


if __name__ == "__main__":
    main()
