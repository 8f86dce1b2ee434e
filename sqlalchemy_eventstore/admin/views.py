"""The admin page's pages: each function reads the store and returns (title, body HTML)."""

from __future__ import annotations

from collections.abc import Callable
from math import ceil
from typing import Any

from .._format import duration
from .._types import ALL_STREAM, RecordedEvent
from ..errors import StreamDeletedError, StreamNotFoundError
from ..stats import StoreStats, SubscriptionStats
from ..storage import overview
from ..storage.overview import SubscriptionInfo
from ..store import EventStore
from .html import esc, link, payload_text, table, when

__all__ = ["NotFound", "event", "home", "parked", "stream", "streams", "subscriptions"]


class NotFound(Exception):
    """The thing asked for does not exist: a 404 with this message."""


class Context:
    """What a view needs: the store to read with, links' base, the form for actions."""

    def __init__(
        self,
        store: EventStore,
        base: str,
        page_size: int,
        csrf: str | None,
        live: Callable[[], StoreStats] | None = None,
    ) -> None:
        self.store = store
        # The live figures of the subscriptions this process runs (stats()).
        self.live = live if live is not None else store.stats
        self.base = base
        self.page_size = page_size
        self.csrf = csrf  # None: actions are off (no forms rendered)

    def form(self, path: str, fields: dict[str, Any], label: str, confirm: str = "") -> str:
        """A POST button carrying ``fields`` and the CSRF token (nothing when actions are off)."""
        if self.csrf is None:
            return ""
        hidden = "".join(
            f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items()
        )
        title = f' title="{esc(confirm)}"' if confirm else ""
        return (
            f'<form class="inline" method="post" action="{esc(self.base + path)}">'
            f'<input type="hidden" name="csrf_token" value="{esc(self.csrf)}">{hidden}'
            f"<button{title}>{esc(label)}</button></form>"
        )


def _pager(ctx: Context, path: str, number: int, pages: int, **query: Any) -> str:
    if pages <= 1:
        return ""
    parts = []
    if number > 1:
        parts.append(link(ctx.base, path, "« first", page=1, **query))
        parts.append(link(ctx.base, path, "\u2039 previous", page=number - 1, **query))
    parts.append(f'<span class="muted">page {number} of {pages}</span>')
    if number < pages:
        parts.append(link(ctx.base, path, "next \u203a", page=number + 1, **query))
        parts.append(link(ctx.base, path, "last »", page=pages, **query))
    return f'<nav class="pager">{"".join(parts)}</nav>'


def _here(live: SubscriptionStats | None) -> str:
    """What this process's own subscriber says (the admin's store runs it), or "-"."""
    if live is None:
        return '<span class="muted">-</span>'
    return esc(
        f"{live.status}, {live.in_flight} in flight, "
        f"checkpoint moved {duration(live.checkpoint_age)} ago"
    )


def _subscription_rows(ctx: Context, infos: list[SubscriptionInfo]) -> list[list[str]]:
    rows = []
    # Subscriptions the admin's own store runs: their live figures too.
    live = {(s.stream_uuid, s.subscription_name): s for s in ctx.live().subscriptions}
    for info in infos:
        state = (
            f'<span class="state-running">running (pid {esc(info.holder_pid)})</span>'
            if info.running
            else '<span class="state-stopped">stopped</span>'
        )
        lag = (
            f'<span class="lag">{esc(info.lag)}</span>' if info.lag else '<span class="ok">0</span>'
        )
        parked_count = "-" if info.parked is None else str(info.parked)
        if info.parked:
            parked_count = link(
                ctx.base,
                "/parked",
                info.parked,
                name=info.subscription_name,
                stream=info.stream_uuid,
            )
        reset = (
            ""
            if info.running
            else ctx.form(
                "/subscriptions/reset",
                {"name": info.subscription_name, "stream": info.stream_uuid, "to": 0},
                "reset to 0",
                "replay the whole stream to this subscription",
            )
        )
        rows.append(
            [
                esc(info.subscription_name),
                link(ctx.base, "/stream", info.stream_uuid, id=info.stream_uuid),
                esc(info.last_seen),
                esc(info.head),
                lag,
                parked_count,
                esc(duration(info.pending_age)),
                state,
                _here(live.get((info.stream_uuid, info.subscription_name))),
                esc(when(info.created_at)),
            ]
            + ([reset] if ctx.csrf is not None else [])
        )
    return rows


