"""Guards on the per-request work, counted rather than timed.

Wall-clock assertions are flaky; counts are not. If a change adds SDK calls,
attribute passes or attributes to every request, these fail and the change
must say why (and update the benchmarks in the README).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal import instrument as sdk_instruments
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_flask_metrics import FlaskMetrics

REQUESTS = 20
# Per GET: duration and response size; a request with a body also has its
# size recorded. Active requests are observed at collection time, not
# recorded per request.
SDK_MEASUREMENTS_PER_GET = 2
SDK_MEASUREMENTS_PER_POST = 3
# Exemplar reservoir offers per sampled request: the duration only.
EXEMPLAR_OFFERS_PER_REQUEST = 1
# Per recorded span: the attributes at start_span, and one set_attributes at the end.
ATTRIBUTE_PASSES_PER_SPAN = 1
MAX_SPAN_ATTRIBUTES = 14  # a GET with a user agent, a referrer, a consumer and a query string


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counted: Counter[str] = Counter()

    def counting(name: str, original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for cls_name, method in (
        ("_Histogram", "record"),
        ("_Counter", "add"),
        ("_UpDownCounter", "add"),
        ("_Gauge", "set"),
    ):
        cls = getattr(sdk_instruments, cls_name)
        monkeypatch.setattr(cls, method, counting("measurement", getattr(cls, method)))
    from opentelemetry.sdk.metrics._internal.exemplar import exemplar_reservoir

    reservoir = exemplar_reservoir.AlignedHistogramBucketExemplarReservoir
    monkeypatch.setattr(reservoir, "offer", counting("exemplar", reservoir.offer))
    for method in ("set_attributes", "set_attribute"):
        monkeypatch.setattr(SdkSpan, method, counting(method, getattr(SdkSpan, method)))
    return counted


def test_per_request_work_does_not_grow(
    calls: Counter[str],
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    span_exporter: InMemorySpanExporter,
) -> None:
    app = Flask(__name__)
    app.get("/items/<int:item_id>")(lambda item_id: {"id": item_id})
    FlaskMetrics(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider,
        consumer_header="X-API-Key",
    )
    client = app.test_client()
    headers = {"X-API-Key": "key-1", "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
               "Referer": "https://example.com/"}
    for i in range(REQUESTS):
        assert client.get(f"/items/{i}?page=2", headers=headers, buffered=True).status_code == 200

    assert calls["measurement"] == SDK_MEASUREMENTS_PER_GET * REQUESTS
    assert calls["exemplar"] == EXEMPLAR_OFFERS_PER_REQUEST * REQUESTS
    assert calls["set_attributes"] == ATTRIBUTE_PASSES_PER_SPAN * REQUESTS
    assert calls["set_attribute"] == 0
    spans = span_exporter.get_finished_spans()
    assert len(spans) == REQUESTS
    assert max(len(span.attributes) for span in spans) <= MAX_SPAN_ATTRIBUTES, sorted(spans[0].attributes)


def test_unsampled_requests_skip_all_span_work(
    calls: Counter[str], meter_provider: MeterProvider, span_exporter: InMemorySpanExporter
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider = TracerProvider(sampler=ALWAYS_OFF)
    app = Flask(__name__)
    app.get("/items/<int:item_id>")(lambda item_id: {"id": item_id})
    FlaskMetrics(app, tracer_provider=provider, meter_provider=meter_provider)
    client = app.test_client()
    for i in range(REQUESTS):
        client.get(f"/items/{i}", headers={"User-Agent": "curl/8"}, buffered=True)
    assert calls["measurement"] == SDK_MEASUREMENTS_PER_GET * REQUESTS, "metrics count every request"
    assert calls["exemplar"] == 0
    assert calls["set_attributes"] == 0


def test_a_request_with_a_body_adds_only_its_size(
    calls: Counter[str], tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    app = Flask(__name__)
    app.post("/items")(lambda: ({"ok": True}, 201))
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    client = app.test_client()
    for _ in range(REQUESTS):
        assert client.post("/items", json={"n": 1}, buffered=True).status_code == 201
    assert calls["measurement"] == SDK_MEASUREMENTS_PER_POST * REQUESTS
    assert calls["exemplar"] == EXEMPLAR_OFFERS_PER_REQUEST * REQUESTS


def test_user_agent_parser_is_not_loaded_unless_asked_for() -> None:
    """ua-parser's rules cost every worker memory; the bundled Collector parses instead."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from flask import Flask
        from opentelemetry.sdk.trace import TracerProvider
        from otel_flask_metrics import FlaskMetrics
        for parse in (False, True):
            app = Flask("probe")
            app.get("/")(lambda: "ok")
            FlaskMetrics(app, tracer_provider=TracerProvider(), parse_user_agent=parse)
            app.test_client().get("/", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"})
            print(parse, "ua_parser" in sys.modules)
    """)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False", "True", "True"], done.stdout + done.stderr


def test_metric_attributes_take_the_fast_path(
    monkeypatch: pytest.MonkeyPatch, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    """Our records never reach the SDK's general attribute cleaning and hashing."""
    from opentelemetry.sdk.metrics._internal import _view_instrument_match, measurement

    from otel_flask_metrics import fast_attributes

    general: Counter[str] = Counter()

    def counting(name: str, original: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            general[name] += 1
            return original(*args)

        return wrapper

    fast_attributes.uninstall()
    monkeypatch.setattr(
        _view_instrument_match, "_hash_attributes",
        counting("hash", _view_instrument_match._hash_attributes),
    )
    monkeypatch.setattr(
        measurement, "_clean_attribute_value",
        counting("clean", measurement._clean_attribute_value),
    )
    app = Flask(__name__)
    app.get("/items/<int:item_id>")(lambda item_id: {"id": item_id})
    try:
        FlaskMetrics(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider,
            consumer_header="X-API-Key",
        )
        assert fast_attributes.is_installed()
        general.clear()  # the startup check compares with the general path
        client = app.test_client()
        for i in range(REQUESTS):
            client.get(f"/items/{i}", headers={"X-API-Key": "key-1"}, buffered=True)
        assert general == {}
    finally:
        fast_attributes.uninstall()  # before monkeypatch restores the SDK's functions
