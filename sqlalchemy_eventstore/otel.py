"""OpenTelemetry metrics of a store: ``instrument(store)`` (the ``otel`` extra).

Every instrument is an observable one whose callback reads
:meth:`EventStore.stats() <sqlalchemy_eventstore.EventStore.stats>`: the
numbers are those of ``stats()``, read when the SDK collects, and the append
path pays nothing for the export. Nothing in the package imports
OpenTelemetry unless this module is imported.

Store instruments carry the attribute ``eventstore.schema`` (and
``eventstore.store.name`` when the store has a ``name``); subscription
instruments add ``eventstore.stream`` and ``eventstore.subscription.name``.

The instruments (observable counters for totals, observable gauges for the
rest; their units and sources are listed in docs/metrics.md):
``eventstore.appends``, ``eventstore.events.appended``,
``eventstore.notifications``, ``eventstore.listener.reconnects``,
``eventstore.notification.lag``; per subscription
``eventstore.subscription.lag``, ``eventstore.subscription.checkpoint.age``,
``eventstore.subscription.events.in_flight``,
``eventstore.subscription.events.queued``,
``eventstore.subscription.events.parked``, ``eventstore.subscription.retries``
and ``eventstore.subscription.status``.

``eventstore.subscription.status`` is 1 for each subscription, with its
status as the attribute ``eventstore.subscription.status``. A figure that is
None in ``stats()`` (a lag not known yet, a subscription another process
holds) is left out rather than reported as 0.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ImportError as error:  # pragma: no cover -- the extra is installed in the tests
    raise ImportError(
        "sqlalchemy_eventstore.otel needs the OpenTelemetry API: "
        "pip install 'sqlalchemy-eventstore[otel]'"
    ) from error

from .stats import StoreStats, SubscriptionStats

if TYPE_CHECKING:
    from .store import EventStore

__all__ = ["Instrumentation", "instrument"]

_SCOPE = "sqlalchemy_eventstore"

StoreFigure = Callable[[StoreStats], "float | int | None"]
SubscriptionFigure = Callable[[SubscriptionStats], "float | int | None"]

# (name, kind, unit, description, figure): kind "counter" or "gauge".
_STORE: list[tuple[str, str, str, str, StoreFigure]] = [
    (
        "eventstore.appends",
        "counter",
        "{call}",
        "append_to_stream calls that returned without raising",
        lambda s: s.appends,
    ),
    (
        "eventstore.events.appended",
        "counter",
        "{event}",
        "Events appended by append_to_stream",
        lambda s: s.events_appended,
    ),
    (
        "eventstore.notifications",
        "counter",
        "{notification}",
        "Notifications of new events received (NOTIFY, or a change found by polling)",
        lambda s: s.notifications,
    ),
    (
        "eventstore.listener.reconnects",
        "counter",
        "{reconnect}",
        "Times the LISTEN connection was lost and made again",
        lambda s: s.listener_reconnects,
    ),
    (
        "eventstore.notification.lag",
        "gauge",
        "s",
        "From the created_at of the newest event published live to its reading here",
        lambda s: s.notification_lag,
    ),
]

_SUBSCRIPTION: list[tuple[str, str, str, str, SubscriptionFigure]] = [
    (
        "eventstore.subscription.lag",
        "gauge",
        "{event}",
        "Events of the subscribed stream after the subscription's checkpoint",
        lambda s: s.lag,
    ),
    (
        "eventstore.subscription.checkpoint.age",
        "gauge",
        "s",
        "Seconds since the subscription's stored checkpoint last moved",
        lambda s: s.checkpoint_age,
    ),
    (
        "eventstore.subscription.events.in_flight",
        "gauge",
        "{event}",
        "Events sent to the subscribers and not acknowledged yet",
        lambda s: s.in_flight,
    ),
    (
        "eventstore.subscription.events.queued",
        "gauge",
        "{event}",
        "Events read and waiting in memory to be sent",
        lambda s: s.queued,
    ),
    (
        "eventstore.subscription.events.parked",
        "gauge",
        "{event}",
        "Parked events of the subscription",
        lambda s: s.parked,
    ),
    (
        "eventstore.subscription.retries",
        "counter",
        "{retry}",
        "Events tried again after user code or the serializer failed on them",
        lambda s: s.retries,
    ),
]


class Instrumentation:
    """The instruments :func:`instrument` registered for one store.

    They hold the store weakly; once it is closed (or :meth:`close` is
    called) they report nothing.
    """

    def __init__(self, store: EventStore, meter: Meter) -> None:
        self._store: weakref.ref[EventStore] = weakref.ref(store)
        self._active = True
        self._attributes: dict[str, str] = {"eventstore.schema": store.schema}
        if store.name:
            self._attributes["eventstore.store.name"] = store.name
        for name, kind, unit, description, figure in _STORE:
            self._register(meter, name, kind, unit, description, self._store_callback(figure))
        for name, kind, unit, description, sub_figure in _SUBSCRIPTION:
            self._register(
                meter, name, kind, unit, description, self._subscription_callback(sub_figure)
            )
        self._register(
            meter,
            "eventstore.subscription.status",
            "gauge",
            "1",
            "1 per subscription, its status in the eventstore.subscription.status attribute",
            self._status_callback,
        )

    def close(self) -> None:
        """Stop reporting (OpenTelemetry has no way to remove an instrument)."""
        self._active = False

    @staticmethod
    def _register(
        meter: Meter,
        name: str,
        kind: str,
        unit: str,
        description: str,
        callback: Callable[[CallbackOptions], Iterable[Observation]],
    ) -> None:
        create = (
            meter.create_observable_counter if kind == "counter" else meter.create_observable_gauge
        )
        create(name, callbacks=[callback], unit=unit, description=description)

    def _stats(self) -> StoreStats | None:
        store = self._store()
        if not self._active or store is None or store._closed:
            return None
        return store.stats()

    def _subscription_attributes(self, sub: SubscriptionStats) -> dict[str, str]:
        return {
            **self._attributes,
            "eventstore.stream": sub.stream_uuid,
            "eventstore.subscription.name": sub.subscription_name or "",
        }

    def _store_callback(
        self, figure: StoreFigure
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            stats = self._stats()
            value = None if stats is None else figure(stats)
            return [] if value is None else [Observation(value, self._attributes)]

        return observe

    def _subscription_callback(
        self, figure: SubscriptionFigure
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            stats = self._stats()
            if stats is None:
                return []
            found = []
            for sub in stats.subscriptions:
                value = figure(sub)
                if value is not None:
                    found.append(Observation(value, self._subscription_attributes(sub)))
            return found

        return observe

    def _status_callback(self, options: CallbackOptions) -> Iterable[Observation]:
        stats = self._stats()
        if stats is None:
            return []
        return [
            Observation(
                1,
                {
                    **self._subscription_attributes(sub),
                    "eventstore.subscription.status": sub.status,
                },
            )
            for sub in stats.subscriptions
        ]


def instrument(store: EventStore, meter_provider: MeterProvider | None = None) -> Instrumentation:
    """Export the store's :meth:`~sqlalchemy_eventstore.EventStore.stats` through OpenTelemetry.

    Registers observable instruments (see the table in this module's
    documentation) on a meter named ``sqlalchemy_eventstore``; the SDK reads
    ``store.stats()`` whenever it collects.

    Args:
        store: The store to report on.
        meter_provider: Where to register the instruments; by default the
            global one (``opentelemetry.metrics.get_meter_provider()``).

    Returns:
        The :class:`Instrumentation`; its ``close()`` stops the reports.

    Raises:
        TypeError: ``store`` is not an EventStore.
    """
    from .store import EventStore

    if not isinstance(store, EventStore):
        raise TypeError(f"store must be an EventStore, got {type(store).__name__}")
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter(_SCOPE, _package_version())
    return Instrumentation(store, meter)


def _package_version() -> str | None:
    try:
        return version("sqlalchemy-eventstore")
    except PackageNotFoundError:  # pragma: no cover -- run from a source tree
        return None
