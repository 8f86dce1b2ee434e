"""Commands for running a store: ``status``, ``tail``, and the ``subscriptions`` list and changes.

They answer the operator's questions: is a subscriber behind, by how many
events, is it running, what is parked; what is being appended right now.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy.engine import URL

from .. import _validation
from .._format import duration
from .._raw import RawSerializer
from .._types import ALL_STREAM, RecordedEvent
from ..storage import overview
from ..storage.overview import StoreOverview, SubscriptionInfo
from ..store import EventStore
from ._common import (
    CommandError,
    _check_schema,
    _column_type,
    _connection,
    _engine,
    _failures,
    _parse_url,
    _say,
    _show,
)
from .parked import _json_payload

__all__ = [
    "status",
    "subscription_delete",
    "subscription_reset",
    "subscriptions_list",
    "tail",
]


def _name(value: str, what: str) -> str:
    try:
        return _validation.check_stream_uuid(value, what)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _info_json(info: SubscriptionInfo) -> dict[str, Any]:
    return {
        "subscription_name": info.subscription_name,
        "stream_uuid": info.stream_uuid,
        "last_seen": info.last_seen,
        "head": info.head,
        "lag": info.lag,
        "parked": info.parked,
        "running": info.running,
        "holder_pid": info.holder_pid,
        "created_at": info.created_at.isoformat(),
        "pending_age": info.pending_age,
    }


def _table(infos: list[SubscriptionInfo]) -> list[str]:
    """The subscriptions as aligned text lines (a header first)."""
    rows = [("subscription", "stream", "checkpoint", "lag", "parked", "state", "behind for")]
    for info in infos:
        state = f"running (pid {info.holder_pid})" if info.running else "stopped"
        parked = "-" if info.parked is None else str(info.parked)
        rows.append(
            (
                info.subscription_name,
                info.stream_uuid,
                str(info.last_seen),
                str(info.lag),
                parked,
                state,
                duration(info.pending_age),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 3, 4}
    return [
        "  "
        + "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def status(
    url: str | URL,
    schema: str = "public",
    quiet: bool = False,
    *,
    as_json: bool = False,
    max_lag: int | None = None,
) -> StoreOverview:
    """The head of ``$all``, the number of streams, each subscription with its
    checkpoint, lag (events of its stream after the checkpoint), parked events,
    whether a subscriber runs it and for how long it has had events waiting
    (the age of the oldest event after its checkpoint); printed unless
    ``quiet`` (``as_json``: one JSON document).

    With ``max_lag``, a health check: once printed, any subscription more than
    ``max_lag`` events behind fails the command, naming each.

    Returns:
        The :class:`~sqlalchemy_eventstore.storage.overview.StoreOverview`.

    Raises:
        CommandError: A bad URL, an unreachable server, a schema without an
            event store, a negative ``max_lag``, or a subscription lagging more
            than ``max_lag`` events.
    """
    if max_lag is not None and (
        isinstance(max_lag, bool) or not isinstance(max_lag, int) or max_lag < 0
    ):
        raise CommandError(f"--max-lag must be a whole number >= 0, got {max_lag!r}")
    given, url_ = _parse_url(url)
    _check_schema(schema)
    with (
        _failures(f'cannot read the status of schema "{schema}"', given),
        _connection(url_) as conn,
    ):
        _column_type(conn, given, schema)
        found = overview.store_overview(conn, schema)
    if as_json:
        document = {
            "schema": found.schema,
            "head": found.head,
            "streams": found.streams,
            "subscriptions": [_info_json(info) for info in found.subscriptions],
        }
        _say(quiet, json.dumps(document))
    else:
        _say(quiet, f'EventStore: {_show(given)} schema "{schema}"')
        _say(quiet, f"  $all head: {found.head}   streams: {found.streams}")
        count = len(found.subscriptions)
        _say(quiet, f"\n  {count} subscription{'' if count == 1 else 's'}")
        if found.subscriptions:
            for line in _table(found.subscriptions):
                _say(quiet, line)
    if max_lag is not None:
        _check_lag(found, max_lag)
    return found


def _check_lag(found: StoreOverview, max_lag: int) -> None:
    """Fail naming every subscription more than ``max_lag`` events behind."""
    behind = [info for info in found.subscriptions if info.lag > max_lag]
    if behind:
        named = ", ".join(
            f'"{i.subscription_name}" on {i.stream_uuid} ({i.lag} behind)' for i in behind
        )
        count = len(behind)
        raise CommandError(
            f"{count} subscription{'' if count == 1 else 's'} more than {max_lag} "
            f"event{'' if max_lag == 1 else 's'} behind: {named}"
        )


def subscriptions_list(
    url: str | URL, schema: str = "public", quiet: bool = False, *, as_json: bool = False
) -> list[SubscriptionInfo]:
    """Every persistent subscription with its checkpoint, lag, parked count and state
    (``as_json``: one JSON object per line).

    Returns:
        One ``SubscriptionInfo`` each, by stream then name.

    Raises:
        CommandError: A bad URL, an unreachable server, a schema without an
            event store.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    with (
        _failures(f'cannot list the subscriptions of schema "{schema}"', given),
        _connection(url_) as conn,
    ):
        _column_type(conn, given, schema)
        found = overview.subscriptions(conn, schema)
    if as_json:
        for info in found:
            _say(quiet, json.dumps(_info_json(info)))
        return found
    if not found:
        _say(quiet, f'Schema "{schema}" has no subscriptions.')
        return found
    for line in _table(found):
        _say(quiet, line)
    return found


