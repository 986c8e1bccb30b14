"""Who is calling: the consumer sources, their precedence, cleaning and label capping.

Every test drives a real Flask app instrumented by :class:`FlaskMetrics` with the
in-memory providers from ``conftest``. Flask's test client ends our span when
the WSGI response is closed, so requests use ``buffered=True``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, g, jsonify, request
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_flask_metrics import FlaskMetrics, set_consumer
from otel_flask_metrics.consumers import (
    DEFAULT_HASH_KEY,
    OVERFLOW_CONSUMER_ID,
    ConsumerLabelLimiter,
)
from otel_flask_metrics.redaction import pseudonymize
from tests.conftest import metric_points

CONSUMER_ID = "api.consumer.id"
CONSUMER_NAME = "api.consumer.name"
CONSUMER_GROUP = "api.consumer.group"
CONSUMER_KEYS = (CONSUMER_ID, CONSUMER_NAME, CONSUMER_GROUP)
DURATION = "http.server.request.duration"
HTTP_METRICS = (
    DURATION,
    "http.server.request.body.size",
    "http.server.response.body.size",
    "http.server.active_requests",
)

API_KEY = "sk_live_TOPSECRETcredential0001"


# --- a small app whose views feed every consumer source from the query string ---


def add_views(app: Flask) -> None:
    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        if "g_id" in request.args:
            g.consumer_identifier = request.args["g_id"]
        if "set_id" in request.args:
            set_consumer(
                request.args["set_id"], request.args.get("set_name"), request.args.get("set_group")
            )
        if "view_value" in request.args:
            g.view_value = request.args["view_value"]
        return jsonify(item=item_id)

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("the view failed")


@dataclass
class Telemetry:
    app: Flask
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.app.test_client().get(path, buffered=True, **kwargs)
        response.close()
        return response

    def server_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def span_attributes(self) -> dict[str, Any]:
        """The attributes of the one span finished so far."""
        (span,) = self.server_spans()
        return dict(span.attributes or {})

    def metric_attributes(self) -> list[dict[str, Any]]:
        return [dict(p.attributes) for p in metric_points(self.reader, DURATION)]

    def consumer_of_span(self) -> dict[str, Any]:
        attributes = self.span_attributes()
        return {k: attributes[k] for k in CONSUMER_KEYS if k in attributes}

    def consumer_of_metric(self) -> dict[str, Any]:
        (attributes,) = self.metric_attributes()
        return {k: attributes[k] for k in CONSUMER_KEYS if k in attributes}


MakeApp = Callable[..., Telemetry]


@pytest.fixture
def make_app(
    tracer_provider: TracerProvider,
    span_exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> Iterator[MakeApp]:
    def make(**options: Any) -> Telemetry:
        app = Flask(__name__)
        add_views(app)
        FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider, **options)
        return Telemetry(app, span_exporter, metric_reader)

    yield make


def exported_strings(telemetry: Telemetry) -> list[str]:
    """Every string that leaves the process: span names, attributes, events, metric labels."""
    out: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for item in value:
                add(item)
        else:
            out.append(str(value))

    for span in telemetry.server_spans():
        out.append(span.name)
        if span.status.description:
            out.append(span.status.description)
        for key, value in (span.attributes or {}).items():
            out.append(key)
            add(value)
        for event in span.events:
            out.append(event.name)
            for key, value in (event.attributes or {}).items():
                out.append(key)
                add(value)
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    for key, value in point.attributes.items():
                        out.append(key)
                        add(value)
    return out


def assert_nowhere(telemetry: Telemetry, secret: str) -> None:
    leaks = [s for s in exported_strings(telemetry) if secret.lower() in s.lower()]
    assert leaks == []


# --- no source ------------------------------------------------------------------


def test_no_source_no_consumer(make_app: MakeApp) -> None:
    telemetry = make_app()
    response = telemetry.get("/items/1", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200
    assert telemetry.consumer_of_span() == {}
    assert telemetry.consumer_of_metric() == {}
    # The span and the metrics really exist: the absence above means something.
    assert telemetry.span_attributes()["http.route"] == "/items/<int:item_id>"


# --- each source alone -------------------------------------------------------


def test_header_alone_is_pseudonymised(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_header="X-API-Key")
    telemetry.get("/items/1", headers={"X-API-Key": API_KEY})

    expected = pseudonymize(API_KEY, DEFAULT_HASH_KEY)
    assert expected != API_KEY
    assert telemetry.consumer_of_span() == {CONSUMER_ID: expected}
    assert telemetry.consumer_of_metric() == {CONSUMER_ID: expected}


def test_header_name_is_case_insensitive(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_header="x-api-key")
    telemetry.get("/items/1", headers={"X-Api-Key": API_KEY})
    assert telemetry.consumer_of_span() == {CONSUMER_ID: pseudonymize(API_KEY, DEFAULT_HASH_KEY)}


def test_header_configured_by_environment(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_CONSUMER_HEADER", "X-API-Key")
    telemetry = make_app()
    telemetry.get("/items/1", headers={"X-API-Key": API_KEY})
    assert telemetry.consumer_of_span() == {CONSUMER_ID: pseudonymize(API_KEY, DEFAULT_HASH_KEY)}


def test_empty_header_is_no_consumer(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_header="X-API-Key")
    telemetry.get("/items/1", headers={"X-API-Key": ""})
    assert telemetry.consumer_of_span() == {}


def test_g_consumer_identifier_alone(make_app: MakeApp) -> None:
    telemetry = make_app()
    telemetry.get("/items/1?g_id=customer-7")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "customer-7"}
    assert telemetry.consumer_of_metric() == {CONSUMER_ID: "customer-7"}


def test_g_consumer_identifier_object(make_app: MakeApp) -> None:
    @dataclass
    class ApitallyConsumer:
        identifier: str
        name: str | None = None
        group: str | None = None

    telemetry = make_app()

    @telemetry.app.get("/object")
    def object_view() -> str:
        g.consumer_identifier = ApitallyConsumer("customer-7", "Acme Ltd", "enterprise")
        return "ok"

    telemetry.get("/object")
    assert telemetry.consumer_of_span() == {
        CONSUMER_ID: "customer-7",
        CONSUMER_NAME: "Acme Ltd",
        CONSUMER_GROUP: "enterprise",
    }
    # The display name is not a metric label (cardinality); id and group are.
    assert telemetry.consumer_of_metric() == {
        CONSUMER_ID: "customer-7",
        CONSUMER_GROUP: "enterprise",
    }


def test_g_consumer_identifier_object_without_name_or_group(make_app: MakeApp) -> None:
    class OnlyIdentifier:
        identifier = "customer-8"

    telemetry = make_app()

    @telemetry.app.get("/object")
    def object_view() -> str:
        g.consumer_identifier = OnlyIdentifier()
        return "ok"

    telemetry.get("/object")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "customer-8"}


def test_set_consumer_alone(make_app: MakeApp) -> None:
    telemetry = make_app()
    telemetry.get("/items/1?set_id=customer-9&set_name=Acme&set_group=free")
    assert telemetry.consumer_of_span() == {
        CONSUMER_ID: "customer-9",
        CONSUMER_NAME: "Acme",
        CONSUMER_GROUP: "free",
    }
    assert telemetry.consumer_of_metric() == {CONSUMER_ID: "customer-9", CONSUMER_GROUP: "free"}


def test_set_consumer_in_before_request(make_app: MakeApp) -> None:
    telemetry = make_app()

    @telemetry.app.before_request
    def authenticate() -> None:
        set_consumer("from-before-request", group="gold")

    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {
        CONSUMER_ID: "from-before-request",
        CONSUMER_GROUP: "gold",
    }


@pytest.mark.parametrize(
    ("returned", "span_consumer", "metric_consumer"),
    [
        ("customer-1", {CONSUMER_ID: "customer-1"}, {CONSUMER_ID: "customer-1"}),
        (1234, {CONSUMER_ID: "1234"}, {CONSUMER_ID: "1234"}),
        (
            {"id": "customer-2", "name": "Acme", "group": "pro"},
            {CONSUMER_ID: "customer-2", CONSUMER_NAME: "Acme", CONSUMER_GROUP: "pro"},
            {CONSUMER_ID: "customer-2", CONSUMER_GROUP: "pro"},
        ),
        ({"id": 77}, {CONSUMER_ID: "77"}, {CONSUMER_ID: "77"}),
        (None, {}, {}),
        ({"name": "no id"}, {}, {}),
    ],
)
def test_callback_alone(
    make_app: MakeApp,
    returned: Any,
    span_consumer: dict[str, Any],
    metric_consumer: dict[str, Any],
) -> None:
    telemetry = make_app(consumer_callback=lambda req: returned)
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == span_consumer
    assert telemetry.consumer_of_metric() == metric_consumer


def test_callback_from_environment(make_app: MakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OTEL_FLASK_METRICS_CONSUMER_CALLBACK", "tests.test_config:identify_consumer"
    )
    telemetry = make_app()
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "from-callback"}


# --- precedence -----------------------------------------------------------------

SOURCES = ("header", "g", "set", "callback")
EXPECTED_ID = {
    "header": pseudonymize("header-key", DEFAULT_HASH_KEY),
    "g": "from-g",
    "set": "from-set",
    "callback": "from-callback",
}


@pytest.mark.parametrize(
    "present",
    [combo for size in range(len(SOURCES) + 1) for combo in itertools.combinations(SOURCES, size)],
    ids=lambda combo: "+".join(combo) or "none",
)
def test_precedence(make_app: MakeApp, present: tuple[str, ...]) -> None:
    """header < g.consumer_identifier < set_consumer < callback; a None callback defers."""
    telemetry = make_app(
        consumer_header="X-API-Key",
        consumer_callback=lambda req: "from-callback" if "callback" in present else None,
    )
    query = []
    if "g" in present:
        query.append("g_id=from-g")
    if "set" in present:
        query.append("set_id=from-set")
    headers = {"X-API-Key": "header-key"} if "header" in present else {}

    telemetry.get("/items/1?" + "&".join(query), headers=headers)

    winner = max(present, key=SOURCES.index) if present else None
    expected = {CONSUMER_ID: EXPECTED_ID[winner]} if winner else {}
    assert telemetry.consumer_of_span() == expected
    assert telemetry.consumer_of_metric() == expected


def test_callback_overrides_name_and_group_of_set_consumer(make_app: MakeApp) -> None:
    """The winning source is taken whole, not merged field by field."""
    telemetry = make_app(consumer_callback=lambda req: {"id": "cb"})
    telemetry.get("/items/1?set_id=s&set_name=SetName&set_group=setgroup")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "cb"}


@pytest.mark.parametrize("unusable", [3.5, ["a"], {"id": "x"}, True, object(), "   ", b""])
def test_unusable_set_consumer_defers_to_a_lower_source(make_app: MakeApp, unusable: Any) -> None:
    telemetry = make_app()

    @telemetry.app.get("/unusable")
    def unusable_view() -> str:
        g.consumer_identifier = "from-g"
        set_consumer(unusable)
        return "ok"

    telemetry.get("/unusable")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "from-g"}


# --- pseudonyms -----------------------------------------------------------------


def test_pseudonym_is_stable_across_requests_and_apps(make_app: MakeApp) -> None:
    first = make_app(consumer_header="X-API-Key", consumer_hash_key="k1")
    first.get("/items/1", headers={"X-API-Key": API_KEY})
    first.get("/items/2", headers={"X-API-Key": API_KEY})
    first.get("/items/3", headers={"X-API-Key": "another-key"})
    ids = [s.attributes[CONSUMER_ID] for s in first.server_spans()]  # type: ignore[index]
    assert ids[0] == ids[1] == pseudonymize(API_KEY, b"k1")
    assert ids[2] == pseudonymize("another-key", b"k1")
    assert ids[2] != ids[0]
    # Two requests by one consumer are one metric series.
    series = {p[CONSUMER_ID] for p in first.metric_attributes()}
    assert series == {ids[0], ids[2]}


def test_pseudonym_depends_on_hash_key_from_keyword(make_app: MakeApp) -> None:
    ids = []
    for key in ("key-one", "key-two"):
        telemetry = make_app(consumer_header="X-API-Key", consumer_hash_key=key)
        telemetry.spans.clear()
        telemetry.get("/items/1", headers={"X-API-Key": API_KEY})
        ids.append(telemetry.span_attributes()[CONSUMER_ID])
        assert ids[-1] == pseudonymize(API_KEY, key.encode())
    assert ids[0] != ids[1]
    assert pseudonymize(API_KEY, DEFAULT_HASH_KEY) not in ids


def test_pseudonym_depends_on_hash_key_from_environment(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_CONSUMER_HASH_KEY", "env-secret")
    telemetry = make_app(consumer_header="X-API-Key")
    telemetry.get("/items/1", headers={"X-API-Key": API_KEY})
    consumer_id = telemetry.span_attributes()[CONSUMER_ID]
    assert consumer_id == pseudonymize(API_KEY, b"env-secret")
    assert consumer_id != pseudonymize(API_KEY, DEFAULT_HASH_KEY)
    assert_nowhere(telemetry, "env-secret")


def test_keyword_hash_key_beats_environment(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_CONSUMER_HASH_KEY", "env-secret")
    telemetry = make_app(consumer_header="X-API-Key", consumer_hash_key="code-secret")
    telemetry.get("/items/1", headers={"X-API-Key": API_KEY})
    assert telemetry.span_attributes()[CONSUMER_ID] == pseudonymize(API_KEY, b"code-secret")


def test_raw_header_opt_in_exports_the_value(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_header="X-Client-Name", consumer_header_raw=True)
    telemetry.get("/items/1", headers={"X-Client-Name": "mobile-app"})
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "mobile-app"}
    assert telemetry.consumer_of_metric() == {CONSUMER_ID: "mobile-app"}


def test_raw_header_opt_in_from_environment(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_CONSUMER_HEADER", "X-Client-Name")
    monkeypatch.setenv("OTEL_FLASK_METRICS_CONSUMER_HEADER_RAW", "true")
    telemetry = make_app()
    telemetry.get("/items/1", headers={"X-Client-Name": "mobile-app"})
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "mobile-app"}


def test_raw_header_value_is_cleaned(make_app: MakeApp) -> None:
    telemetry = make_app(
        consumer_header="X-Client-Name", consumer_header_raw=True, consumer_id_max_length=12
    )
    telemetry.get(
        "/items/1", environ_overrides={"HTTP_X_CLIENT_NAME": "  mobile\r\n-app-with-a-long-name "}
    )
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "mobile-app-w"}


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-API-Key", API_KEY),
        ("Authorization", f"Bearer {API_KEY}"),
    ],
)
def test_raw_credential_never_exported(make_app: MakeApp, header: str, value: str) -> None:
    telemetry = make_app(consumer_header=header)
    for path in ("/items/1", "/items/2?set_id=", "/boom"):
        telemetry.get(path, headers={header: value})
    assert len(telemetry.server_spans()) == 3
    for span in telemetry.server_spans():
        assert CONSUMER_ID in (span.attributes or {})
    assert_nowhere(telemetry, API_KEY)
    # Every HTTP metric, not only the duration.
    for name in HTTP_METRICS:
        for point in metric_points(telemetry.reader, name):
            assert API_KEY not in repr(dict(point.attributes))


# --- ReadMe's shape -----------------------------------------------------------


def test_readme_mapping(make_app: MakeApp) -> None:
    telemetry = make_app(
        consumer_callback=lambda req: {
            "api_key": API_KEY,
            "label": "Acme Ltd",
            "email": "ops@acme.example",
        }
    )
    telemetry.get("/items/1")

    expected_id = pseudonymize(API_KEY, DEFAULT_HASH_KEY)
    assert telemetry.consumer_of_span() == {CONSUMER_ID: expected_id, CONSUMER_NAME: "Acme Ltd"}
    assert telemetry.consumer_of_metric() == {CONSUMER_ID: expected_id}
    assert_nowhere(telemetry, API_KEY)
    assert_nowhere(telemetry, "ops@acme.example")
    assert_nowhere(telemetry, "acme.example")


def test_readme_mapping_uses_the_configured_hash_key(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_hash_key="k", consumer_callback=lambda req: {"api_key": API_KEY})
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: pseudonymize(API_KEY, b"k")}


def test_readme_mapping_with_unusable_key_defers(make_app: MakeApp) -> None:
    telemetry = make_app(
        consumer_callback=lambda req: {"api_key": None, "label": "x", "email": "a@b.example"}
    )
    telemetry.get("/items/1?set_id=from-set")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "from-set"}
    assert_nowhere(telemetry, "a@b.example")


def test_mapping_with_email_never_exports_it(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_callback=lambda req: {"id": "c-1", "email": "ops@acme.example"})
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "c-1"}
    assert_nowhere(telemetry, "ops@acme.example")


# --- a failing callback never breaks the request --------------------------------


@pytest.mark.parametrize("path", ["/items/5", "/items/5?set_id=ignored-or-not", "/missing"])
def test_callback_raising_serves_the_request_unchanged(make_app: MakeApp, path: str) -> None:
    calls: list[str] = []

    def broken(req: Any) -> Any:
        calls.append(req.path)
        raise ValueError("callback bug")

    plain = Flask(__name__)
    add_views(plain)
    expected = plain.test_client().get(path)

    telemetry = make_app(consumer_callback=broken)
    response = telemetry.get(path)

    assert calls == [path.split("?")[0]]
    assert response.status_code == expected.status_code
    assert response.get_data() == expected.get_data()
    assert response.headers.get("Content-Type") == expected.headers.get("Content-Type")
    assert response.headers.get("Content-Length") == expected.headers.get("Content-Length")
    attributes = telemetry.span_attributes()
    assert attributes["http.response.status_code"] == expected.status_code
    # The callback's failure is not the request's error.
    assert "error.type" not in attributes
    if "set_id" in path:
        # set_consumer still identifies the request when the callback fails.
        assert telemetry.consumer_of_span() == {CONSUMER_ID: "ignored-or-not"}
    else:
        assert telemetry.consumer_of_span() == {}
        assert telemetry.consumer_of_metric() == {}


def test_callback_raising_after_view_error(make_app: MakeApp) -> None:
    def broken(req: Any) -> Any:
        raise KeyError("nope")

    telemetry = make_app(consumer_callback=broken)
    response = telemetry.get("/boom")
    assert response.status_code == 500
    attributes = telemetry.span_attributes()
    assert attributes["error.type"] == "RuntimeError"
    assert telemetry.consumer_of_span() == {}


# --- cleaning -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("acme\r\nX-Injected: 1", "acmeX-Injected: 1"),
        ("acme\nfake log line", "acmefake log line"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("nul\x00byte\x7f", "nulbyte"),
        ("tab\tinside", "tabinside"),
        ("  padded  ", "padded"),
        (42, "42"),
        (0, "0"),
        (-3, "-3"),
        (b"bytes-id", "bytes-id"),
        (b"\xffbad-utf8", "\ufffdbad-utf8"),
        ("ünïcödé-ok", "ünïcödé-ok"),
    ],
)
def test_ids_are_cleaned(make_app: MakeApp, given: Any, expected: str) -> None:
    telemetry = make_app(consumer_callback=lambda req: {"id": given, "group": given})
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: expected, CONSUMER_GROUP: expected}
    assert telemetry.consumer_of_metric() == {CONSUMER_ID: expected, CONSUMER_GROUP: expected}
    for value in exported_strings(telemetry):
        assert "\r" not in value and "\n" not in value


@pytest.mark.parametrize("control", ["\x85", "\x9b", "\x80"])
def test_c1_control_characters_are_removed(make_app: MakeApp, control: str) -> None:
    """C1 controls (NEL, CSI, ...) are control characters too (Unicode category Cc)."""
    telemetry = make_app(consumer_callback=lambda req: f"acme{control}31m")
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "acme31m"}


def test_length_cap_applies_to_id_name_and_group(make_app: MakeApp) -> None:
    telemetry = make_app(
        consumer_id_max_length=5,
        consumer_callback=lambda req: {"id": "abcdefghij", "name": "Long Name", "group": "premium"},
    )
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {
        CONSUMER_ID: "abcde",
        CONSUMER_NAME: "Long ",
        CONSUMER_GROUP: "premi",
    }


def test_default_length_cap_is_128(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_callback=lambda req: "x" * 500)
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "x" * 128}


def test_length_cap_from_environment(make_app: MakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_CONSUMER_ID_MAX_LENGTH", "3")
    telemetry = make_app()
    telemetry.get("/items/1?g_id=abcdef")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "abc"}


def test_pseudonym_is_not_truncated_below_its_length_by_a_large_cap(make_app: MakeApp) -> None:
    telemetry = make_app(consumer_header="X-API-Key")
    telemetry.get("/items/1", headers={"X-API-Key": "k" * 10_000})
    consumer_id = telemetry.span_attributes()[CONSUMER_ID]
    assert consumer_id == pseudonymize("k" * 10_000, DEFAULT_HASH_KEY)
    assert len(consumer_id) == 16


@pytest.mark.parametrize("dropped", [3.5, True, False, ["list"], {"set"}, object(), "", " \r\n "])
def test_unusable_ids_are_dropped(make_app: MakeApp, dropped: Any) -> None:
    telemetry = make_app(consumer_callback=lambda req: dropped)
    response = telemetry.get("/items/1")
    assert response.status_code == 200
    assert telemetry.consumer_of_span() == {}
    assert telemetry.consumer_of_metric() == {}


@pytest.mark.parametrize("dropped", [3.5, True, ["list"], object(), "  "])
def test_unusable_name_and_group_are_dropped_but_id_kept(make_app: MakeApp, dropped: Any) -> None:
    telemetry = make_app(
        consumer_callback=lambda req: {"id": "c-1", "name": dropped, "group": dropped}
    )
    telemetry.get("/items/1")
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "c-1"}
    assert telemetry.consumer_of_metric() == {CONSUMER_ID: "c-1"}


# --- the callback: once, after the view ---------------------------------------------


def test_callback_called_once_after_the_view(make_app: MakeApp) -> None:
    seen: list[tuple[str, str | None]] = []

    def callback(req: Any) -> Any:
        value = g.get("view_value")
        seen.append((req.path, value))
        return value

    telemetry = make_app(consumer_callback=callback)
    telemetry.get("/items/1?view_value=set-by-view")
    telemetry.get("/items/2?view_value=second")

    assert seen == [("/items/1", "set-by-view"), ("/items/2", "second")]
    assert [s.attributes[CONSUMER_ID] for s in telemetry.server_spans()] == [  # type: ignore[index]
        "set-by-view",
        "second",
    ]


def test_callback_called_once_when_the_view_fails(make_app: MakeApp) -> None:
    calls: list[str] = []
    telemetry = make_app(consumer_callback=lambda req: calls.append(req.path) or "c-1")
    response = telemetry.get("/boom")
    assert response.status_code == 500
    assert calls == ["/boom"]
    assert telemetry.consumer_of_span() == {CONSUMER_ID: "c-1"}


def test_callback_called_once_for_a_404(make_app: MakeApp) -> None:
    calls: list[str] = []
    telemetry = make_app(consumer_callback=lambda req: calls.append(req.path) or "c-1")
    response = telemetry.get("/nowhere")
    assert response.status_code == 404
    assert calls == ["/nowhere"]


def test_callback_not_called_for_excluded_urls(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FLASK_EXCLUDED_URLS", "items")
    calls: list[str] = []
    telemetry = make_app(consumer_callback=lambda req: calls.append(req.path) or "c-1")
    response = telemetry.get("/items/1")
    assert response.status_code == 200
    assert calls == []
    assert telemetry.server_spans() == []


# --- metric label cap -------------------------------------------------------------


def test_consumers_past_the_cap_become_other_in_metrics_only(make_app: MakeApp) -> None:
    telemetry = make_app(max_consumers=2)
    for consumer in ("a", "b", "c", "d", "a", "c"):
        telemetry.get(f"/items/1?set_id={consumer}&set_group=g-{consumer}")

    span_ids = [s.attributes[CONSUMER_ID] for s in telemetry.server_spans()]  # type: ignore[index]
    assert span_ids == ["a", "b", "c", "d", "a", "c"]

    counts = {
        (p.attributes[CONSUMER_ID], p.attributes.get(CONSUMER_GROUP)): p.count
        for p in metric_points(telemetry.reader, DURATION)
    }
    assert counts == {
        ("a", "g-a"): 2,
        ("b", "g-b"): 1,
        # Groups are capped the same way, so per-tenant groups stay bounded too.
        (OVERFLOW_CONSUMER_ID, OVERFLOW_CONSUMER_ID): 3,
    }


def test_cap_from_environment(make_app: MakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_FLASK_METRICS_MAX_CONSUMERS", "1")
    telemetry = make_app()
    telemetry.get("/items/1?set_id=first")
    telemetry.get("/items/1?set_id=second")
    labels = sorted(p[CONSUMER_ID] for p in telemetry.metric_attributes())
    assert labels == sorted(["first", OVERFLOW_CONSUMER_ID])


def test_label_limiter_keeps_the_first_ids() -> None:
    limiter = ConsumerLabelLimiter(3)
    assert [limiter.label(i) for i in ("a", "b", "a", "c", "d", "b", "e", "c")] == [
        "a",
        "b",
        "a",
        "c",
        OVERFLOW_CONSUMER_ID,
        "b",
        OVERFLOW_CONSUMER_ID,
        "c",
    ]


def test_label_limiter_is_bounded_under_concurrency() -> None:
    limiter = ConsumerLabelLimiter(50)
    labels: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8, timeout=30)

    def worker(offset: int) -> None:
        barrier.wait()
        mine = [limiter.label(f"id-{offset}-{n}") for n in range(200)]
        with lock:
            labels.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive()

    kept = {label for label in labels if label != OVERFLOW_CONSUMER_ID}
    assert len(kept) == 50
    assert labels.count(OVERFLOW_CONSUMER_ID) == 8 * 200 - 50
