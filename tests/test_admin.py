"""The admin page at the WSGI level, on a real store: routing, escaping, read-only, CSRF."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, TestResponse

from sqlalchemy_eventstore import ALL_STREAM, EventData, EventStore
from sqlalchemy_eventstore.admin import make_admin_app

from .parked_helpers import park_numbers, parked_rows

SCRIPT = "<script>document.title='pwned'</script>"


def populate(store: EventStore) -> None:
    """acct-1 (2 events, the first with hostile data), 55 orders; projector at 1, 2 parked."""
    store.append_to_stream(
        "acct-1",
        0,
        [
            EventData("Opened", {"owner": SCRIPT}, metadata={"note": '"><img src=x onerror=1>'}),
            EventData("Paid", {"amount": 5}),
        ],
    )
    for i in range(55):
        store.append_to_stream(f"order-{i:02d}", 0, [EventData("Placed", {"i": i})])
    park_numbers(store, "projector", [2, 3], reason=f"ValueError: {SCRIPT}")
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            f'UPDATE "{store.schema}".subscriptions SET last_seen = 1 '
            "WHERE subscription_name = 'projector'"
        )


@pytest.fixture
def store(make_store, driver) -> EventStore:
    """On each driver: the admin page's own SQL (the overview) runs on both."""
    made = make_store(driver=driver)
    populate(made)
    return made


def mounted(app: Any) -> Client:
    """The admin app mounted at /admin of another WSGI app, as a framework would."""

    def outer(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"the application"]

    return Client(DispatcherMiddleware(outer, {"/admin": app}))


