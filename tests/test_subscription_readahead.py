"""Catch-up reads the next page ahead, and acks while catching up coalesce
their checkpoint writes: every event still arrives once, in order, and the
last ack is persisted."""

from __future__ import annotations

import threading

from sqlalchemy_eventstore import ALL_STREAM

from .subscription_helpers import WAIT, append, checkpoint, numbers


def test_catch_up_reads_ahead_and_delivers_every_event_once_in_order(make_store):
    es = make_store()
    for start in range(0, 1200, 400):
        append(es, f"s{start}", 400)
    sub = es.subscribe_to_all_streams("ahead", buffer_size=50, max_size=100)
    assert sub.wait_subscribed(WAIT)
    received: list[int] = []
    while len(received) < 1200:
        batch = sub.receive(timeout=WAIT)
        received.extend(numbers(batch))
        sub.ack(batch)
    assert received == list(range(1, 1201))
    # The pages after the first full one came from the reader thread.
    assert any(t.name.startswith("eventstore-reader-") for t in threading.enumerate())
    # A page read ahead that came back short is never taken as "caught up":
    # events appended now arrive too.
    append(es, "later", 3)
    assert numbers(sub.receive(timeout=WAIT)) == [1201, 1202, 1203]
    sub.unsubscribe()


def test_mailbox_acks_while_catching_up_are_persisted_at_unsubscribe(make_store, admin_engine):
    es = make_store()
    append(es, "s", 600)
    sub = es.subscribe_to_all_streams("coalesced")  # buffer_size=1, checkpoint_threshold=1
    assert sub.wait_subscribed(WAIT)
    for expected in range(1, 601):
        batch = sub.receive(timeout=WAIT)
        assert numbers(batch) == [expected]
        sub.ack(batch)
    sub.unsubscribe()
    assert checkpoint(admin_engine, es.schema, "coalesced", ALL_STREAM) == 600
