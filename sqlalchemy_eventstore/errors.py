"""Exceptions raised by the event store.

Every domain outcome of the reference library (``{:error, :reason}``) is an
exception here. Each class carries the reference's atom name as its ``reason``
class attribute, so code ported from Elixir can still switch on it. Misuse
(bad arguments) raises the builtin ``ValueError``/``TypeError`` instead.
"""

from __future__ import annotations

__all__ = [
    "EventStoreError",
    "WrongExpectedVersionError",
    "StreamExistsError",
    "StreamNotFoundError",
    "StreamDeletedError",
    "CannotAppendToAllStreamError",
    "CannotDeleteAllStreamError",
    "HardDeletesNotEnabledError",
    "DuplicateEventError",
    "EventNotFoundError",
    "SnapshotNotFoundError",
    "SubscriptionAlreadyExistsError",
    "TooManySubscribersError",
    "AlreadySubscribedError",
    "UnexpectedAckError",
    "StoreTimeoutError",
]


class EventStoreError(Exception):
    """Base class of every event store error; ``reason`` names the outcome."""

    reason: str = "error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message if message is not None else self.reason)


class WrongExpectedVersionError(EventStoreError):
    """The stream is not at the expected version (optimistic concurrency)."""

    reason = "wrong_expected_version"


class StreamExistsError(EventStoreError):
    """``NO_STREAM`` was expected but the stream already exists."""

    reason = "stream_exists"


class StreamNotFoundError(EventStoreError):
    """The stream does not exist (or was hard deleted)."""

    reason = "stream_not_found"


class StreamDeletedError(EventStoreError):
    """The stream was soft deleted: it can no longer be read or appended to."""

    reason = "stream_deleted"


class CannotAppendToAllStreamError(EventStoreError):
    """Events cannot be appended or linked to the ``$all`` stream."""

    reason = "cannot_append_to_all_stream"


class CannotDeleteAllStreamError(EventStoreError):
    """The ``$all`` stream cannot be deleted."""

    reason = "cannot_delete_all_stream"


class HardDeletesNotEnabledError(EventStoreError):
    """A hard delete was asked of a store created without ``enable_hard_deletes``."""

    reason = "not_supported"


class DuplicateEventError(EventStoreError):
    """An event id is already stored, or the event is already linked to the stream."""

    reason = "duplicate_event"


class EventNotFoundError(EventStoreError):
    """An event id given to ``link_to_stream`` is not stored."""

    reason = "not_found"


class SnapshotNotFoundError(EventStoreError):
    """No snapshot is recorded for the source."""

    reason = "snapshot_not_found"


class SubscriptionAlreadyExistsError(EventStoreError):
    """A single-subscriber subscription already has its subscriber."""

    reason = "subscription_already_exists"


class TooManySubscribersError(EventStoreError):
    """The subscription already has ``concurrency_limit`` subscribers."""

    reason = "too_many_subscribers"


class AlreadySubscribedError(EventStoreError):
    """The same handler is already subscribed to this subscription."""

    reason = "already_subscribed"


class UnexpectedAckError(EventStoreError):
    """An acknowledgement named an event the subscriber was never sent."""

    reason = "unexpected_ack"


class StoreTimeoutError(EventStoreError, TimeoutError):
    """A call waited on the database longer than its ``timeout``; nothing was written.

    Also a built-in :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """

    reason = "timeout"
