from sqlalchemy_eventstore import EventData


def test_append_then_read_round_trip(store):
    store.append_to_stream("s-1", 0, [EventData("Opened", {"n": 1}, {"by": "me"})])
    [event] = store.read_stream_forward("s-1")
    assert (event.event_number, event.stream_uuid, event.data, event.metadata) == (
        1,
        "s-1",
        {"n": 1},
        {"by": "me"},
    )


def test_every_error_is_importable_from_the_package_root() -> None:
    import sqlalchemy_eventstore
    from sqlalchemy_eventstore import errors

    for name in errors.__all__:
        assert getattr(sqlalchemy_eventstore, name) is getattr(errors, name)
        assert name in sqlalchemy_eventstore.__all__
