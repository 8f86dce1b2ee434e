"""stream_info and paginate_streams.

Ports the reference's streams/stream_info_test.exs and
streams/paginate_streams_test.exs, and pins what the port adds: every sort
field in both directions, and LIKE metacharacters searched literally.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from sqlalchemy_eventstore import ALL_STREAM, ANY_VERSION, EventData, Page, StreamInfo
from sqlalchemy_eventstore.errors import StreamDeletedError, StreamNotFoundError


def append(store, count: int, stream_uuid: str | None = None) -> str:
    stream_uuid = stream_uuid or str(uuid.uuid4())
    store.append_to_stream(stream_uuid, 0, [EventData("E", {"n": n}) for n in range(count)])
    return stream_uuid


def summary(info: StreamInfo) -> tuple:
    return (info.stream_id, info.stream_uuid, info.stream_version, info.status)


def assert_well_formed(info: StreamInfo) -> None:
    assert isinstance(info, StreamInfo)
    assert isinstance(info.created_at, datetime)
    assert info.created_at.tzinfo == timezone.utc
    if info.status == "created":
        assert info.deleted_at is None
    else:
        assert info.status == "deleted"
        assert isinstance(info.deleted_at, datetime)
        assert info.deleted_at.tzinfo == timezone.utc
        assert info.deleted_at >= info.created_at


@pytest.fixture
def hard_store(make_store, driver):
    return make_store(driver=driver, enable_hard_deletes=True)


# -- stream_info --------------------------------------------------------------------


def test_stream_info_of_the_all_stream(store):
    info = store.stream_info(ALL_STREAM)

    assert summary(info) == (0, "$all", 0, "created")
    assert_well_formed(info)


def test_stream_info_includes_all_created_streams(store):
    stream1 = append(store, 1)
    stream2 = append(store, 2)
    stream3 = append(store, 3)

    infos = [store.stream_info(s) for s in (ALL_STREAM, stream1, stream2, stream3)]

    assert [summary(i) for i in infos] == [
        (0, "$all", 6, "created"),
        (1, stream1, 1, "created"),
        (2, stream2, 2, "created"),
        (3, stream3, 3, "created"),
    ]
    for info in infos:
        assert_well_formed(info)


def test_stream_info_tracks_appends_and_links(store):
    stream = append(store, 2)
    store.append_to_stream(stream, 2, [EventData("E", {})])
    store.link_to_stream("linked", 0, store.read_stream_forward(stream))

    assert store.stream_info(stream).stream_version == 3
    assert store.stream_info("linked").stream_version == 3
    # Links add no event to $all.
    assert store.stream_info(ALL_STREAM).stream_version == 3


def test_stream_info_of_unknown_stream(store):
    with pytest.raises(StreamNotFoundError):
        store.stream_info("doesnotexist")


def test_stream_info_of_soft_and_hard_deleted_streams(hard_store):
    stream1 = append(hard_store, 1)
    stream2 = append(hard_store, 2)
    stream3 = append(hard_store, 3)

    hard_store.delete_stream(stream1, 1)
    hard_store.delete_stream(stream2, 2, hard=True)

    with pytest.raises(StreamDeletedError):
        hard_store.stream_info(stream1)
    with pytest.raises(StreamNotFoundError):
        hard_store.stream_info(stream2)
    assert summary(hard_store.stream_info(stream3)) == (3, stream3, 3, "created")
    # $all keeps counting the hard-deleted events: its version is the last position.
    assert hard_store.stream_info(ALL_STREAM).stream_version == 6


# -- paginate_streams ---------------------------------------------------------------


def test_paginate_includes_the_all_stream(store):
    page = store.paginate_streams()

    assert isinstance(page, Page)
    assert [summary(s) for s in page.entries] == [(0, "$all", 0, "created")]
    assert (page.page_number, page.page_size, page.total_entries, page.total_pages) == (
        1,
        50,
        1,
        1,
    )
    assert_well_formed(page.entries[0])


def test_paginate_includes_all_created_streams(store):
    stream1 = append(store, 1)
    stream2 = append(store, 2)
    stream3 = append(store, 3)

    page = store.paginate_streams()

    assert [summary(s) for s in page.entries] == [
        (0, "$all", 6, "created"),
        (1, stream1, 1, "created"),
        (2, stream2, 2, "created"),
        (3, stream3, 3, "created"),
    ]
    assert (page.page_number, page.page_size, page.total_entries, page.total_pages) == (
        1,
        50,
        4,
        1,
    )
    for info in page.entries:
        assert_well_formed(info)
    # An entry equals what stream_info reports.
    assert page.entries[2] == store.stream_info(stream2)


def test_paginate_sorted_by_created_at_descending(store):
    stream1 = append(store, 1)
    stream2 = append(store, 2)
    stream3 = append(store, 3)

    page = store.paginate_streams(sort_by="created_at", sort_dir="desc")

    assert [summary(s) for s in page.entries] == [
        (3, stream3, 3, "created"),
        (2, stream2, 2, "created"),
        (1, stream1, 1, "created"),
        (0, "$all", 6, "created"),
    ]
    assert page.total_entries == 4


@pytest.fixture
def varied_streams(store):
    """Streams whose uuid, version, creation and deletion orders all differ."""
    for name, count in [("m-stream", 2), ("c-stream", 5), ("x-stream", 1), ("a-stream", 3)]:
        append(store, count, name)
    store.append_to_stream("m-stream", ANY_VERSION, [EventData("E", {})] * 2)
    # Deletion order: x, then m.
    store.delete_stream("x-stream")
    store.delete_stream("m-stream")
    return store


def sort_key(field: str):
    def key(info: StreamInfo):
        return (getattr(info, field), info.stream_id)

    return key


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
@pytest.mark.parametrize("sort_by", ["stream_id", "stream_uuid", "stream_version", "created_at"])
def test_paginate_sorts_by_every_field(varied_streams, sort_by, sort_dir):
    store = varied_streams
    everything = store.paginate_streams().entries
    expected = sorted(everything, key=sort_key(sort_by), reverse=sort_dir == "desc")

    page = store.paginate_streams(sort_by=sort_by, sort_dir=sort_dir)

    assert [s.stream_uuid for s in page.entries] == [s.stream_uuid for s in expected]
    assert page.entries == expected
    assert page.total_entries == 5


def test_paginate_field_orders_are_distinct(varied_streams):
    """Guards the sort tests above: each field orders these streams differently."""
    store = varied_streams
    orders = {
        field: [s.stream_uuid for s in store.paginate_streams(sort_by=field).entries]
        for field in ("stream_id", "stream_uuid", "stream_version")
    }
    assert orders == {
        "stream_id": ["$all", "m-stream", "c-stream", "x-stream", "a-stream"],
        "stream_uuid": ["$all", "a-stream", "c-stream", "m-stream", "x-stream"],
        "stream_version": ["x-stream", "a-stream", "m-stream", "c-stream", "$all"],
    }


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_paginate_sorts_by_deleted_at(varied_streams, sort_dir):
    page = varied_streams.paginate_streams(sort_by="deleted_at", sort_dir=sort_dir)

    names = [s.stream_uuid for s in page.entries]
    deleted = [s.stream_uuid for s in page.entries if s.deleted_at is not None]
    assert sorted(names) == ["$all", "a-stream", "c-stream", "m-stream", "x-stream"]
    assert deleted == (["x-stream", "m-stream"] if sort_dir == "asc" else ["m-stream", "x-stream"])
    # The streams never deleted come together, before or after the deleted ones.
    positions = [names.index(name) for name in deleted]
    assert positions in ([0, 1], [3, 4])


def test_paginate_sort_dir_defaults_to_ascending_stream_id(varied_streams):
    default = varied_streams.paginate_streams()
    explicit = varied_streams.paginate_streams(sort_by="stream_id", sort_dir="asc")

    assert [s.stream_id for s in default.entries] == [0, 1, 2, 3, 4]
    assert default == explicit


def test_paginate_search_by_stream_uuid(store):
    stream1 = append(store, 1, "stream-1")
    stream2 = append(store, 2, "stream-2")
    stream3 = append(store, 3, "stream-3")

    page = store.paginate_streams(search="$all")
    assert [summary(s) for s in page.entries] == [(0, "$all", 6, "created")]
    assert (page.total_entries, page.total_pages) == (1, 1)

    page = store.paginate_streams(search="stream-1")
    assert [summary(s) for s in page.entries] == [(1, stream1, 1, "created")]
    assert (page.total_entries, page.total_pages) == (1, 1)

    page = store.paginate_streams(search="stream")
    assert [summary(s) for s in page.entries] == [
        (1, stream1, 1, "created"),
        (2, stream2, 2, "created"),
        (3, stream3, 3, "created"),
    ]
    assert (page.page_number, page.page_size, page.total_entries, page.total_pages) == (
        1,
        50,
        3,
        1,
    )


def test_paginate_search_is_a_substring_match(store):
    for name in ("order-123-shipped", "order-124", "customer-123"):
        append(store, 1, name)

    assert [s.stream_uuid for s in store.paginate_streams(search="123").entries] == [
        "order-123-shipped",
        "customer-123",
    ]
    assert [s.stream_uuid for s in store.paginate_streams(search="shipped").entries] == [
        "order-123-shipped"
    ]
    # Case-sensitive, like the reference's LIKE.
    assert store.paginate_streams(search="ORDER").entries == []


def test_paginate_search_takes_like_metacharacters_literally(store):
    for name in ("a%b", "a_b", "axb", "a\\b", "a%%b"):
        append(store, 1, name)

    def found(search: str) -> list[str]:
        page = store.paginate_streams(search=search)
        assert page.total_entries == len(page.entries)
        return [s.stream_uuid for s in page.entries]

    assert found("a%b") == ["a%b"]
    assert found("a_b") == ["a_b"]
    assert found("%") == ["a%b", "a%%b"]
    assert found("_") == ["a_b"]
    assert found("\\") == ["a\\b"]
    assert found("a\\b") == ["a\\b"]
    assert found("%%") == ["a%%b"]
    assert found("x") == ["axb"]
    assert found("b") == ["a%b", "a_b", "axb", "a\\b", "a%%b"]


def test_paginate_search_without_match(store):
    append(store, 1, "stream-1")

    page = store.paginate_streams(search="nothing-like-this")

    assert page.entries == []
    # The reference's Page.total_pages is a pos_integer: one empty page.
    assert (page.total_entries, page.total_pages) == (0, 1)


def test_paginate_through_streams(store):
    streams = [append(store, n) for n in range(1, 7)]

    pages = [store.paginate_streams(page_size=2, page_number=n) for n in (1, 2, 3, 4)]

    assert [[summary(s) for s in page.entries] for page in pages] == [
        [(0, "$all", 21, "created"), (1, streams[0], 1, "created")],
        [(2, streams[1], 2, "created"), (3, streams[2], 3, "created")],
        [(4, streams[3], 4, "created"), (5, streams[4], 5, "created")],
        [(6, streams[5], 6, "created")],
    ]
    for number, page in enumerate(pages, start=1):
        assert (page.page_number, page.page_size, page.total_entries, page.total_pages) == (
            number,
            2,
            7,
            4,
        )
    assert store.paginate_streams(page_size=2) == pages[0]


def test_paginate_past_the_last_page(store):
    for n in range(1, 4):
        append(store, n)

    page = store.paginate_streams(page_size=3, page_number=3)

    assert page.entries == []
    assert (page.page_number, page.page_size, page.total_entries, page.total_pages) == (
        3,
        3,
        4,
        2,
    )


@pytest.mark.parametrize(
    ("streams", "page_size", "total_pages"),
    [(0, 1, 1), (1, 1, 2), (1, 2, 1), (2, 2, 2), (4, 5, 1), (4, 50, 1), (9, 5, 2), (10, 5, 3)],
)
def test_paginate_page_math(store, streams, page_size, total_pages):
    for n in range(streams):
        append(store, 1, f"s-{n:02d}")

    pages = [
        store.paginate_streams(page_size=page_size, page_number=n)
        for n in range(1, total_pages + 1)
    ]

    assert {(p.total_entries, p.total_pages) for p in pages} == {(streams + 1, total_pages)}
    listed = [s.stream_uuid for p in pages for s in p.entries]
    assert listed == ["$all"] + [f"s-{n:02d}" for n in range(streams)]
    assert all(len(p.entries) == page_size for p in pages[:-1])


def test_paginate_searched_pages(store):
    for n in range(5):
        append(store, 1, f"match-{n}")
        append(store, 1, f"other-{n}")

    first = store.paginate_streams(search="match", page_size=2)
    last = store.paginate_streams(search="match", page_size=2, page_number=3)

    assert [s.stream_uuid for s in first.entries] == ["match-0", "match-1"]
    assert [s.stream_uuid for s in last.entries] == ["match-4"]
    assert (first.total_entries, first.total_pages) == (5, 3)
    assert (last.total_entries, last.total_pages) == (5, 3)


def test_paginate_lists_soft_deleted_but_not_hard_deleted_streams(hard_store):
    stream1 = append(hard_store, 1)
    stream2 = append(hard_store, 2)
    stream3 = append(hard_store, 3)

    hard_store.delete_stream(stream1, 1)
    hard_store.delete_stream(stream2, 2, hard=True)

    page = hard_store.paginate_streams()

    assert [summary(s) for s in page.entries] == [
        (0, "$all", 6, "created"),
        (1, stream1, 1, "deleted"),
        (3, stream3, 3, "created"),
    ]
    assert (page.total_entries, page.total_pages) == (3, 1)
    for info in page.entries:
        assert_well_formed(info)
    assert page.entries[1].deleted_at is not None
