"""Custom metrics from view code, the Flask-Kadabra way, tagged like the HTTP metrics.

::

    from otel_flask_metrics import custom

    @app.post("/orders")
    def create_order():
        with custom.timer("orders.payment.duration"):
            charge()
        custom.count("orders.created", attributes={"order.kind": "express"})

Inside a request, every measurement also carries ``http.route`` and the
consumer known so far (``api.consumer.id``, ``api.consumer.group``, capped
like the HTTP metrics), so "orders created per consumer" needs no extra code.
Outside a request they carry only the given attributes. Instruments are created
on first use and kept, once per meter provider.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from timeit import default_timer
from typing import Any

from flask import current_app, has_request_context, request
from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider, get_meter

from .extension import EXTENSION_KEY
from .metrics import DURATION_BUCKETS
from .request_record import API_CONSUMER_GROUP, API_CONSUMER_ID
from .version import __version__


class _Instruments:
    """The custom instruments of one meter provider."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.counters: dict[str, Counter] = {}
        self.timers: dict[str, Histogram] = {}
        self.lock = threading.Lock()

    def counter(self, name: str) -> Counter:
        counter = self.counters.get(name)
        if counter is None:
            with self.lock:
                counter = self.counters.get(name) or self.meter.create_counter(name)
                self.counters[name] = counter
        return counter

    def timer(self, name: str) -> Histogram:
        histogram = self.timers.get(name)
        if histogram is None:
            with self.lock:
                histogram = self.timers.get(name) or self.meter.create_histogram(
                    name, unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)
                )
                self.timers[name] = histogram
        return histogram


_global: _Instruments | None = None
_by_provider: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = weakref.WeakKeyDictionary()


def _instruments(meter_provider: MeterProvider | None) -> _Instruments:
    global _global
    if meter_provider is None:
        if _global is None:
            _global = _Instruments(get_meter(__name__, __version__))
        return _global
    found = _by_provider.get(meter_provider)
    if found is None:
        found = _Instruments(get_meter(__name__, __version__, meter_provider))
        _by_provider[meter_provider] = found
    return found


def count(
    name: str,
    value: int = 1,
    *,
    attributes: Mapping[str, Any] | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Add ``value`` to the counter ``name`` (created on first use).

    :param meter_provider: defaults to the global one, set by the distro.
    """
    _instruments(meter_provider).counter(name).add(value, _tagged(attributes))


@contextmanager
def timer(
    name: str,
    *,
    attributes: Mapping[str, Any] | None = None,
    meter_provider: MeterProvider | None = None,
) -> Iterator[None]:
    """Record how long the block took, in seconds, in the histogram ``name``."""
    histogram = _instruments(meter_provider).timer(name)
    start = default_timer()
    try:
        yield
    finally:
        histogram.record(default_timer() - start, _tagged(attributes))


def _tagged(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    tags = dict(attributes) if attributes else {}
    if not has_request_context():
        return tags
    rule = request.url_rule
    if rule is not None:
        tags.setdefault("http.route", rule.rule)
    state = current_app.extensions.get(EXTENSION_KEY)
    if state is not None:
        consumer = state.consumers.resolve(request, use_callback=False)
        if consumer is not None:
            tags.setdefault(API_CONSUMER_ID, state.consumer_labels.label(consumer.id))
            if consumer.group is not None:
                tags.setdefault(API_CONSUMER_GROUP, state.group_labels.label(consumer.group))
    return tags
