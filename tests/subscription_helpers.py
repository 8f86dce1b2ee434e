"""Shared pieces of the subscription tests.

Everything waits by polling against a deadline (``WAIT``) rather than by
sleeping a fixed time; only "nothing more arrives" is a short, fixed quiet
period (``QUIET``), and it can only make a test pass too often, never fail
one that is right.

Two subscriber modes run the same scenarios:

* ``MailboxSubscriber`` -- no handler: ``Subscription.receive``/``ack``;
* ``HandlerSubscriber`` -- ``handler=``: each batch is handed to the test
  through a queue and the handler blocks until the test "acks" it, so the
  store's automatic ack happens when the test says so. ``abandon()`` makes
  every held or later call raise (the batch is then not acknowledged), which
  is how a handler subscriber leaves events unacknowledged.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData, EventStore, RecordedEvent
from sqlalchemy_eventstore.subscriptions.handle import Subscription

WAIT = 10.0  # generous deadline for anything that must happen
QUIET = 0.4  # how long "nothing more arrives" is watched


def new_id() -> str:
    return str(uuid.uuid4())


def eventually(predicate: Callable[[], Any], timeout: float = WAIT) -> bool:
    """Poll ``predicate`` until it is truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def make_events(count: int, first: int = 1) -> list[EventData]:
    """``count`` events whose data carries a running number ``event`` from ``first``."""
    return [
        EventData(
            "Tick",
            {"event": first + i},
            metadata={"user": "someuser@example.com", "n": first + i},
            causation_id=new_id(),
            correlation_id=new_id(),
        )
        for i in range(count)
    ]


def append(
    store: EventStore, stream_uuid: str, count: int, first: int = 1, expected: Any = ANY_VERSION
) -> list[EventData]:
    events = make_events(count, first)
    store.append_to_stream(stream_uuid, expected, events)
    return events


def numbers(events: list[Any]) -> list[int]:
    return [e.event_number for e in events]


def pluck(events: list[Any], name: str) -> list[Any]:
    return [getattr(e, name) for e in events]


def assert_same_events(received: list[RecordedEvent], sent: list[EventData]) -> None:
    """The recorded events carry what was appended."""
    assert len(received) == len(sent)
    for field in ("event_type", "data", "metadata", "causation_id", "correlation_id"):
        assert pluck(received, field) == pluck(sent, field), field
    assert all(e.created_at is not None for e in received)