def _subscriptions_table(ctx: Context, infos: list[SubscriptionInfo]) -> str:
    if not infos:
        return '<p class="muted">No persistent subscriptions.</p>'
    headers = [
        "subscription",
        "stream",
        "checkpoint",
        "head",
        "lag",
        "parked",
        "behind for",
        "state",
        "in this process",
        "created",
    ]
    if ctx.csrf is not None:
        headers.append("")
    return table(headers, _subscription_rows(ctx, infos), numeric=(2, 3, 4, 5))


def home(ctx: Context) -> tuple[str, str]:
    with ctx.store.engine.connect() as conn:
        found = overview.store_overview(conn, ctx.store.schema)
    behind = [i for i in found.subscriptions if i.lag or i.parked]
    summary = (
        f'<dl class="facts"><dt>schema</dt><dd>{esc(found.schema)}</dd>'
        f"<dt>$all head</dt><dd>{esc(found.head)}</dd>"
        f"<dt>streams</dt><dd>{link(ctx.base, '/streams', found.streams)}</dd>"
        f"<dt>subscriptions</dt><dd>{len(found.subscriptions)} "
        f"({len(behind)} behind or with parked events)</dd></dl>"
    )
    body = summary + "<h2>Subscriptions</h2>" + _subscriptions_table(ctx, found.subscriptions)
    return "Overview", body


def subscriptions(ctx: Context) -> tuple[str, str]:
    with ctx.store.engine.connect() as conn:
        infos = overview.subscriptions(conn, ctx.store.schema)
    return "Subscriptions", _subscriptions_table(ctx, infos)


def streams(ctx: Context, number: int, search: str) -> tuple[str, str]:
    found = ctx.store.paginate_streams(
        page_size=ctx.page_size, page_number=number, search=search or None, sort_dir="desc"
    )
    form = (
        f'<form method="get" action="{esc(ctx.base + "/streams")}">'
        f'<input type="search" name="search" value="{esc(search)}" '
        'placeholder="stream name contains">'
        " <button>Search</button></form>"
    )
    rows = [
        [
            link(ctx.base, "/stream", info.stream_uuid, id=info.stream_uuid),
            esc(info.stream_id),
            esc(info.stream_version),
            esc(info.status),
            esc(when(info.created_at)),
        ]
        for info in found.entries
    ]
    listing = (
        table(["stream", "id", "version", "status", "created"], rows, numeric=(1, 2))
        if rows
        else '<p class="muted">No stream matches.</p>'
    )
    plural = "" if found.total_entries == 1 else "s"
    count = f'<p class="muted">{esc(found.total_entries)} stream{plural}</p>'
    pager = _pager(ctx, "/streams", number, found.total_pages, search=search)
    return "Streams", form + count + listing + pager


def _event_rows(ctx: Context, stream_uuid: str, events: list[RecordedEvent]) -> list[list[str]]:
    return [
        [
            link(ctx.base, "/event", e.event_number, stream=stream_uuid, n=e.event_number),
            esc(e.event_type),
            link(ctx.base, "/stream", f"{e.stream_uuid}@{e.stream_version}", id=e.stream_uuid),
            esc(when(e.created_at)),
            f"<code>{esc(_short(payload_text(e.data)))}</code>",
        ]
        for e in events
    ]


