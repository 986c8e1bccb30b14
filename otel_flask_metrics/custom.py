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
Outside a request they carry only the given attributes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from timeit import default_timer
from typing import Any

from flask import current_app, has_request_context, request
from opentelemetry.metrics import Counter, Histogram, Meter, get_meter

from .extension import API_CONSUMER_GROUP, API_CONSUMER_ID, EXTENSION_KEY
from .metrics import DURATION_BUCKETS
from .version import __version__

_meter: Meter | None = None
_counters: dict[str, Counter] = {}
_timers: dict[str, Histogram] = {}
_lock = threading.Lock()


def count(name: str, value: int = 1, *, attributes: Mapping[str, Any] | None = None) -> None:
    """Add ``value`` to the counter ``name`` (created on first use, unit ``1``)."""
    counter = _counters.get(name)
    if counter is None:
        with _lock:
            counter = _counters.get(name) or _get_meter().create_counter(name)
            _counters[name] = counter
    counter.add(value, _tagged(attributes))


@contextmanager
def timer(name: str, *, attributes: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Record how long the block took, in seconds, in the histogram ``name``."""
    histogram = _timers.get(name)
    if histogram is None:
        with _lock:
            histogram = _timers.get(name) or _get_meter().create_histogram(
                name, unit="s", explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS)
            )
            _timers[name] = histogram
    start = default_timer()
    try:
        yield
    finally:
        histogram.record(default_timer() - start, _tagged(attributes))


def _get_meter() -> Meter:
    global _meter
    if _meter is None:
        _meter = get_meter(__name__, __version__)
    return _meter


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
                tags.setdefault(API_CONSUMER_GROUP, consumer.group)
    return tags