def checkpoint(engine: Engine, schema: str, name: str, stream_uuid: str = ALL_STREAM) -> Any:
    """The subscription row's ``last_seen`` (None when there is no row)."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                f'SELECT last_seen FROM "{schema}".subscriptions '
                "WHERE stream_uuid = :s AND subscription_name = :n"
            ),
            {"s": stream_uuid, "n": name},
        ).scalar()


def subscription_rows(engine: Engine, schema: str) -> list[tuple[str, str, int]]:
    with engine.connect() as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute(
                text(
                    "SELECT stream_uuid, subscription_name, last_seen "
                    f'FROM "{schema}".subscriptions ORDER BY subscription_id'
                )
            )
        ]


def collect(sub: Any, count: int, timeout: float = WAIT, *, ack: bool = False) -> list[list[Any]]:
    """Receive batches until they hold ``count`` events (or the deadline passes).

    ``sub`` is a ``Subscription`` in mailbox mode or one of the subscribers
    below. With ``ack`` every batch is acknowledged as it arrives.
    """
    batches: list[list[Any]] = []
    deadline = time.monotonic() + timeout
    while sum(len(b) for b in batches) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            batch = sub.receive(timeout=min(left, 0.25))
        except TimeoutError:
            continue
        batches.append(batch)
        if ack:
            sub.ack(batch)
    return batches


def flatten(batches: list[list[Any]]) -> list[Any]:
    return [item for batch in batches for item in batch]


def assert_quiet(sub: Any, quiet: float = QUIET) -> None:
    """Nothing more is delivered within the quiet period."""
    try:
        batch = sub.receive(timeout=quiet)
    except TimeoutError:
        return
    pytest.fail(f"unexpected batch: {batch!r}")


# -- the two subscriber modes -----------------------------------------------------------


class MailboxSubscriber:
    """A subscriber reading the returned ``Subscription`` as its mailbox."""

    mode = "mailbox"

    def __init__(self) -> None:
        self.sub: Subscription | None = None

    def subscribe(
        self, store: EventStore, stream_uuid: str, name: str, **options: Any
    ) -> MailboxSubscriber:
        self.sub = store.subscribe_to_stream(stream_uuid, name, **options)
        assert self.sub.wait_subscribed(WAIT)
        return self

    @property
    def subscription(self) -> Subscription:
        assert self.sub is not None
        return self.sub

    def receive(self, timeout: float = WAIT) -> list[Any]:
        return self.subscription.receive(timeout=timeout)

    def ack(self, events: Any) -> None:
        self.subscription.ack(events)

    def unsubscribe(self) -> None:
        self.subscription.unsubscribe()

    def abandon(self) -> None:
        """Nothing to release in mailbox mode."""


class HandlerAbandoned(Exception):
    """Raised by a held handler call the test gave up on: the batch stays unacked."""


class HandlerSubscriber:
    """A subscriber with ``handler=``: the test sees each call's batch and
    decides when the call returns (and so when the store acks it)."""

    mode = "handler"

    def __init__(self, *, hold: bool = True) -> None:
        self.sub: Subscription | None = None
        self.hold = hold
        self.calls = 0
        self._batches: queue.Queue[list[Any]] = queue.Queue()
        self._gates: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._abandoned = threading.Event()

    def handler(self, events: list[Any]) -> None:
        if self._abandoned.is_set():
            raise HandlerAbandoned("the test abandoned this subscriber")
        gate = threading.Event()
        with self._lock:
            self.calls += 1
            self._gates[id(events)] = gate
        self._batches.put(events)
        if not self.hold:
            return
        while not gate.wait(0.02):
            if self._abandoned.is_set():
                raise HandlerAbandoned("the test abandoned this subscriber")

    def subscribe(
        self, store: EventStore, stream_uuid: str, name: str, **options: Any
    ) -> HandlerSubscriber:
        self.sub = store.subscribe_to_stream(stream_uuid, name, handler=self.handler, **options)
        assert self.sub.wait_subscribed(WAIT)
        return self

    @property
    def subscription(self) -> Subscription:
        assert self.sub is not None
        return self.sub

    def receive(self, timeout: float = WAIT) -> list[Any]:
        try:
            return self._batches.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no batch within {timeout} s") from None

    def ack(self, events: Any) -> None:
        """Let the handler call that received ``events`` (a whole batch) return."""
        assert isinstance(events, list), "a handler acknowledges whole batches"
        with self._lock:
            gate = self._gates.pop(id(events))
        gate.set()

    def unsubscribe(self) -> None:
        self.abandon()
        self.subscription.unsubscribe()

    def abandon(self) -> None:
        """Every held or later handler call raises: its batch is not acknowledged."""
        self._abandoned.set()


Subscriber = MailboxSubscriber | HandlerSubscriber
MODES: dict[str, Callable[[], Subscriber]] = {
    "mailbox": MailboxSubscriber,
    "handler": HandlerSubscriber,
}


# -- the contract every persistent subscription honours ------------------------------------


class StreamSubscriptionContract:
    """The reference's ``StreamSubscriptionTestCase``, through the public API.

    Subclasses set ``mode`` ("mailbox" or "handler") and ``all_streams``
    (subscribe to ``$all``, with every append going to a fresh stream, or to
    one stream after three events were appended to another one, so that its
    event numbers differ from the global ones). Event numbers seen by the
    subscriber are 1, 2, 3, ... either way.
    """

    mode = "mailbox"
    all_streams = False
    name = "test_subscription"

    @pytest.fixture
    def es(self, make_store: Callable[..., EventStore], driver: str) -> EventStore:
        store = make_store(driver=driver)  # the contract holds on psycopg2 and psycopg
        self.stream_uuid = new_id()
        if not self.all_streams:
            append(store, new_id(), 3)  # another stream first
        return store

    @pytest.fixture
    def subscribers(self, es: EventStore) -> Iterator[list[Subscriber]]:
        made: list[Subscriber] = []
        yield made
        for subscriber in made:  # before the store closes: release held handlers
            subscriber.abandon()

    # -- hooks ------------------------------------------------------------------------

    @property
    def target(self) -> str:
        return ALL_STREAM if self.all_streams else self.stream_uuid

    def append_to_target(self, es: EventStore, count: int, first: int = 1) -> list[EventData]:
        stream = new_id() if self.all_streams else self.stream_uuid
        return append(es, stream, count, first)

    def subscribe(
        self, es: EventStore, subscribers: list[Subscriber], **options: Any
    ) -> Subscriber:
        subscriber = MODES[self.mode]()
        subscribers.append(subscriber)
        return subscriber.subscribe(es, self.target, self.name, **options)

    def stored_checkpoint(self, es: EventStore, admin_engine: Engine) -> Any:
        return checkpoint(admin_engine, es.schema, self.name, self.target)

    # -- subscribe ------------------------------------------------------------------

    def test_subscribes_from_origin_creating_its_checkpoint(self, es, subscribers, admin_engine):
        subscriber = self.subscribe(es, subscribers)
        assert subscriber.subscription.subscribed
        assert self.stored_checkpoint(es, admin_engine) == 0
        assert_quiet(subscriber)  # caught up: nothing stored yet

    def test_start_from_an_event_number_skips_the_earlier_events(
        self, es, subscribers, admin_engine
    ):
        sent = self.append_to_target(es, 3)
        subscriber = self.subscribe(es, subscribers, start_from=2)
        assert self.stored_checkpoint(es, admin_engine) == 2
        batch = subscriber.receive()
        assert numbers(batch) == [3]
        assert_same_events(batch, sent[2:])
        subscriber.ack(batch)
        assert eventually(lambda: self.stored_checkpoint(es, admin_engine) == 3)
        assert_quiet(subscriber)

    def test_single_subscriber_subscription_refuses_a_second_subscriber(self, es, subscribers):
        from sqlalchemy_eventstore.errors import SubscriptionAlreadyExistsError

        first = self.subscribe(es, subscribers, buffer_size=3)
        with pytest.raises(SubscriptionAlreadyExistsError):
            self.subscribe(es, subscribers)
        # The first subscriber is unaffected.
        self.append_to_target(es, 2)
        assert numbers(flatten(collect(first, 2))) == [1, 2]

    # -- catch-up -------------------------------------------------------------------

    def test_catch_up_delivers_the_unseen_persisted_events(self, es, subscribers, admin_engine):
        sent = self.append_to_target(es, 3)
        subscriber = self.subscribe(es, subscribers, buffer_size=3)
        batch = subscriber.receive()
        assert numbers(batch) == [1, 2, 3]
        assert_same_events(batch, sent)
        if not self.all_streams:
            assert pluck(batch, "stream_uuid") == [self.stream_uuid] * 3
            assert pluck(batch, "stream_version") == [1, 2, 3]
        subscriber.ack(batch)
        assert eventually(lambda: self.stored_checkpoint(es, admin_engine) == 3)
        assert_quiet(subscriber)

    def test_events_appended_while_catching_up_follow_in_order(self, es, subscribers):
        self.append_to_target(es, 3)
        subscriber = self.subscribe(es, subscribers, buffer_size=3)
        first = subscriber.receive()
        assert numbers(first) == [1, 2, 3]
        later = self.append_to_target(es, 3, first=4)  # before the first batch is acked
        subscriber.ack(first)
        second = subscriber.receive()
        assert numbers(second) == [4, 5, 6]
        assert_same_events(second, later)
        subscriber.ack(second)
        assert_quiet(subscriber)

    def test_live_events_are_delivered(self, es, subscribers):
        subscriber = self.subscribe(es, subscribers)
        sent = self.append_to_target(es, 1)
        batch = subscriber.receive()
        assert numbers(batch) == [1]
        assert_same_events(batch, sent)
        subscriber.ack(batch)
        assert_quiet(subscriber)

    # -- acknowledgement ----------------------------------------------------------

    def test_acknowledged_events_are_skipped_when_resubscribing(
        self, es, subscribers, admin_engine
    ):
        self.append_to_target(es, 3)
        subscriber = self.subscribe(es, subscribers, buffer_size=3)
        subscriber.ack(subscriber.receive())
        assert eventually(lambda: self.stored_checkpoint(es, admin_engine) == 3)
        subscriber.unsubscribe()

        again = self.subscribe(es, subscribers, buffer_size=3)
        assert_quiet(again)  # nothing already acknowledged comes back
        self.append_to_target(es, 1, first=4)
        assert numbers(again.receive()) == [4]

    def test_unacknowledged_events_are_replayed_when_resubscribing(
        self, es, subscribers, admin_engine
    ):
        self.append_to_target(es, 3)
        subscriber = self.subscribe(es, subscribers, buffer_size=3)
        assert numbers(subscriber.receive()) == [1, 2, 3]
        subscriber.unsubscribe()  # without acknowledging
        assert self.stored_checkpoint(es, admin_engine) == 0

        again = self.subscribe(es, subscribers, buffer_size=3)
        replayed = again.receive()
        assert numbers(replayed) == [1, 2, 3]
        again.ack(replayed)
        assert eventually(lambda: self.stored_checkpoint(es, admin_engine) == 3)

    def test_events_wait_until_the_sent_ones_are_acknowledged(self, es, subscribers):
        subscriber = self.subscribe(es, subscribers, buffer_size=3)
        initial = self.append_to_target(es, 3)
        remaining = self.append_to_target(es, 3, first=4)

        first = subscriber.receive()
        assert numbers(first) == [1, 2, 3]
        assert_same_events(first, initial)
        assert_quiet(subscriber)  # the buffer is full until the ack

        subscriber.ack(first)
        second = subscriber.receive()
        assert numbers(second) == [4, 5, 6]
        assert_same_events(second, remaining)
        subscriber.ack(second)
        assert_quiet(subscriber)

    def test_ack_then_unsubscribe_keeps_the_ack_whatever_the_threshold(
        self, es, subscribers, admin_engine
    ):
        self.append_to_target(es, 3)
        subscriber = self.subscribe(es, subscribers, buffer_size=3, checkpoint_threshold=100)
        subscriber.ack(subscriber.receive())
        subscriber.unsubscribe()
        assert self.stored_checkpoint(es, admin_engine) == 3

        again = self.subscribe(es, subscribers, buffer_size=3)
        assert_quiet(again)

    def test_ack_then_close_keeps_the_ack(self, make_store, subscribers, admin_engine):
        first = make_store()
        self.stream_uuid = new_id()
        self.append_to_target(first, 3)
        subscriber = self.subscribe(first, subscribers, buffer_size=3, checkpoint_threshold=100)
        subscriber.ack(subscriber.receive())
        first.close()
        assert self.stored_checkpoint(first, admin_engine) == 3

        second = make_store(schema=first.schema, init=False)
        again = self.subscribe(second, subscribers, buffer_size=3)
        assert_quiet(again)
        self.append_to_target(second, 1, first=4)
        assert numbers(again.receive()) == [4]

    # -- back-pressure and memory -------------------------------------------------

    def test_at_most_buffer_size_events_are_in_flight(self, es, subscribers):
        self.append_to_target(es, 10)
        subscriber = self.subscribe(es, subscribers, buffer_size=4)
        first = subscriber.receive()
        assert numbers(first) == [1, 2, 3, 4]
        assert_quiet(subscriber)
        subscriber.ack(first)
        assert numbers(flatten(collect(subscriber, 6, ack=True))) == list(range(5, 11))
        assert_quiet(subscriber)

    def test_pending_events_beyond_max_size_are_read_again_from_storage(self, es, subscribers):
        subscriber = self.subscribe(es, subscribers, buffer_size=3, max_size=3)
        self.append_to_target(es, 3)
        self.append_to_target(es, 3, first=4)
        self.append_to_target(es, 3, first=7)
        first = subscriber.receive()
        assert numbers(first) == [1, 2, 3]
        assert_quiet(subscriber)
        subscriber.ack(first)
        rest = collect(subscriber, 6, ack=True)
        assert numbers(flatten(rest)) == list(range(4, 10))
        assert all(len(batch) <= 3 for batch in rest)
        assert_quiet(subscriber)

    # -- selector and mapper ---------------------------------------------------------

    def test_selector_filters_and_filtered_events_count_as_acknowledged(
        self, es, subscribers, admin_engine
    ):
        subscriber = self.subscribe(
            es, subscribers, buffer_size=3, selector=lambda e: e.event_number % 2 == 0
        )
        self.append_to_target(es, 5)
        batch = subscriber.receive()
        assert numbers(batch) == [2, 4]
        subscriber.ack(batch)
        # Event 5 was filtered out: the checkpoint moves past it.
        assert eventually(lambda: self.stored_checkpoint(es, admin_engine) == 5)
        assert_quiet(subscriber)

    def test_mapper_transforms_what_the_subscriber_receives(self, es, subscribers, admin_engine):
        subscriber = self.subscribe(
            es, subscribers, buffer_size=3, mapper=lambda e: (e.event_number, e.data["event"])
        )
        self.append_to_target(es, 3)
        batch = subscriber.receive()
        assert batch == [(1, 1), (2, 2), (3, 3)]
        if self.mode == "mailbox":
            subscriber.ack(batch[-1][0])  # acks take an event_number
        else:
            subscriber.ack(batch)
        assert eventually(lambda: self.stored_checkpoint(es, admin_engine) == 3)
        assert_quiet(subscriber)


class MailboxAckContract(StreamSubscriptionContract):
    """Partial acknowledgements: only a mailbox subscriber acks part of a batch."""

    mode = "mailbox"

    def test_each_ack_releases_room_for_one_more_event(self, es, subscribers):
        subscriber = self.subscribe(es, subscribers, buffer_size=3)
        sent = self.append_to_target(es, 3) + self.append_to_target(es, 3, first=4)
        event1, event2, event3 = subscriber.receive()
        assert numbers([event1, event2, event3]) == [1, 2, 3]
        assert_quiet(subscriber)

        for acked, expected in ((event1, 4), (event2, 5), (event3, 6)):
            subscriber.ack(acked)
            batch = subscriber.receive()
            assert numbers(batch) == [expected]
            assert_same_events(batch, [sent[expected - 1]])
        assert_quiet(subscriber)

    def test_pending_events_arrive_one_per_ack_at_max_capacity(self, es, subscribers):
        subscriber = self.subscribe(es, subscribers, buffer_size=3, max_size=3)
        self.append_to_target(es, 3)
        self.append_to_target(es, 3, first=4)
        event1, event2, event3 = subscriber.receive()
        subscriber.ack(event1)
        assert numbers(subscriber.receive()) == [4]
        assert_quiet(subscriber)
        subscriber.ack(event2)
        subscriber.ack(event3)
        rest = collect(subscriber, 2)
        assert numbers(flatten(rest)) == [5, 6]
        assert_quiet(subscriber)

    def test_ack_by_event_number(self, es, subscribers, admin_engine):
        subscriber = self.subscribe(es, subscribers)
        self.append_to_target(es, 1)
        self.append_to_target(es, 1, first=2)
        assert numbers(subscriber.receive()) == [1]
        subscriber.ack(1)
        assert numbers(subscriber.receive()) == [2]
        subscriber.ack(2)
        assert eventually(lambda: self.stored_checkpoint(es, admin_engine) == 2)
        assert_quiet(subscriber)

    def test_acking_an_event_never_sent_raises_unexpected_ack(self, es, subscribers):
        from sqlalchemy_eventstore.errors import UnexpectedAckError

        subscriber = self.subscribe(es, subscribers, buffer_size=3)
        self.append_to_target(es, 5)
        batch = subscriber.receive()
        assert numbers(batch) == [1, 2, 3]
        with pytest.raises(UnexpectedAckError) as raised:
            subscriber.ack(999)
        assert raised.value.reason == "unexpected_ack"
        with pytest.raises(UnexpectedAckError):
            subscriber.ack(4)  # stored, but not sent yet
        # The failed acks changed nothing.
        subscriber.ack(batch)
        assert numbers(flatten(collect(subscriber, 2))) == [4, 5]
