"""A subscription's parked events: list, replay, discard."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.engine import URL

from .. import _validation
from .._types import ALL_STREAM, ParkedEvent
from ..serializers import JsonbSerializer, JsonSerializer
from ..storage import parked
from ..storage.schema import additions_missing, quote_ident
from ._common import (
    CommandError,
    _check_schema,
    _column_type,
    _connection,
    _failures,
    _parse_url,
    _say,
)

__all__ = ["parked_discard", "parked_list", "parked_replay"]


def _parked_target(
    conn: Connection, given: URL, schema: str, subscription_name: str, stream_uuid: str
) -> tuple[str, int]:
    """(the data column type, the subscription id), or a CommandError saying what is missing."""
    column_type = _column_type(conn, given, schema)
    if additions_missing(conn, schema):
        raise CommandError(
            f'schema "{schema}" has no parked_events table: run `eventstore migrate` first'
        )
    subscription_id = conn.execute(
        text(
            f"SELECT subscription_id FROM {quote_ident(schema)}.subscriptions "
            "WHERE stream_uuid = :stream AND subscription_name = :name"
        ),
        {"stream": stream_uuid, "name": subscription_name},
    ).scalar()
    if subscription_id is None:
        raise CommandError(
            f'schema "{schema}" has no subscription "{subscription_name}" to {stream_uuid}'
        )
    return column_type, int(subscription_id)


def _check_parked_args(
    subscription_name: str, stream_uuid: str, event_numbers: Sequence[int] | None = None
) -> list[int] | None:
    try:
        _validation.check_stream_uuid(subscription_name, "subscription name")
        _validation.check_stream_uuid(stream_uuid, "stream")
        if event_numbers is not None:
            event_numbers = list(event_numbers)
        return _validation.check_event_numbers(event_numbers, "event numbers")
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _json_payload(value: Any) -> tuple[Any, str]:
    """A payload as JSON can hold it, and its format: json, text or base64."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        return value, "json"
    raw = bytes(value)
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _parked_json(entry: ParkedEvent, replay_requested: bool) -> str:
    event = entry.event
    data, data_format = _json_payload(event.data)
    metadata, metadata_format = _json_payload(event.metadata)
    return json.dumps(
        {
            "subscription_name": entry.subscription_name,
            "subscription_stream": entry.stream_uuid,
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
            "created_at": event.created_at.isoformat(),
            "reason": entry.reason,
            "parked_at": entry.parked_at.isoformat(),
            "replay_requested": replay_requested,
        },
        default=str,
    )


def parked_list(
    url: str | URL,
    subscription_name: str,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
    as_json: bool = False,
) -> list[ParkedEvent]:
    """The parked events of a subscription, in event order; printed unless ``quiet``.

    One line per event: its number in the subscribed stream, type, original
    stream and version, when it was parked and why (``--json``: one JSON object
    per line, payloads the serializer could not read given as text or base64).
    An unknown subscription is a failure here, so that a mistyped name shows.
    """
    given, url_ = _parse_url(url)
    _check_schema(schema)
    _check_parked_args(subscription_name, stream_uuid)
    with (
        _failures(f'cannot list the parked events of "{subscription_name}"', given),
        _connection(url_) as conn,
    ):
        column_type, subscription_id = _parked_target(
            conn, given, schema, subscription_name, stream_uuid
        )
        serializer = JsonbSerializer() if column_type == "jsonb" else JsonSerializer()
        found = parked.list_parked(
            conn, schema, column_type, serializer, stream_uuid, subscription_name
        )
        requested = {
            ref.event_number for ref in parked.replay_requested(conn, schema, subscription_id)
        }
    if as_json:
        for entry in found:
            _say(quiet, _parked_json(entry, entry.event.event_number in requested))
        return found
    _say(
        quiet,
        f'Subscription "{subscription_name}" to {stream_uuid} (schema "{schema}"): '
        f"{len(found)} parked event{'' if len(found) == 1 else 's'}",
    )
    for entry in found:
        event = entry.event
        mark = "  [replay requested]" if event.event_number in requested else ""
        _say(
            quiet,
            f"  {event.event_number:>8}  {event.event_type}  "
            f"{event.stream_uuid}@{event.stream_version}  "
            f"{entry.parked_at.isoformat(timespec='seconds')}  "
            f"{' '.join(entry.reason.split())}{mark}",
        )
    return found


def _parked_change(
    action: str,
    url: str | URL,
    subscription_name: str,
    schema: str,
    stream_uuid: str,
    event_numbers: Sequence[int] | None,
) -> int:
    given, url_ = _parse_url(url)
    _check_schema(schema)
    numbers = _check_parked_args(subscription_name, stream_uuid, event_numbers)
    change = parked.request_replay if action == "replay" else parked.discard
    with (
        _failures(f'cannot {action} the parked events of "{subscription_name}"', given),
        _connection(url_) as conn,
        conn.begin(),
    ):
        _parked_target(conn, given, schema, subscription_name, stream_uuid)
        return change(conn, schema, stream_uuid, subscription_name, numbers)


def parked_replay(
    url: str | URL,
    subscription_name: str,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
    event_numbers: Sequence[int] | None = None,
) -> int:
    """Queue a subscription's parked events (all, or those numbered) for redelivery.

    The process running the subscription delivers them in order (at once when
    it is live, else when it next starts). Returns how many were queued.
    """
    count = _parked_change("replay", url, subscription_name, schema, stream_uuid, event_numbers)
    _say(
        quiet,
        f'{count} parked event{"" if count == 1 else "s"} of "{subscription_name}" '
        "queued for replay.",
    )
    return count


def parked_discard(
    url: str | URL,
    subscription_name: str,
    schema: str = "public",
    quiet: bool = False,
    *,
    stream_uuid: str = ALL_STREAM,
    event_numbers: Sequence[int] | None = None,
) -> int:
    """Remove a subscription's parked events (all, or those numbered) undelivered; how many."""
    count = _parked_change("discard", url, subscription_name, schema, stream_uuid, event_numbers)
    _say(
        quiet,
        f'{count} parked event{"" if count == 1 else "s"} of "{subscription_name}" discarded.',
    )
    return count