def _change(
    action: str,
    url: str | URL,
    subscription_name: str,
    schema: str,
    stream_uuid: str,
    to: int | None,
) -> SubscriptionInfo:
    given, url_ = _parse_url(url)
    _check_schema(schema)
    name = _name(subscription_name, "subscription name")
    stream = _name(stream_uuid, "stream")
    with (
        _failures(f'cannot {action} subscription "{name}"', given),
        _connection(url_) as conn,
        conn.begin(),
    ):
        _column_type(conn, given, schema)
        info = overview.find_subscription(conn, schema, stream, name)
        if info is None:
            raise CommandError(f'schema "{schema}" has no subscription "{name}" to {stream}')
        try:
            if to is None:
                overview.delete_subscription(conn, schema, info)
            else:
                if to > info.head:
                    raise CommandError(
                        f"cannot reset to {to}: the head of {stream} is {info.head} "
                        "(a checkpoint past the head would skip events)"
                    )
                overview.reset_subscription(conn, schema, info, to)
        except overview.SubscriptionBusyError as error:
            raise CommandError(str(error)) from None
    return info


def subscription_reset(
    url: str | URL,
    subscription_name: str,
    to: int,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
) -> SubscriptionInfo:
    """Move a subscription's checkpoint to ``to`` (0: from the start); its subscriber
    then receives the events after it.

    Returns:
        The subscription as it was before the reset.

    Raises:
        CommandError: No such subscription; a subscriber runs it (it would
            overwrite the change); ``to`` is negative or past the head of the
            stream; or the database failed.
    """
    if isinstance(to, bool) or not isinstance(to, int) or to < 0:
        raise CommandError(f"the position to reset to must be an integer >= 0, got {to!r}")
    info = _change("reset", url, subscription_name, schema, stream_uuid, to)
    _say(
        quiet,
        f'Subscription "{info.subscription_name}" to {info.stream_uuid} reset from '
        f"{info.last_seen} to {to}.",
    )
    return info


def subscription_delete(
    url: str | URL,
    subscription_name: str,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
) -> SubscriptionInfo:
    """Delete a subscription: its checkpoint and its parked events.

    Returns:
        The subscription as it was.

    Raises:
        CommandError: No such subscription; a subscriber runs it; or the
            database failed.
    """
    info = _change("delete", url, subscription_name, schema, stream_uuid, None)
    _say(quiet, f'Subscription "{info.subscription_name}" to {info.stream_uuid} deleted.')
    return info


