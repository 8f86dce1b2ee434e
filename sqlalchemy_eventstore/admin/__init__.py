"""A mountable admin page for an event store: a plain WSGI application.

Pages: an overview (the head of ``$all``, each subscription's checkpoint, lag,
parked events and state), the streams (search, pagination), a stream's events
(pagination), one event (data and metadata pretty-printed), and a
subscription's parked events. Read-only unless built with ``actions=True``:
then it can replay or discard parked events and reset a subscription, by POST
with CSRF protection.

It is plain WSGI on the standard library (string templates and
:func:`html.escape`), so any framework can mount it and it adds no dependency.
It has no login of its own: mount it behind your application's authentication,
or pass ``authorize``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from .._raw import RawSerializer
from ..store import EventStore
from .app import AdminApp

__all__ = ["AdminApp", "make_admin_app"]


def make_admin_app(
    store: EventStore,
    *,
    actions: bool = False,
    secret_key: str | bytes | None = None,
    page_size: int = 50,
    title: str = "Event store",
    authorize: Callable[[dict[str, Any]], bool] | None = None,
) -> AdminApp:
    """The admin page of ``store``, as a WSGI application to mount at any path.

    It reads through its own view of the store (same engine, schema and
    timeout) that shows payloads as stored -- JSON pretty-printed, other bytes as text or
    base64 -- so that an event no serializer can read still displays.

    Args:
        store: The event store to show.
        actions: Offer replay/discard of parked events and resetting a
            subscription (POST, CSRF-protected). Off by default: read-only.
        secret_key: Signs the CSRF tokens. Give the same key to every process
            serving the page (a random one, the default, is good for one
            process only).
        page_size: Streams or events per page.
        title: Shown in the page header.
        authorize: Called with each request's WSGI environ; a false result
            answers 403. None: every request is allowed (mount it behind
            authentication).

    Returns:
        The WSGI application.

    Raises:
        TypeError: ``store`` is not an EventStore, or another argument has the
            wrong type.
        ValueError: ``page_size`` is below 1.
    """
    if not isinstance(store, EventStore):
        raise TypeError(f"store must be an EventStore, got {type(store).__name__}")
    if not isinstance(actions, bool):
        raise TypeError("actions must be a bool")
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise TypeError("page_size must be an int")
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    if authorize is not None and not callable(authorize):
        raise TypeError("authorize must be callable or None")
    if secret_key is None:
        key = secrets.token_bytes(32)
    elif isinstance(secret_key, str):
        key = secret_key.encode("utf-8")
    elif isinstance(secret_key, bytes):
        key = secret_key
    else:
        raise TypeError("secret_key must be a str, bytes or None")
    if not key:
        raise ValueError("secret_key must not be empty")
    reader = EventStore(
        store.engine,
        schema=store.schema,
        column_data_type=store.column_data_type,
        serializer=RawSerializer(store.column_data_type),
        name="eventstore-admin",
        timeout=store.timeout,
    )
    return AdminApp(
        reader,
        live=store.stats,
        actions=actions,
        secret_key=key,
        page_size=page_size,
        title=str(title),
        authorize=authorize,
    )
