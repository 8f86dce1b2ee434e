"""Declarative models of the event store's tables.

The layout is the reference's (EventStore v1.4, schema version 1.3.2) column for
column, so a database initialised by either library is usable by the other.
The models carry no schema: the store picks one at run time, through
``schema_translate_map={None: "<schema>"}``, so one set of models serves any
number of stores side by side. Query them the same way::

    with engine.connect().execution_options(
        schema_translate_map={None: "tenant1"}
    ) as conn:
        conn.execute(select(Stream.stream_uuid))

``data`` and ``metadata`` columns are ``bytea`` here; a store created with
``column_data_type="jsonb"`` has ``jsonb`` columns instead
(:func:`sqlalchemy_eventstore.models.metadata_for` builds that variant).

Beyond the reference's tables, :data:`ADDITION_TABLES` names this package's own
additions (``parked_events``, ``unsequenced``, ``sequencer_state``): the reference
never reads them, and they are created apart from its layout
(``storage.schema.additions_ddl``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ADDITION_TABLES",
    "Base",
    "Event",
    "ParkedEventRow",
    "SchemaMigration",
    "SequencerState",
    "Snapshot",
    "Stream",
    "StreamEvent",
    "Subscription",
    "UnsequencedRow",
    "metadata",
    "metadata_for",
]

metadata = MetaData()


class Base(DeclarativeBase):
    """Declarative base of the event store's models, on their own ``metadata``."""

    metadata = metadata


class Stream(Base):
    """One row per stream; ``stream_id`` 0 is the global ``$all`` stream."""

    __tablename__ = "streams"
    __table_args__ = (Index("ix_streams_stream_uuid", "stream_uuid", unique=True),)

    stream_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    stream_uuid: Mapped[str] = mapped_column(Text, nullable=False)
    stream_version: Mapped[int] = mapped_column(
        BigInteger, nullable=False, server_default=text("0")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """An immutable event: its identity, type and serialized payload."""

    __tablename__ = "events"

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    causation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    correlation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    metadata_: Mapped[bytes | None] = mapped_column("metadata", LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class StreamEvent(Base):
    """An event's place in a stream: its own, ``$all`` (stream_id 0), or a link."""

    __tablename__ = "stream_events"
    __table_args__ = (
        PrimaryKeyConstraint("event_id", "stream_id"),
        Index("ix_stream_events", "stream_id", "stream_version", unique=True),
    )

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("events.event_id"))
    stream_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("streams.stream_id"))
    stream_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    original_stream_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("streams.stream_id")
    )
    original_stream_version: Mapped[int | None] = mapped_column(BigInteger)


class Subscription(Base):
    """A persistent subscription's checkpoint (``last_seen``)."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index(
            "ix_subscriptions_stream_uuid_subscription_name",
            "stream_uuid",
            "subscription_name",
            unique=True,
        ),
    )

    subscription_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    stream_uuid: Mapped[str] = mapped_column(Text, nullable=False)
    subscription_name: Mapped[str] = mapped_column(Text, nullable=False)
    last_seen: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Snapshot(Base):
    """The latest snapshot of a source."""

    __tablename__ = "snapshots"

    source_uuid: Mapped[str] = mapped_column(Text, primary_key=True)
    source_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    source_type: Mapped[str] = mapped_column(Text, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    metadata_: Mapped[bytes | None] = mapped_column("metadata", LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class SchemaMigration(Base):
    """Which schema versions of the reference's numbering have been applied."""

    __tablename__ = "schema_migrations"
    __table_args__ = (PrimaryKeyConstraint("major_version", "minor_version", "patch_version"),)

    major_version: Mapped[int] = mapped_column(Integer)
    minor_version: Mapped[int] = mapped_column(Integer)
    patch_version: Mapped[int] = mapped_column(Integer)
    migrated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class ParkedEventRow(Base):
    """An event a persistent subscription parked (dead letter); not the reference's.

    ``event_number`` is the event's position in the subscribed stream (the
    global position for ``$all``). Rows go with their subscription (ON DELETE
    CASCADE), so the reference's own subscription deletion still works.
    ``event_id`` has no foreign key to ``events``: a hard delete of the event's
    stream must not be refused because the event was parked.
    """

    __tablename__ = "parked_events"
    __table_args__ = (PrimaryKeyConstraint("subscription_id", "event_number"),)

    subscription_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("subscriptions.subscription_id", ondelete="CASCADE")
    )
    event_number: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    partition_key: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    parked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    replay_requested: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )


class UnsequencedRow(Base):
    """An append waiting to be numbered into ``$all`` (``global_order="sequencer"``);
    not the reference's.

    One row per append: its stream and the versions it wrote. The sequencer
    (``storage.sequencer_sql``) links the events into ``$all`` in ``seq``
    order and deletes the row in the same transaction.
    """

    __tablename__ = "unsequenced"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    stream_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    first_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_version: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SequencerState(Base):
    """How far the sequencer has numbered the queue (``global_order="sequencer"``);
    not the reference's.

    One live row, the highest ``run``: each numbering run inserts the next and
    deletes the one it read, so reading the state is one backward index step
    to a live row, however many runs a long-running transaction keeps from
    being vacuumed (an updated row would make every reader walk its versions).
    ``numbered_through``: every queue row up to this ``seq`` was numbered or
    was invisible when passed; those invisible ones are ``gaps``, each with a
    transaction id (``gap_horizons``, NULL: this row version's own ``xmin``)
    below which its writer's transaction lies. A gap is looked up until found
    committed or until every transaction below its horizon has ended. So the
    sequencer never walks numbered queue rows (see ``storage.sequencer_sql``).
    """

    __tablename__ = "sequencer_state"

    run: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    numbered_through: Mapped[int] = mapped_column(BigInteger, nullable=False)
    gaps: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), nullable=False, server_default=text("'{}'")
    )
    gap_horizons: Mapped[list[int | None]] = mapped_column(
        ARRAY(BigInteger), nullable=False, server_default=text("'{}'")
    )


#: This package's own tables, beside the reference's (created by
#: ``storage.schema.additions_ddl``, never by the reference's layout).
ADDITION_TABLES: frozenset[str] = frozenset({"parked_events", "sequencer_state", "unsequenced"})


def metadata_for(
    column_data_type: str, schema: str | None = None, *, foreign_keys: bool = True
) -> MetaData:
    """A copy of :data:`metadata` whose data/metadata columns have the given type.

    ``column_data_type`` is ``"bytea"`` or ``"jsonb"``; ``schema``, when given,
    is set on every copied table. ``foreign_keys=False`` leaves out the three
    foreign keys of ``stream_events`` (the opt-in variant without them: the
    append statement itself guarantees what they check). The shared
    :data:`metadata` is never modified.
    """
    if column_data_type not in ("bytea", "jsonb"):
        raise ValueError(f"column_data_type must be 'bytea' or 'jsonb', got {column_data_type!r}")
    copy = MetaData()
    for table in metadata.sorted_tables:
        if schema is None:
            table.to_metadata(copy)
        else:
            table.to_metadata(copy, schema=schema)
    payload_type = JSONB() if column_data_type == "jsonb" else BYTEA()
    for name in ("events", "snapshots"):
        for column in ("data", "metadata"):
            key = f"{schema}.{name}" if schema else name
            copy.tables[key].c[column].type = payload_type
    if not foreign_keys:
        stream_events = copy.tables[f"{schema}.stream_events" if schema else "stream_events"]
        for constraint in list(stream_events.foreign_key_constraints):
            stream_events.constraints.discard(constraint)
        for fk_column in stream_events.c:
            fk_column.foreign_keys.clear()
    return copy