def html(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def test_pages_route_under_the_mount_point(store: EventStore) -> None:
    client = mounted(make_admin_app(store, page_size=20))
    home = client.get("/admin/")
    assert home.status_code == 200
    assert home.headers["Content-Type"] == "text/html; charset=utf-8"
    body = html(home)
    assert '<a href="/admin/streams">' in body  # links carry the mount point
    assert "<dt>$all head</dt><dd>57</dd>" in body
    assert "projector" in body

    streams = html(client.get("/admin/streams"))
    assert "57 streams" in streams  # $all included
    assert "page 1 of 3" in streams
    assert streams.count('href="/admin/stream?id=') == 20
    page3 = html(client.get("/admin/streams?page=3"))
    assert "page 3 of 3" in page3
    assert page3.count('href="/admin/stream?id=') == 17

    found = html(client.get("/admin/streams?search=acct"))
    assert "1 stream<" in found and "acct-1" in found and "order-01" not in found

    stream = html(client.get("/admin/stream?id=acct-1"))
    assert "Opened" in stream and "Paid" in stream
    assert 'href="/admin/event?stream=acct-1&amp;n=2"' in stream
    all_page = html(client.get("/admin/stream?id=%24all&page=3"))
    assert "page 3 of 3" in all_page and "order-54" in all_page

    event = html(client.get("/admin/event?stream=acct-1&n=2"))
    assert "<pre>{\n  &quot;amount&quot;: 5\n}</pre>" in event  # pretty-printed

    subs = html(client.get("/admin/subscriptions"))
    assert re.search(r'<span class="lag">56</span>', subs), subs
    assert 'href="/admin/parked?name=projector&amp;stream=%24all"' in subs
    parked = html(client.get("/admin/parked?name=projector"))
    assert "Paid" in parked and "Placed" in parked

    assert client.get("/admin/nope").status_code == 404
    assert client.get("/admin/stream?id=missing").status_code == 404
    assert client.get("/admin/event?stream=acct-1&n=9").status_code == 404
    assert client.get("/admin/parked?name=nobody").status_code == 404
    assert client.get("/admin/streams?page=x").status_code == 400
    assert client.get("/admin/event?stream=acct-1").status_code == 400
    assert html(client.get("/elsewhere")) == "the application"


def test_every_stored_value_is_escaped(store: EventStore) -> None:
    client = mounted(make_admin_app(store))
    pages = [
        "/admin/event?stream=acct-1&n=1",
        "/admin/stream?id=acct-1",
        "/admin/parked?name=projector",
        "/admin/streams?search=" + SCRIPT,
    ]
    for path in pages:
        response = client.get(path)
        body = html(response)
        assert "<script" not in body, path
        assert "<img" not in body, path
        assert "&lt;script&gt;" in body, path
        # A second line of defence: no inline script may run even if something slipped.
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    event = html(client.get("/admin/event?stream=acct-1&n=1"))
    assert "&quot;&gt;&lt;img src=x onerror=1&gt;" in event


def test_payloads_no_serializer_can_read_still_show(make_store) -> None:
    class Raw:
        column_data_type = "bytea"

        def serialize(self, term, type=None):
            return bytes(term)

        def deserialize(self, data, type=None):
            return bytes(data)

    store = make_store(serializer=Raw())
    store.append_to_stream("blobs", 0, [EventData("Text", "é".encode()), EventData("Bin", b"\xff")])
    client = mounted(make_admin_app(store))
    assert "<pre>é</pre>" in html(client.get("/admin/event?stream=blobs&n=1"))
    assert "(binary, base64) /w==" in html(client.get("/admin/event?stream=blobs&n=2"))


def test_read_only_by_default(store: EventStore) -> None:
    client = mounted(make_admin_app(store))
    body = html(client.get("/admin/parked?name=projector"))
    assert "<form" not in body.replace('<form method="get"', "")  # only the search form
    assert "csrf_token" not in body
    for path in ("/admin/parked/replay", "/admin/parked/discard", "/admin/subscriptions/reset"):
        refused = client.post(path, data={"name": "projector", "to": "0"})
        assert refused.status_code == 403
        assert "read-only" in html(refused)
    assert client.post("/admin/streams").status_code == 405
    assert len(parked_rows(store)) == 2


def test_actions_need_post_and_a_valid_csrf_token(store: EventStore) -> None:
    client = mounted(make_admin_app(store, actions=True, secret_key="test-key"))
    page = client.get("/admin/parked?name=projector")
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    token = csrf_of(html(page))

    # GET never acts.
    assert client.get("/admin/parked/discard?name=projector").status_code == 405
    # No token, a made-up token, the token altered by one digit: refused, nothing changed.
    altered = token[:-1] + ("1" if token[-1] == "0" else "0")
    for sent in ({}, {"csrf_token": "0" * 64}, {"csrf_token": altered}):
        refused = client.post("/admin/parked/discard", data={"name": "projector", **sent})
        assert refused.status_code == 403
        assert "CSRF" in html(refused)
    # The right token from another origin: refused.
    cross = client.post(
        "/admin/parked/discard",
        data={"name": "projector", "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    # A token without its cookie (a cross-site form cannot read ours): refused.
    fresh = mounted(make_admin_app(store, actions=True, secret_key="test-key"))
    alone = fresh.post("/admin/parked/discard", data={"name": "projector", "csrf_token": token})
    assert alone.status_code == 403
    assert len(parked_rows(store)) == 2

    replayed = client.post(
        "/admin/parked/replay", data={"name": "projector", "csrf_token": token, "event": "2"}
    )
    assert replayed.status_code == 303
    assert replayed.headers["Location"].startswith("/admin/parked?name=projector")
    assert [row[3] for row in parked_rows(store)] == [True, False]
    followed = html(client.get(replayed.headers["Location"]))
    assert "1 parked event(s) queued for replay." in followed

    discarded = client.post(
        "/admin/parked/discard", data={"name": "projector", "csrf_token": token}
    )
    assert discarded.status_code == 303
    assert parked_rows(store) == []

    reset = client.post(
        "/admin/subscriptions/reset",
        data={"name": "projector", "stream": ALL_STREAM, "to": "0", "csrf_token": token},
    )
    assert reset.status_code == 303
    assert "projector reset to 0." in html(client.get(reset.headers["Location"]))
    past = client.post(
        "/admin/subscriptions/reset",
        data={"name": "projector", "to": "999", "csrf_token": token},
    )
    assert past.status_code == 400


def test_a_running_subscription_is_not_reset(store: EventStore) -> None:
    sub = store.subscribe_to_all_streams("live", handler=lambda events: None)
    assert sub.wait_subscribed(timeout=10)
    try:
        client = mounted(make_admin_app(store, actions=True))
        token = csrf_of(html(client.get("/admin/subscriptions")))
        assert "running (pid" in html(client.get("/admin/subscriptions"))
        refused = client.post(
            "/admin/subscriptions/reset", data={"name": "live", "to": "0", "csrf_token": token}
        )
        assert refused.status_code == 303
        assert "is running" in html(client.get(refused.headers["Location"]))
    finally:
        sub.unsubscribe()


def test_authorize_and_bad_arguments(store: EventStore) -> None:
    client = mounted(make_admin_app(store, authorize=lambda environ: "HTTP_X_ADMIN" in environ))
    assert client.get("/admin/").status_code == 403
    assert client.get("/admin/", headers={"X-Admin": "1"}).status_code == 200
    with pytest.raises(TypeError, match="store"):
        make_admin_app("postgresql://x/y")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="page_size"):
        make_admin_app(store, page_size=0)
    with pytest.raises(TypeError, match="secret_key"):
        make_admin_app(store, secret_key=1)  # type: ignore[arg-type]
