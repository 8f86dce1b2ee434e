"""The admin page in a real headless Chromium, served over HTTP from a thread.

Each page is loaded by the browser twice: once to dump the DOM it built (the
checks), once to take the screenshot that docs/admin.md shows
(docs/images/admin-*.png, rewritten by every run). Skips only where no
Chromium is installed (``apt-get install chromium``; .ci/run installs it).
"""

from __future__ import annotations

import html
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from sqlalchemy_eventstore import EventData, EventStore
from sqlalchemy_eventstore.admin import make_admin_app

from .parked_helpers import park_numbers

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
SCRIPT = "<script>document.title='pwned'</script>"


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


BROWSER = _browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium installed (apt-get install chromium)"
)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def shop(make_store) -> Iterator[EventStore]:
    """A small shop: accounts and orders, a running projector, a stuck invoicer."""
    store = make_store()
    store.append_to_stream(
        "account-ada",
        0,
        [
            EventData(
                "AccountOpened",
                {"owner": "Ada Lovelace", "note": SCRIPT},
                metadata={"user": "admin", "ip": "10.0.0.7"},
                correlation_id="7d1c1b52-2f6f-4c39-9a2e-3f6ad1e2a001",
            ),
            EventData("MoneyDeposited", {"amount": 120, "currency": "EUR"}),
        ],
    )
    for i in range(1, 13):
        store.append_to_stream(
            f"order-{1000 + i}",
            0,
            [
                EventData("OrderPlaced", {"order": 1000 + i, "total": 10 * i}),
                EventData("OrderPaid", {"order": 1000 + i}),
            ],
        )
    park_numbers(store, "invoicer", [5, 9], reason="ValueError: no VAT number for customer 17")
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            f'UPDATE "{store.schema}".subscriptions SET last_seen = 11 '
            "WHERE subscription_name = 'invoicer'"
        )
    projector = store.subscribe_to_all_streams("order-projector", handler=lambda events: None)
    assert projector.wait_subscribed(timeout=10)
    head = store.stream_info("$all").stream_version
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with store.engine.connect() as conn:
            seen = conn.exec_driver_sql(
                f'SELECT last_seen FROM "{store.schema}".subscriptions '
                "WHERE subscription_name = 'order-projector'"
            ).scalar()
        if seen == head:
            break
        time.sleep(0.1)
    try:
        yield store
    finally:
        projector.unsubscribe()


@pytest.fixture
def served(shop: EventStore) -> Iterator[str]:
    """The admin page mounted at /admin of a WSGI app, on 127.0.0.1; its base URL."""

    def outer(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here"]

    app = DispatcherMiddleware(
        outer, {"/admin": make_admin_app(shop, actions=True, secret_key="docs", page_size=10)}
    )
    server = make_server("127.0.0.1", 0, app, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/admin"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",  # tests may run as root (CI does)
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


PAGES = [
    # (screenshot name, path, what the rendered page must show, window height)
    (
        "overview",
        "/",
        ["$all head", "order-projector", "invoicer", "running (pid", "behind for"],
        620,
    ),
    ("streams", "/streams?page=1", ["14 streams", "order-1012", "page 1 of 2"], 720),
    ("stream", "/stream?id=account-ada", ["AccountOpened", "MoneyDeposited"], 520),
    ("event", "/event?stream=account-ada&n=1", ["Ada Lovelace", '"ip": "10.0.0.7"'], 760),
    (
        "subscriptions",
        "/subscriptions",
        # order-projector runs in the admin's own store: its live figures show.
        ["invoicer", "reset to 0", "stopped", "in this process", "0 in flight, checkpoint moved"],
        420,
    ),
    ("parked", "/parked?name=invoicer", ["no VAT number", "Replay all", "OrderPlaced"], 520),
]


def test_every_page_in_a_real_browser(served: str, tmp_path: Path) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name, path, expected, height in PAGES:
        url = served + path
        dom = chromium(tmp_path, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr
        text = html.unescape(dom.stdout)
        for fragment in expected:
            assert fragment in text, (name, fragment, dom.stdout[-3000:])
        # Stored markup is text, never markup: no element from the event's data exists,
        # and its script did not run (the title is still the page's).
        assert "<script" not in dom.stdout, name
        assert "pwned" not in dom.stdout.split("</title>")[0], name

        target = IMAGES / f"admin-{name}.png"
        shot = chromium(tmp_path, f"--window-size=1280,{height}", f"--screenshot={target}", url)
        assert shot.returncode == 0, shot.stderr
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert target.stat().st_size > 5000, name  # a rendered page, not a blank one

    event_dom = chromium(tmp_path, "--dump-dom", served + "/event?stream=account-ada&n=1").stdout
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in event_dom
