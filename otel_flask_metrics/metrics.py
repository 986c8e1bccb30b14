"""Every instrument otel-flask-metrics records, created once per meter provider.

The definitions are data (:data:`INSTRUMENTS`) so that the dashboards, the alert
rules and their tests can check every metric name they use against what the
distro really emits, instead of against a second hand-kept list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.semconv._incubating.metrics import http_metrics as incubating_http
from opentelemetry.semconv.metrics import http_metrics

# Seconds: the bucket boundaries the HTTP semantic conventions advise for
# http.server.request.duration.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# Bytes: powers of four from 64 B to 16 MiB, so a p95 of a JSON API's payloads
# (usually 100 B to 100 KiB) falls between buckets at most 4x apart.
BODY_SIZE_BUCKETS: tuple[float, ...] = (
    0,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
)

InstrumentKind = Literal["histogram", "updowncounter"]

_METHOD = "http.request.method"
_SCHEME = "url.scheme"


@dataclass(frozen=True)
class InstrumentSpec:
    """One instrument: its semantic-convention name, unit and kind."""

    name: str
    unit: str
    kind: InstrumentKind
    description: str
    buckets: tuple[float, ...] = ()

    @property
    def prometheus_name(self) -> str:
        """The name the Collector's Prometheus exporters give this instrument.

        Dots become underscores and the unit becomes a suffix (``s`` ->
        ``_seconds``, ``By`` -> ``_bytes``; annotations such as ``{request}``
        add nothing), as the OpenTelemetry-to-Prometheus compatibility spec says.
        """
        base = re.sub(r"[^a-zA-Z0-9_]", "_", self.name)
        suffix = _PROMETHEUS_UNIT_SUFFIXES.get(self.unit, "")
        return base + suffix


_PROMETHEUS_UNIT_SUFFIXES = {"s": "_seconds", "By": "_bytes"}

REQUEST_DURATION = InstrumentSpec(
    name=http_metrics.HTTP_SERVER_REQUEST_DURATION,
    unit="s",
    kind="histogram",
    description="Duration of HTTP server requests, until the last body byte is handed over.",
    buckets=DURATION_BUCKETS,
)
REQUEST_BODY_SIZE = InstrumentSpec(
    name=incubating_http.HTTP_SERVER_REQUEST_BODY_SIZE,
    unit="By",
    kind="histogram",
    description="Size of HTTP server request bodies.",
    buckets=BODY_SIZE_BUCKETS,
)
RESPONSE_BODY_SIZE = InstrumentSpec(
    name=incubating_http.HTTP_SERVER_RESPONSE_BODY_SIZE,
    unit="By",
    kind="histogram",
    description="Size of HTTP server response bodies, as sent.",
    buckets=BODY_SIZE_BUCKETS,
)
ACTIVE_REQUESTS = InstrumentSpec(
    name=incubating_http.HTTP_SERVER_ACTIVE_REQUESTS,
    unit="{request}",
    kind="updowncounter",
    description="Number of HTTP server requests in flight.",
)

INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    REQUEST_DURATION,
    REQUEST_BODY_SIZE,
    RESPONSE_BODY_SIZE,
    ACTIVE_REQUESTS,
)


def prometheus_series_names() -> frozenset[str]:
    """Every series name the instruments become in Prometheus.

    Histograms become ``_bucket``, ``_sum`` and ``_count`` series; the others
    keep their base name.
    """
    names: set[str] = set()
    for spec in INSTRUMENTS:
        if spec.kind == "histogram":
            names.update(spec.prometheus_name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(spec.prometheus_name)
    return frozenset(names)


class ActiveRequests:
    """Requests in flight per method and scheme, observed at collection time.

    An observable instrument instead of an up-down counter: two SDK
    measurements per request (``add(1)``, ``add(-1)``) become two dictionary
    operations, each a single C call (atomic under the GIL, and locked per dict
    in free-threaded builds), so the request path takes no lock; the counting
    is done once per export. Requests are keyed by ``id()``: a request whose
    server never closes its body keeps an integer here, not its environ.
    """

    def __init__(self) -> None:
        #: id() of every request in flight -> its (method, scheme).
        self.in_flight: dict[int, tuple[str, str]] = {}
        #: Every (method, scheme) ever seen, so an idle one is reported as 0
        #: instead of disappearing from the series.
        self.seen: set[tuple[str, str]] = set()

    def start(self, request: object, method: str, scheme: str) -> None:
        key = (method, scheme)
        self.seen.add(key)
        self.in_flight[id(request)] = key

    def end(self, request: object) -> None:
        self.in_flight.pop(id(request), None)

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # Copies first: each is one C call, so no request can change them
        # mid-iteration.
        counts = dict.fromkeys(self.seen.copy(), 0)
        for key in list(self.in_flight.values()):
            counts[key] = counts.get(key, 0) + 1
        return [
            Observation(value, {_METHOD: method, _SCHEME: scheme})
            for (method, scheme), value in counts.items()
        ]


@dataclass(frozen=True)
class HttpServerInstruments:
    """The instruments of one meter, created once and shared by every request."""

    duration: Histogram
    request_body_size: Histogram
    response_body_size: Histogram
    active_requests: ActiveRequests = field(default_factory=ActiveRequests)

    @classmethod
    def create(cls, meter: Meter) -> HttpServerInstruments:
        def histogram(spec: InstrumentSpec) -> Histogram:
            return meter.create_histogram(
                spec.name,
                unit=spec.unit,
                description=spec.description,
                explicit_bucket_boundaries_advisory=list(spec.buckets),
            )

        active = ActiveRequests()
        meter.create_observable_up_down_counter(
            ACTIVE_REQUESTS.name,
            callbacks=[active.observe],
            unit=ACTIVE_REQUESTS.unit,
            description=ACTIVE_REQUESTS.description,
        )
        return cls(
            duration=histogram(REQUEST_DURATION),
            request_body_size=histogram(REQUEST_BODY_SIZE),
            response_body_size=histogram(RESPONSE_BODY_SIZE),
            active_requests=active,
        )
