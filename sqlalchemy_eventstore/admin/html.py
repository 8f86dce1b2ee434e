"""HTML building blocks for the admin page: every value goes through :func:`esc`.

String templates and :func:`html.escape`, nothing else: the page needs no
template engine, and keeping each stored value behind one escaping function
makes "an event holding ``<script>`` renders as text" easy to check.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

__all__ = ["esc", "link", "page", "payload_text", "table", "when"]

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 10px 24px; display: flex; gap: 24px;
  align-items: baseline; }
header a { color: #cfd8ea; text-decoration: none; } header a:hover { color: #fff; }
header .title { font-weight: 600; color: #fff; }
main { padding: 16px 24px; max-width: 1200px; }
h1 { font-size: 20px; margin: 8px 0 16px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e6eb;
  vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #fff; border: 1px solid #e3e6eb; padding: 10px; overflow: auto;
  white-space: pre-wrap; word-break: break-word; }
.facts { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; }
.facts dt { color: #5b6475; } .facts dd { margin: 0; }
.pager { margin: 12px 0; display: flex; gap: 12px; align-items: center; }
.notice { padding: 8px 12px; border-radius: 4px; margin-bottom: 12px; }
.notice.ok { background: #e3f4e8; } .notice.error { background: #fbe4e4; }
.lag { font-weight: 600; color: #a33; } .ok { color: #226b3a; }
.state-running { color: #226b3a; } .state-stopped { color: #8a6100; }
form.inline { display: inline; margin: 0; }
input[type=search] { padding: 4px 8px; width: 280px; }
input[type=number] { width: 90px; }
button { padding: 3px 10px; cursor: pointer; }
.muted { color: #5b6475; }
"""


def esc(value: Any) -> str:
    """Any value as HTML text (quotes too, so it is safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def link(base: str, path: str, text: Any, **query: Any) -> str:
    """``<a href=base+path?query>text</a>``, every part escaped."""
    params = {k: v for k, v in query.items() if v is not None and v != ""}
    href = base + path + (("?" + urlencode(params)) if params else "")
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.isoformat(sep=" ", timespec="seconds")


def payload_text(value: Any) -> str:
    """A stored payload, pretty-printed: JSON when it is JSON, else text or base64."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "(binary, base64) " + base64.b64encode(raw).decode("ascii")
        try:
            value = json.loads(text)
        except ValueError:
            return text
    if value is None:
        return "null"
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()
) -> str:
    """A table of already-escaped cells; ``numeric`` columns align right."""
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str, *, base: str, brand: str, notice: str = "") -> str:
    """A whole document: the navigation, a notice if any, the body (already HTML)."""
    nav = " ".join(
        link(base, path, text)
        for path, text in (
            ("/", "Overview"),
            ("/streams", "Streams"),
            ("/subscriptions", "Subscriptions"),
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · {esc(brand)}</title><style>{_STYLE}</style></head>"
        f'<body><header><span class="title">{esc(brand)}</span>{nav}</header>'
        f"<main>{notice}<h1>{esc(title)}</h1>{body}</main></body></html>"
    )
