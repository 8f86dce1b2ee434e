"""The admin page as a WSGI application: routing, CSRF, responses.

Read-only unless built with ``actions=True``. Actions are POST only and carry a
signed double-submit token: a random value in a cookie (HttpOnly,
SameSite=Strict) and, in each form, its HMAC under the app's secret key. A
cross-site form can send the cookie but cannot read it, so cannot compute the
matching field; a request whose ``Origin`` names another host is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from .._types import ALL_STREAM
from ..stats import StoreStats
from ..storage import overview
from ..store import EventStore
from . import views
from .html import esc, page

__all__ = ["AdminApp"]

logger = logging.getLogger("sqlalchemy_eventstore.admin")

StartResponse = Callable[..., Any]
_COOKIE = "eventstore_admin_csrf"
_MAX_FORM = 64 * 1024
_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]
_ACTIONS = ("/parked/replay", "/parked/discard", "/subscriptions/reset")


class _Refused(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int(raw: str | None, name: str, default: int | None = None, minimum: int = 1) -> int:
    if raw is None or raw == "":
        if default is None:
            raise _Refused("400 Bad Request", f"{name} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Refused("400 Bad Request", f"{name} must be a whole number") from None
    if value < minimum:
        raise _Refused("400 Bad Request", f"{name} must be at least {minimum}")
    return value


class AdminApp:
    """See :func:`sqlalchemy_eventstore.admin.make_admin_app`."""

    def __init__(
        self,
        store: EventStore,
        *,
        live: Callable[[], StoreStats] | None = None,
        actions: bool,
        secret_key: bytes,
        page_size: int,
        title: str,
        authorize: Callable[[dict[str, Any]], bool] | None,
    ) -> None:
        self.store = store
        # The figures of the subscriptions the shown store runs in this process.
        self.live = live if live is not None else store.stats
        self.actions = actions
        self._secret = secret_key
        self.page_size = page_size
        self.title = title
        self.authorize = authorize

    # -- WSGI ------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        base = environ.get("SCRIPT_NAME", "").rstrip("/")
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        cookie_token = self._cookie_token(environ)
        extra_headers: list[tuple[str, str]] = []
        if self.actions and cookie_token is None:
            cookie_token = secrets.token_urlsafe(32)
            extra_headers.append(
                (
                    "Set-Cookie",
                    f"{_COOKIE}={cookie_token}; Path={base or '/'}; HttpOnly; SameSite=Strict",
                )
            )
        csrf = self._sign(cookie_token) if self.actions and cookie_token else None
        ctx = views.Context(self.store, base, self.page_size, csrf, self.live)
        try:
            if self.authorize is not None and not self.authorize(environ):
                raise _Refused("403 Forbidden", "Not allowed.")
            if path in _ACTIONS:
                if method != "POST":
                    raise _Refused("405 Method Not Allowed", "Actions take POST only.")
                location = self._act(environ, path, cookie_token)
                start_response("303 See Other", [("Location", location), *extra_headers])
                return [b""]
            if method not in ("GET", "HEAD"):
                raise _Refused("405 Method Not Allowed", "This page is read-only.")
            title, body = self._view(ctx, path, query)
            status = "200 OK"
        except _Refused as refused:
            status, title, body = refused.status, refused.status[4:], f"<p>{esc(refused)}</p>"
        except views.NotFound as missing:
            status, title, body = "404 Not Found", "Not found", f"<p>{esc(missing)}</p>"
        notice = ""
        if query.get("done"):
            notice = f'<div class="notice ok">{esc(query["done"])}</div>'
        if query.get("failed"):
            notice = f'<div class="notice error">{esc(query["failed"])}</div>'
        document = page(title, body, base=base, brand=self.title, notice=notice).encode("utf-8")
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(document))),
            *_HEADERS,
            *extra_headers,
        ]
        start_response(status, headers)
        return [b"" if method == "HEAD" else document]

    def _view(self, ctx: views.Context, path: str, query: dict[str, str]) -> tuple[str, str]:
        if path == "/":
            return views.home(ctx)
        if path == "/subscriptions":
            return views.subscriptions(ctx)
        if path == "/streams":
            return views.streams(ctx, _int(query.get("page"), "page", 1), query.get("search", ""))
        if path == "/stream":
            stream = query.get("id") or ALL_STREAM
            return views.stream(ctx, stream, _int(query.get("page"), "page", 1))
        if path == "/event":
            stream = query.get("stream") or ALL_STREAM
            return views.event(ctx, stream, _int(query.get("n"), "n"))
        if path == "/parked":
            name = query.get("name")
            if not name:
                raise _Refused("400 Bad Request", "name is required")
            return views.parked(ctx, name, query.get("stream") or ALL_STREAM)
        raise views.NotFound("No such page.")

    # -- actions ------------------------------------------------------------------------

    def _cookie_token(self, environ: dict[str, Any]) -> str | None:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(environ.get("HTTP_COOKIE", ""))
        except Exception:  # a malformed header from the client: treat as absent
            return None
        morsel = jar.get(_COOKIE)
        return morsel.value if morsel is not None and morsel.value else None

    def _sign(self, token: str) -> str:
        return hmac.new(self._secret, token.encode(), hashlib.sha256).hexdigest()

    def _check_csrf(self, environ: dict[str, Any], form: dict[str, str], token: str | None) -> None:
        origin = environ.get("HTTP_ORIGIN")
        if origin and origin != "null":
            host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
            if urlsplit(origin).netloc != host:
                raise _Refused("403 Forbidden", "Cross-origin request refused.")
        sent = form.get("csrf_token", "")
        if token is None or not sent or not hmac.compare_digest(sent, self._sign(token)):
            raise _Refused("403 Forbidden", "Missing or invalid CSRF token: reload the page.")

    def _act(self, environ: dict[str, Any], path: str, token: str | None) -> str:
        if not self.actions:
            raise _Refused("403 Forbidden", "Actions are disabled: this admin page is read-only.")
        form = self._form(environ)
        self._check_csrf(environ, form, token)
        base = environ.get("SCRIPT_NAME", "").rstrip("/")
        name = form.get("name", "")
        stream = form.get("stream") or ALL_STREAM
        if not name:
            raise _Refused("400 Bad Request", "name is required")
        if path == "/subscriptions/reset":
            to = _int(form.get("to"), "to", minimum=0)
            back = f"{base}/subscriptions"
            try:
                with self.store.engine.begin() as conn:
                    info = overview.find_subscription(conn, self.store.schema, stream, name)
                    if info is None:
                        raise views.NotFound(f"There is no subscription {name!r} to {stream!r}.")
                    if to > info.head:
                        raise _Refused("400 Bad Request", f"{to} is past the head ({info.head}).")
                    overview.reset_subscription(conn, self.store.schema, info, to)
            except overview.SubscriptionBusyError as busy:
                return f"{back}?{urlencode({'failed': str(busy)})}"
            logger.info("admin: reset subscription %r to %s at %d", name, stream, to)
            return f"{back}?{urlencode({'done': f'{name} reset to {to}.'})}"
        numbers = [_int(form["event"], "event")] if form.get("event") else None
        if path == "/parked/replay":
            count = self.store.replay_parked(name, stream, numbers)
            done = f"{count} parked event(s) queued for replay."
        else:
            count = self.store.discard_parked(name, stream, numbers)
            done = f"{count} parked event(s) discarded."
        logger.info("admin: %s on %r to %s: %d", path, name, stream, count)
        query = urlencode({"name": name, "stream": stream, "done": done})
        return f"{base}/parked?{query}"

    def _form(self, environ: dict[str, Any]) -> dict[str, str]:
        kind = environ.get("CONTENT_TYPE", "").split(";")[0].strip()
        if kind != "application/x-www-form-urlencoded":
            raise _Refused("400 Bad Request", "Expected a form.")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > _MAX_FORM:
            raise _Refused("400 Bad Request", "Form too large.")
        raw = environ["wsgi.input"].read(length).decode("utf-8", "replace") if length else ""
        return {k: v[0] for k, v in parse_qs(raw).items()}
