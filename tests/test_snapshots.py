"""Snapshots: record, read, replace, delete — with the JSON (bytea) and JSONB serializers.

Ports the reference's storage/snapshot_test.exs and the snapshot part of
multi_event_store_test.exs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timezone

import pytest

from sqlalchemy_eventstore import SnapshotData
from sqlalchemy_eventstore.errors import EventStoreError, SnapshotNotFoundError
from sqlalchemy_eventstore.serializers import type_name


@dataclass
class ExampleData:
    data: str
    count: int = 0


@pytest.fixture(params=["bytea", "jsonb"])
def snap_store(request, make_store, driver):
    """A store per column data type (JsonSerializer / JsonbSerializer) and driver."""
    return make_store(driver=driver, column_data_type=request.param)


def snapshot(source_uuid: str, version: int = 1, **overrides) -> SnapshotData:
    fields = {
        "source_uuid": source_uuid,
        "source_version": version,
        "source_type": "Account",
        "data": {"balance": 100 * version, "owner": "alice", "tags": ["a", "b"]},
        "metadata": {"user": "someuser@example.com", "version": version},
    }
    fields.update(overrides)
    return SnapshotData(**fields)


def test_read_snapshot_when_none_exists(snap_store):
    with pytest.raises(SnapshotNotFoundError) as info:
        snap_store.read_snapshot(str(uuid.uuid4()))
    assert info.value.reason == "snapshot_not_found"
    assert isinstance(info.value, EventStoreError)


def test_record_then_read_snapshot(snap_store):
    source_uuid = str(uuid.uuid4())
    recorded = snapshot(source_uuid)

    assert snap_store.record_snapshot(recorded) is None
    read = snap_store.read_snapshot(source_uuid)

    assert isinstance(read, SnapshotData)
    assert read.source_uuid == source_uuid
    assert read.source_version == 1
    assert read.source_type == "Account"
    assert read.data == recorded.data
    assert read.metadata == recorded.metadata
    assert read.created_at is not None
    assert read.created_at.tzinfo == timezone.utc


def test_snapshot_without_metadata(snap_store):
    snap_store.record_snapshot(SnapshotData("source", 7, "Account", {"x": 1}))

    read = snap_store.read_snapshot("source")

    assert (read.source_version, read.data, read.metadata) == (7, {"x": 1}, None)


def test_record_snapshot_replaces_an_older_one(snap_store):
    source_uuid = str(uuid.uuid4())
    snap_store.record_snapshot(snapshot(source_uuid, 1))

    snap_store.record_snapshot(
        snapshot(source_uuid, 2, source_type="AccountV2", metadata={"replaced": True})
    )

    read = snap_store.read_snapshot(source_uuid)
    assert read.source_uuid == source_uuid
    assert read.source_version == 2
    assert read.source_type == "AccountV2"
    assert read.data == {"balance": 200, "owner": "alice", "tags": ["a", "b"]}
    assert read.metadata == {"replaced": True}


def test_replacing_with_no_metadata_clears_it(snap_store):
    snap_store.record_snapshot(snapshot("s", 1))
    snap_store.record_snapshot(snapshot("s", 2, metadata=None))

    assert snap_store.read_snapshot("s").metadata is None


def test_snapshots_are_kept_per_source(snap_store):
    snap_store.record_snapshot(snapshot("source-1", 1, data={"who": 1}))
    snap_store.record_snapshot(snapshot("source-2", 5, data={"who": 2}))

    assert snap_store.read_snapshot("source-1").data == {"who": 1}
    assert snap_store.read_snapshot("source-2").source_version == 5

    snap_store.delete_snapshot("source-1")

    with pytest.raises(SnapshotNotFoundError):
        snap_store.read_snapshot("source-1")
    assert snap_store.read_snapshot("source-2").data == {"who": 2}


def test_delete_existing_snapshot(snap_store):
    source_uuid = str(uuid.uuid4())
    snap_store.record_snapshot(snapshot(source_uuid))

    assert snap_store.delete_snapshot(source_uuid) is None

    with pytest.raises(SnapshotNotFoundError):
        snap_store.read_snapshot(source_uuid)


def test_delete_missing_snapshot_is_fine(snap_store):
    source_uuid = str(uuid.uuid4())

    assert snap_store.delete_snapshot(source_uuid) is None
    assert snap_store.delete_snapshot(source_uuid) is None
    with pytest.raises(SnapshotNotFoundError):
        snap_store.read_snapshot(source_uuid)


def test_snapshot_can_be_recorded_again_after_delete(snap_store):
    snap_store.record_snapshot(snapshot("s", 3))
    snap_store.delete_snapshot("s")
    snap_store.record_snapshot(snapshot("s", 4))

    assert snap_store.read_snapshot("s").source_version == 4


@pytest.mark.parametrize(
    "data",
    [
        {"nested": {"deep": [1, 2, {"x": None}]}},
        [1, "two", 3.5, False],
        "just a string",
        "123",
        "",
        42,
        True,
        None,
    ],
    ids=repr,
)
def test_snapshot_data_of_any_json_kind_round_trips(snap_store, data):
    snap_store.record_snapshot(SnapshotData("s", 1, "Kind", data, metadata=data))

    read = snap_store.read_snapshot("s")

    assert read.data == data
    assert type(read.data) is type(data)
    assert read.metadata == data


def test_snapshot_of_a_dataclass_reads_back_as_the_dataclass(snap_store):
    state = ExampleData(data="some data", count=3)

    snap_store.record_snapshot(SnapshotData("s", 1, type_name(ExampleData), state))

    read = snap_store.read_snapshot("s")
    assert read.source_type == "tests.test_snapshots.ExampleData"
    assert read.data == state
    assert isinstance(read.data, ExampleData)


def test_snapshot_large_data(snap_store):
    data = {"items": [{"i": i, "name": f"item-{i}" * 5} for i in range(5_000)]}

    snap_store.record_snapshot(SnapshotData("big", 5_000, "Big", data))

    assert snap_store.read_snapshot("big").data == data


def test_snapshots_of_two_stores_are_isolated(make_store, driver):
    """multi_event_store_test: the same source recorded in two stores."""
    first = make_store(driver=driver)
    second = make_store(driver=driver)
    source_uuid = str(uuid.uuid4())

    with pytest.raises(SnapshotNotFoundError):
        first.read_snapshot(source_uuid)
    first.record_snapshot(SnapshotData(source_uuid, 1, "Example", {"data": "first"}))

    with pytest.raises(SnapshotNotFoundError):
        second.read_snapshot(source_uuid)
    second.record_snapshot(SnapshotData(source_uuid, 2, "Example", {"data": "second"}))

    assert (
        first.read_snapshot(source_uuid).source_version,
        first.read_snapshot(source_uuid).data,
    ) == (
        1,
        {"data": "first"},
    )
    assert second.read_snapshot(source_uuid).data == {"data": "second"}
    second.delete_snapshot(source_uuid)
    assert first.read_snapshot(source_uuid).data == {"data": "first"}