# -- tail ------------------------------------------------------------------------------


def _readable(value: Any) -> tuple[Any, str]:
    """A payload for JSON output: decoded JSON when it is JSON, else text or base64."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return json.loads(bytes(value).decode("utf-8")), "json"
        except (UnicodeDecodeError, ValueError):
            pass
    return _json_payload(value)


def _event_json(event: RecordedEvent) -> str:
    data, data_format = _readable(event.data)
    metadata, metadata_format = _readable(event.metadata)
    return json.dumps(
        {
            "event_number": event.event_number,
            "event_id": event.event_id,
            "stream_uuid": event.stream_uuid,
            "stream_version": event.stream_version,
            "event_type": event.event_type,
            "data": data,
            "data_format": data_format,
            "metadata": metadata,
            "metadata_format": metadata_format,
            "causation_id": event.causation_id,
            "correlation_id": event.correlation_id,
            "created_at": _iso(event.created_at),
        },
        default=str,
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _event_line(event: RecordedEvent) -> str:
    data, _ = _readable(event.data)
    shown = json.dumps(data, default=str, ensure_ascii=False)
    return (
        f"{_iso(event.created_at)}  #{event.event_number}  "
        f"{event.stream_uuid}@{event.stream_version}  {event.event_type}  {shown}"
    )


def tail(
    url: str | URL,
    stream_uuid: str = ALL_STREAM,
    schema: str = "public",
    quiet: bool = False,
    *,
    as_json: bool = False,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the events appended to a stream (``$all`` by default) as they come, one
    line each, flushed, until ``stop`` is set; how many it printed.

    A transient subscription: only events committed after it started are
    shown. ``as_json`` prints one JSON object per line. A note saying what is
    followed goes to standard error once subscribed (not when ``quiet``).

    Args:
        url: The database URL.
        stream_uuid: The stream to follow (``$all``: every stream).
        schema: The event store's schema.
        quiet: No note on standard error.
        as_json: JSON lines (``stream_uuid``, ``event_number``, ``event_type``,
            ``data``, ...) instead of text lines.
        stop: Set it to end the command (the console command sets it on
            SIGINT and SIGTERM).
        out: Where to print (standard output by default).

    Returns:
        How many events it printed.

    Raises:
        CommandError: A bad URL, an unreachable server, a schema without an
            event store, no subscription within 30 seconds.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    stream = _name(stream_uuid, "stream")
    stop = stop if stop is not None else threading.Event()
    printed = 0
    lock = threading.Lock()

    def show(events: list[Any]) -> None:
        nonlocal printed
        target = out if out is not None else sys.stdout
        with lock:
            for event in events:
                print(_event_json(event) if as_json else _event_line(event), file=target)
                printed += 1
            target.flush()

    with _failures(f"cannot follow {stream}", given):
        with _connection(url_) as conn:
            column_type = _column_type(conn, given, schema)
        engine = _engine(url_.update_query_dict({"application_name": "eventstore-tail"}))
        try:
            with EventStore(
                engine,
                schema=schema,
                column_data_type=column_type,
                serializer=RawSerializer(column_type),
                name="eventstore-tail",
            ) as store:
                subscription = store.subscribe(stream, handler=show)
                if not subscription.wait_subscribed(timeout=30):
                    raise CommandError(f"cannot follow {stream}: not subscribed after 30 seconds")
                if not quiet:
                    print(
                        f'Following {stream} in schema "{schema}" of {_show(given)}; '
                        "Ctrl-C to stop.",
                        file=sys.stderr,
                        flush=True,
                    )
                while not stop.wait(0.5):
                    pass
                subscription.unsubscribe()
        finally:
            engine.dispose()
    return printed
