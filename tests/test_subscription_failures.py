"""User code that fails: never skipped, never stalled silently, never shared.

SPEC.md "User code that fails": selector, mapper, partition_by, handler and
the serializer of a persistent subscription; the failing work is retried with
backoff, ``sub.last_error`` holds the exception, ``status`` says
``"retrying"``; with ``max_retries`` the event is parked and the subscription
carries on.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from sqlalchemy_eventstore import ALL_STREAM

from .subscription_helpers import WAIT, append, checkpoint, collect, eventually, flatten, numbers


class Flaky:
    """Raises on event ``bad`` until ``fixed`` is set; counts its calls on it."""

    def __init__(self, bad: int, result: Any = True) -> None:
        self.bad = bad
        self.result = result
        self.fixed = threading.Event()
        self.calls_on_bad = 0

    def __call__(self, event: Any) -> Any:
        if event.event_number == self.bad:
            self.calls_on_bad += 1
            if not self.fixed.is_set():
                raise ValueError(f"cannot take event {self.bad}")
        return event if self.result is None else self.result


def parked_rows(admin_engine, schema: str) -> list[tuple[int, str | None, str]]:
    with admin_engine.connect() as conn:
        return [
            (int(r[0]), r[1], str(r[2]))
            for r in conn.execute(
                text(
                    f'SELECT event_number, partition_key, reason FROM "{schema}".parked_events '
                    "ORDER BY event_number"
                )
            )
        ]


@pytest.mark.parametrize("where", ["selector", "mapper", "partition_by"])
def test_failing_user_code_is_retried_never_skipped(make_store, driver, admin_engine, where):
    es = make_store(driver=driver)
    append(es, "s", 5)
    flaky = Flaky(2, result=None if where == "mapper" else True)
    if where == "partition_by":
        flaky.result = "key"
    sub = es.subscribe_to_all_streams("flaky", buffer_size=10, **{where: flaky})
    assert sub.wait_subscribed(WAIT)
    got = flatten(collect(sub, 5, timeout=1.5, ack=True))
    # Event 2 fails: 1 may arrive, nothing after 2 does; the checkpoint stays at 1.
    assert [e.event_number for e in got] in ([], [1])
    assert eventually(lambda: flaky.calls_on_bad >= 3)  # retried, with backoff
    assert isinstance(sub.last_error, ValueError)
    assert sub.status == "retrying"
    assert (checkpoint(admin_engine, es.schema, "flaky") or 0) <= 1
    flaky.fixed.set()
    got += flatten(collect(sub, 5 - len(got), ack=True))
    assert [e.event_number for e in got] == [1, 2, 3, 4, 5]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "flaky") == 5)
    assert sub.last_error is None
    assert sub.status == "subscribed"


def test_a_failing_handler_is_retried_and_its_error_shown(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    seen: list[int] = []
    fixed = threading.Event()

    def handler(batch: list[Any]) -> None:
        if batch[0].event_number == 2 and not fixed.is_set():
            raise RuntimeError("handler down")
        seen.extend(e.event_number for e in batch)

    sub = es.subscribe_to_all_streams("h", handler=handler)
    assert sub.wait_subscribed(WAIT)
    append(es, "s", 3)
    assert eventually(lambda: isinstance(sub.last_error, RuntimeError))
    assert sub.status == "retrying"
    assert seen == [1]
    fixed.set()
    assert eventually(lambda: seen == [1, 2, 3])
    assert eventually(lambda: sub.last_error is None and sub.status == "subscribed")
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "h") == 3)


def test_one_failing_subscription_does_not_hold_up_another(make_store, driver):
    es = make_store(driver=driver)
    append(es, "s", 5)

    def broken(event: Any) -> bool:
        raise ValueError("always")

    bad = es.subscribe_to_all_streams("bad", selector=broken)
    good = es.subscribe_to_all_streams("good", buffer_size=10)
    assert good.wait_subscribed(WAIT)
    assert numbers(flatten(collect(good, 5, ack=True))) == [1, 2, 3, 4, 5]
    assert eventually(lambda: bad.status == "retrying")
    append(es, "s", 2)
    assert numbers(flatten(collect(good, 2, ack=True))) == [6, 7]


def test_an_unreadable_event_is_retried_then_parked(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    append(es, "s", 3)
    with admin_engine.connect() as conn:  # event 2 is no longer JSON
        conn.execute(text("SET session_replication_role = replica"))  # past the guard trigger
        conn.execute(
            text(
                f"UPDATE \"{es.schema}\".events SET data = 'not json'::bytea "
                f'WHERE event_id = (SELECT event_id FROM "{es.schema}".stream_events '
                "WHERE stream_id = 0 AND stream_version = 2)"
            )
        )
    other = es.subscribe_to_all_streams("other", buffer_size=10)
    sub = es.subscribe_to_all_streams("unreadable", buffer_size=10, max_retries=2)
    assert other.wait_subscribed(WAIT)
    got = numbers(flatten(collect(sub, 2, ack=True)))
    assert got == [1, 3]
    [parked] = es.parked_events("unreadable")
    assert parked.event.event_number == 2
    assert parked.reason.startswith(("JSONDecodeError", "UnicodeDecodeError"))
    assert parked.event.data == b"not json"  # the stored bytes (SPEC.md)
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "unreadable") == 3)


def test_max_retries_parks_the_event_and_carries_on(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    append(es, "s", 4)
    flaky = Flaky(2)
    sub = es.subscribe_to_all_streams("parking", buffer_size=10, selector=flaky, max_retries=2)
    assert sub.wait_subscribed(WAIT)
    got = numbers(flatten(collect(sub, 3, ack=True)))
    assert got == [1, 3, 4]
    assert flaky.calls_on_bad == 3  # n retries: n + 1 attempts
    rows = parked_rows(admin_engine, es.schema)
    assert [(n, reason) for n, _, reason in rows] == [(2, "ValueError: cannot take event 2")]
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "parking") == 4)


def test_a_parked_key_parks_its_later_events_behind_it(make_store, driver, admin_engine):
    es = make_store(driver=driver)
    # x: 1, 2, 3; y: 4 ... interleaved as x1 y2 x3 y4 x5.
    for stream in ("x", "y", "x", "y", "x"):
        append(es, stream, 1)

    def mapper(event: Any) -> Any:
        if event.event_number == 1:
            raise KeyError("first x")
        return event.event_number

    sub = es.subscribe_to_all_streams(
        "keyed",
        buffer_size=10,
        mapper=mapper,
        partition_by=lambda e: e.stream_uuid,
        max_retries=0,
    )
    assert sub.wait_subscribed(WAIT)
    got = flatten(collect(sub, 2, ack=True))
    assert sorted(got) == [2, 4]
    rows = parked_rows(admin_engine, es.schema)
    assert [(n, key) for n, key, _ in rows] == [(1, "x"), (3, "x"), (5, "x")]
    assert rows[1][2] == "blocked behind parked event 1"
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "keyed") == 5)


def test_a_handler_batch_that_fails_parks_only_the_failing_event(make_store, admin_engine):
    es = make_store()
    append(es, "s", 4)
    handled: list[int] = []

    def handler(batch: list[Any]) -> None:
        if any(e.event_number == 3 for e in batch):
            raise ValueError("three")
        handled.extend(e.event_number for e in batch)

    sub = es.subscribe_to_all_streams("iso", handler=handler, buffer_size=4, max_retries=1)
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: sorted(handled) == [1, 2, 4])
    # The park is written on the runner's next pass, perhaps after 4 was handled.
    assert eventually(lambda: [n for n, _, _ in parked_rows(admin_engine, es.schema)] == [3])
    assert eventually(lambda: checkpoint(admin_engine, es.schema, "iso") == 4)


def test_a_raising_transient_selector_does_not_duplicate_other_transients(make_store, driver):
    es = make_store(driver=driver)

    def broken(event: Any) -> bool:
        raise ValueError("nope")

    bad = es.subscribe(ALL_STREAM, selector=broken)
    good = es.subscribe(ALL_STREAM)
    persistent = es.subscribe_to_all_streams("p", selector=broken)
    assert persistent.wait_subscribed(WAIT)
    append(es, "s", 3)
    got = numbers(flatten(collect(good, 3)))
    assert got == [1, 2, 3]
    with pytest.raises(TimeoutError):
        good.receive(timeout=0.5)
    with pytest.raises(TimeoutError):
        bad.receive(timeout=0)