def _short(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def stream(ctx: Context, stream_uuid: str, number: int) -> tuple[str, str]:
    try:
        info = ctx.store.stream_info(stream_uuid)
        start = (number - 1) * ctx.page_size + 1
        events = ctx.store.read_stream_forward(stream_uuid, start, ctx.page_size)
    except StreamNotFoundError:
        raise NotFound(f"There is no stream {stream_uuid!r}.") from None
    except StreamDeletedError:
        return f"Stream {stream_uuid}", '<p class="muted">This stream is deleted.</p>'
    pages = max(1, ceil(info.stream_version / ctx.page_size))
    facts = (
        f'<dl class="facts"><dt>version</dt><dd>{esc(info.stream_version)}</dd>'
        f"<dt>id</dt><dd>{esc(info.stream_id)}</dd>"
        f"<dt>created</dt><dd>{esc(when(info.created_at))}</dd></dl>"
    )
    headers = ["#", "type", "origin", "created", "data"]
    listing = (
        table(headers, _event_rows(ctx, stream_uuid, events), numeric=(0,))
        if events
        else '<p class="muted">No events on this page.</p>'
    )
    pager = _pager(ctx, "/stream", number, pages, id=stream_uuid)
    return f"Stream {stream_uuid}", facts + pager + listing + pager


def event(ctx: Context, stream_uuid: str, number: int) -> tuple[str, str]:
    try:
        found = ctx.store.read_stream_forward(stream_uuid, number, 1)
    except (StreamNotFoundError, StreamDeletedError):
        found = []
    if not found or found[0].event_number != number:
        raise NotFound(f"Stream {stream_uuid!r} has no event {number}.")
    e = found[0]
    position = "" if stream_uuid == ALL_STREAM else f" (in {stream_uuid})"
    facts = (
        f'<dl class="facts"><dt>event number</dt><dd>{esc(e.event_number)}{esc(position)}</dd>'
        f"<dt>type</dt><dd>{esc(e.event_type)}</dd>"
        f"<dt>stream</dt><dd>{link(ctx.base, '/stream', e.stream_uuid, id=e.stream_uuid)}"
        f" version {esc(e.stream_version)}</dd>"
        f"<dt>event id</dt><dd><code>{esc(e.event_id)}</code></dd>"
        f"<dt>causation id</dt><dd><code>{esc(e.causation_id)}</code></dd>"
        f"<dt>correlation id</dt><dd><code>{esc(e.correlation_id)}</code></dd>"
        f"<dt>created</dt><dd>{esc(when(e.created_at))}</dd></dl>"
    )
    body = (
        facts
        + f"<h2>Data</h2><pre>{esc(payload_text(e.data))}</pre>"
        + f"<h2>Metadata</h2><pre>{esc(payload_text(e.metadata))}</pre>"
    )
    return f"Event {e.event_number} of {stream_uuid}", body


def parked(ctx: Context, name: str, stream_uuid: str) -> tuple[str, str]:
    with ctx.store.engine.connect() as conn:
        info = overview.find_subscription(conn, ctx.store.schema, stream_uuid, name)
    if info is None:
        raise NotFound(f"There is no subscription {name!r} to {stream_uuid!r}.")
    entries = ctx.store.parked_events(name, stream_uuid)
    target = {"name": name, "stream": stream_uuid}
    actions = ""
    if entries and ctx.csrf is not None:
        actions = (
            "<p>"
            + ctx.form("/parked/replay", target, "Replay all")
            + " "
            + ctx.form("/parked/discard", target, "Discard all")
            + "</p>"
        )
    rows = []
    for entry in entries:
        e = entry.event
        one = {**target, "event": e.event_number}
        buttons = (
            ctx.form("/parked/replay", one, "replay")
            + " "
            + ctx.form("/parked/discard", one, "discard")
        )
        rows.append(
            [
                link(ctx.base, "/event", e.event_number, stream=stream_uuid, n=e.event_number),
                esc(e.event_type),
                link(ctx.base, "/stream", f"{e.stream_uuid}@{e.stream_version}", id=e.stream_uuid),
                esc(when(entry.parked_at)),
                f"<code>{esc(entry.reason)}</code>",
            ]
            + ([buttons] if ctx.csrf is not None else [])
        )
    headers = ["#", "type", "origin", "parked", "reason"] + ([""] if ctx.csrf is not None else [])
    listing = table(headers, rows, numeric=(0,)) if rows else '<p class="muted">Nothing parked.</p>'
    facts = (
        f'<dl class="facts"><dt>checkpoint</dt><dd>{esc(info.last_seen)}</dd>'
        f"<dt>lag</dt><dd>{esc(info.lag)}</dd>"
        f"<dt>behind for</dt><dd>{esc(duration(info.pending_age))}</dd>"
        f"<dt>state</dt><dd>{'running' if info.running else 'stopped'}</dd></dl>"
    )
    return f"Parked events of {name} ({stream_uuid})", facts + actions + listing
