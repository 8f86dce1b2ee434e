"""The store's metrics through OpenTelemetry: the SDK's in-memory reader, a real database."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sqlalchemy_eventstore import ALL_STREAM
from sqlalchemy_eventstore.otel import instrument

from .subscription_helpers import WAIT, append, collect, eventually, flatten, new_id


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Each metric's data points as (attributes, value), by instrument name."""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "sqlalchemy_eventstore"
            for metric in scope.metrics:
                found[metric.name] = [
                    (dict(point.attributes or {}), point.value) for point in metric.data.data_points
                ]
    return found


def value(found: dict[str, Any], name: str, **attributes: str) -> Any:
    """The one data point of ``name`` whose attributes include ``attributes``."""
    matching = [
        v for a, v in found.get(name, []) if all(a.get(k) == w for k, w in attributes.items())
    ]
    assert len(matching) == 1, (name, attributes, found.get(name))
    return matching[0]


@pytest.fixture
def provider_and_reader() -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def test_instruments_report_what_stats_says(make_store: Any, provider_and_reader: Any) -> None:
    provider, reader = provider_and_reader
    store = make_store(name="orders")
    instrumentation = instrument(store, meter_provider=provider)
    schema = store.schema
    append(store, new_id(), 3)
    append(store, new_id(), 2)

    found = points(reader)
    base = {"eventstore.schema": schema, "eventstore.store.name": "orders"}
    assert value(found, "eventstore.appends", **base) == 2
    assert value(found, "eventstore.events.appended", **base) == 5
    assert value(found, "eventstore.listener.reconnects", **base) == 0
    assert "eventstore.subscription.lag" not in found  # no subscription yet

    sub = store.subscribe_to_all_streams("projector", buffer_size=2)
    assert sub.wait_subscribed(WAIT)
    assert eventually(lambda: sub.stats.in_flight == 2)
    found = points(reader)
    mine = {**base, "eventstore.subscription.name": "projector", "eventstore.stream": ALL_STREAM}
    assert value(found, "eventstore.subscription.lag", **mine) == 5
    assert value(found, "eventstore.subscription.events.in_flight", **mine) == 2
    assert value(found, "eventstore.subscription.events.queued", **mine) == 3
    assert value(found, "eventstore.subscription.events.parked", **mine) == 0
    assert value(found, "eventstore.subscription.retries", **mine) == 0
    assert value(found, "eventstore.subscription.checkpoint.age", **mine) >= 0
    assert (
        value(
            found,
            "eventstore.subscription.status",
            **mine,
            **{"eventstore.subscription.status": "max_capacity"},
        )
        == 1
    )

    assert [e.event_number for e in flatten(collect(sub, 5, ack=True))] == [1, 2, 3, 4, 5]
    assert eventually(lambda: sub.stats.lag == 0)
    append(store, new_id(), 1)
    assert [e.event_number for e in flatten(collect(sub, 1, ack=True))] == [6]
    assert eventually(lambda: sub.stats.lag == 0 and store.stats().notification_lag is not None)
    found = points(reader)
    assert value(found, "eventstore.subscription.lag", **mine) == 0
    assert value(found, "eventstore.appends", **base) == 3
    assert value(found, "eventstore.notifications", **base) >= 1
    assert isinstance(value(found, "eventstore.notification.lag", **base), float)

    # Stopped: nothing more is reported for the store.
    instrumentation.close()
    assert not any(points(reader).values())


def test_a_closed_store_reports_nothing(make_store: Any, provider_and_reader: Any) -> None:
    provider, reader = provider_and_reader
    store = make_store()
    instrument(store, meter_provider=provider)
    append(store, new_id(), 1)
    assert value(points(reader), "eventstore.events.appended") == 1
    store.close()
    assert not any(points(reader).values())


def test_instrument_refuses_what_is_not_a_store() -> None:
    with pytest.raises(TypeError, match="store must be an EventStore"):
        instrument("postgresql://nowhere")  # type: ignore[arg-type]


def test_the_package_imports_no_opentelemetry_unless_asked(database_url: Any) -> None:
    code = (
        "import sys\n"
        "import sqlalchemy_eventstore, sqlalchemy_eventstore.admin, sqlalchemy_eventstore.cli\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
        "import sqlalchemy_eventstore.otel\n"
        "assert 'opentelemetry.metrics' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
