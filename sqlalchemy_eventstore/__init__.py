"""sqlalchemy_eventstore: an event store for PostgreSQL, as a SQLAlchemy extension.

A Python port of the Elixir library EventStore (v1.4): streams with optimistic
concurrency, the global ``$all`` stream, snapshots and subscriptions, on tables
interchangeable with the reference's.
"""

from ._types import (
    ALL_STREAM,
    ANY_VERSION,
    CURRENT,
    NO_STREAM,
    ORIGIN,
    STREAM_EXISTS,
    EventData,
    Page,
    ParkedEvent,
    RecordedEvent,
    SnapshotData,
    StreamInfo,
)
from .errors import (
    AlreadySubscribedError,
    CannotAppendToAllStreamError,
    CannotDeleteAllStreamError,
    DuplicateEventError,
    EventNotFoundError,
    EventStoreError,
    HardDeletesNotEnabledError,
    SnapshotNotFoundError,
    StoreTimeoutError,
    StreamDeletedError,
    StreamExistsError,
    StreamNotFoundError,
    SubscriptionAlreadyExistsError,
    TooManySubscribersError,
    UnexpectedAckError,
    WrongExpectedVersionError,
)
from .serializers import JsonbSerializer, JsonSerializer, MarshmallowSerializer, Serializer
from .stats import StoreStats, SubscriptionStats
from .store import EventStore
from .subscriptions.handle import Subscription

__all__ = [
    "ALL_STREAM",
    "ANY_VERSION",
    "CURRENT",
    "NO_STREAM",
    "ORIGIN",
    "STREAM_EXISTS",
    "EventData",
    "EventStore",
    "JsonSerializer",
    "JsonbSerializer",
    "MarshmallowSerializer",
    "Page",
    "ParkedEvent",
    "RecordedEvent",
    "Serializer",
    "SnapshotData",
    "StoreStats",
    "StreamInfo",
    "Subscription",
    "SubscriptionStats",
    # errors (also in sqlalchemy_eventstore.errors)
    "AlreadySubscribedError",
    "CannotAppendToAllStreamError",
    "CannotDeleteAllStreamError",
    "DuplicateEventError",
    "EventNotFoundError",
    "EventStoreError",
    "HardDeletesNotEnabledError",
    "SnapshotNotFoundError",
    "StoreTimeoutError",
    "StreamDeletedError",
    "StreamExistsError",
    "StreamNotFoundError",
    "SubscriptionAlreadyExistsError",
    "TooManySubscribersError",
    "UnexpectedAckError",
    "WrongExpectedVersionError",
]

__version__ = "0.1.0"
