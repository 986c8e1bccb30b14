"""Custom metrics from view code: ``custom.count`` and ``custom.timer``.

``custom`` uses the *global* meter provider unless one is passed, and a test
process can set the global only once. These tests point the module's default
instruments at the ``meter_provider`` fixture (``monkeypatch`` restores them);
one test passes ``meter_provider=`` explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g, request
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otel_flask_metrics import FlaskMetrics, custom, set_consumer
from otel_flask_metrics.consumers import DEFAULT_HASH_KEY, OVERFLOW_CONSUMER_ID
from otel_flask_metrics.metrics import DURATION_BUCKETS
from otel_flask_metrics.redaction import pseudonymize
from tests.conftest import metric_points

CONSUMER_ID = "api.consumer.id"
CONSUMER_GROUP = "api.consumer.group"
ROUTE = "http.route"


@pytest.fixture
def custom_reader(
    monkeypatch: pytest.MonkeyPatch,
    meter_provider: MeterProvider,
    metric_reader: InMemoryMetricReader,
) -> Iterator[InMemoryMetricReader]:
    """Route ``custom``'s measurements to the in-memory reader."""
    monkeypatch.setattr(custom, "_global", custom._Instruments(meter_provider.get_meter("tests")))
    yield metric_reader


class FakeClock:
    """A ``default_timer`` that advances only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(custom, "default_timer", fake)
    return fake


def instrumented_app(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, **options: Any
) -> Flask:
    app = Flask(__name__)
    FlaskMetrics(app, tracer_provider=tracer_provider, meter_provider=meter_provider, **options)
    return app


def get(app: Flask, path: str, **kwargs: Any) -> Any:
    response = app.test_client().get(path, buffered=True, **kwargs)
    response.close()
    assert response.status_code < 500, response.get_data(as_text=True)
    return response


def attributes_of(reader: InMemoryMetricReader, name: str) -> list[dict[str, Any]]:
    return [dict(p.attributes) for p in metric_points(reader, name)]


# --- outside a request --------------------------------------------------------------


def test_count_outside_a_request_has_only_given_attributes(
    custom_reader: InMemoryMetricReader,
) -> None:
    custom.count("jobs.done", attributes={"job.kind": "nightly"})
    custom.count("jobs.done", 4, attributes={"job.kind": "nightly"})
    custom.count("jobs.done")

    points = {
        tuple(sorted(p.attributes.items())): p.value
        for p in metric_points(custom_reader, "jobs.done")
    }
    assert points == {(("job.kind", "nightly"),): 5, (): 1}


def test_timer_outside_a_request(custom_reader: InMemoryMetricReader, clock: FakeClock) -> None:
    with custom.timer("jobs.duration", attributes={"job.kind": "nightly"}):
        clock.now += 0.25

    (point,) = metric_points(custom_reader, "jobs.duration")
    assert dict(point.attributes) == {"job.kind": "nightly"}
    assert point.count == 1
    assert point.sum == pytest.approx(0.25)
    assert list(point.explicit_bounds) == list(DURATION_BUCKETS)


def test_timer_unit_is_seconds(custom_reader: InMemoryMetricReader, clock: FakeClock) -> None:
    with custom.timer("jobs.duration"):
        clock.now += 1.5
    data = custom_reader.get_metrics_data()
    assert data is not None
    units = {
        m.name: m.unit
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert units["jobs.duration"] == "s"


def test_timer_records_when_the_block_raises(
    custom_reader: InMemoryMetricReader, clock: FakeClock
) -> None:
    with pytest.raises(ZeroDivisionError):
        with custom.timer("jobs.duration"):
            clock.now += 2.0
            1 / 0  # noqa: B018
    (point,) = metric_points(custom_reader, "jobs.duration")
    assert point.count == 1
    assert point.sum == pytest.approx(2.0)


def test_count_in_app_context_without_request(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider)
    with app.app_context():
        custom.count("cli.runs", attributes={"a": "b"})
    assert attributes_of(custom_reader, "cli.runs") == [{"a": "b"}]


def test_given_attributes_are_not_modified(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider)
    given = {"order.kind": "express"}

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        set_consumer("c-1")
        custom.count("orders.created", attributes=given)
        return "ok"

    get(app, "/orders/1")
    assert given == {"order.kind": "express"}


# --- inside a request ---------------------------------------------------------------


def test_count_in_a_view_carries_route_and_consumer(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider)

    @app.post("/orders/<int:order_id>")
    def create_order(order_id: int) -> str:
        set_consumer("customer-42", name="Acme", group="gold")
        custom.count("orders.created", attributes={"order.kind": "express"})
        return "created"

    response = app.test_client().post("/orders/7", buffered=True)
    response.close()
    assert response.status_code == 200

    assert attributes_of(custom_reader, "orders.created") == [
        {
            "order.kind": "express",
            ROUTE: "/orders/<int:order_id>",
            CONSUMER_ID: "customer-42",
            CONSUMER_GROUP: "gold",
        }
    ]


def test_timer_in_a_view_carries_route_and_consumer(
    custom_reader: InMemoryMetricReader,
    clock: FakeClock,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider)

    @app.get("/pay/<provider>")
    def pay(provider: str) -> str:
        g.consumer_identifier = "customer-43"
        with custom.timer("orders.payment.duration"):
            clock.now += 0.5
        return "paid"

    get(app, "/pay/stripe")

    (point,) = metric_points(custom_reader, "orders.payment.duration")
    assert dict(point.attributes) == {ROUTE: "/pay/<provider>", CONSUMER_ID: "customer-43"}
    assert point.sum == pytest.approx(0.5)


def test_consumer_from_header_is_the_pseudonym(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider, consumer_header="X-API-Key")

    @app.get("/things")
    def things() -> str:
        custom.count("things.listed")
        return "ok"

    get(app, "/things", headers={"X-API-Key": "sk_live_raw_credential_1234"})

    (attributes,) = attributes_of(custom_reader, "things.listed")
    assert attributes == {
        ROUTE: "/things",
        CONSUMER_ID: pseudonymize("sk_live_raw_credential_1234", DEFAULT_HASH_KEY),
    }
    assert "sk_live_raw_credential_1234" not in repr(attributes)


def test_consumer_known_so_far_only(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    """A measurement before set_consumer() has no consumer; one after has it."""
    app = instrumented_app(tracer_provider, meter_provider)

    @app.get("/steps")
    def steps() -> str:
        custom.count("steps", attributes={"step": "before"})
        set_consumer("customer-44")
        custom.count("steps", attributes={"step": "after"})
        return "ok"

    get(app, "/steps")
    by_step = {a["step"]: a for a in attributes_of(custom_reader, "steps")}
    assert by_step["before"] == {"step": "before", ROUTE: "/steps"}
    assert by_step["after"] == {"step": "after", ROUTE: "/steps", CONSUMER_ID: "customer-44"}


def test_custom_metrics_do_not_call_the_callback(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    """The callback is promised one call per request, after the view."""
    calls: list[str] = []

    def callback(req: Any) -> str:
        calls.append(req.path)
        return "from-callback"

    app = instrumented_app(tracer_provider, meter_provider, consumer_callback=callback)

    @app.get("/counted")
    def counted() -> str:
        set_consumer("from-set")
        custom.count("counted")
        custom.count("counted")
        with custom.timer("counted.duration"):
            pass
        return "ok"

    get(app, "/counted")
    assert calls == ["/counted"]
    assert attributes_of(custom_reader, "counted") == [{ROUTE: "/counted", CONSUMER_ID: "from-set"}]


def test_given_attributes_win_over_the_automatic_ones(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider)

    @app.get("/override")
    def override() -> str:
        set_consumer("real", group="real-group")
        custom.count(
            "overridden",
            attributes={ROUTE: "mine", CONSUMER_ID: "mine", CONSUMER_GROUP: "mine"},
        )
        return "ok"

    get(app, "/override")
    assert attributes_of(custom_reader, "overridden") == [
        {ROUTE: "mine", CONSUMER_ID: "mine", CONSUMER_GROUP: "mine"}
    ]


def test_consumer_label_is_capped_like_the_http_metrics(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider, max_consumers=1)

    @app.get("/as/<who>")
    def act_as(who: str) -> str:
        set_consumer(who)
        custom.count("acted")
        return "ok"

    for who in ("first", "second", "third", "first"):
        get(app, f"/as/{who}")

    counts = {p.attributes[CONSUMER_ID]: p.value for p in metric_points(custom_reader, "acted")}
    assert counts == {"first": 2, OVERFLOW_CONSUMER_ID: 2}
    http_labels = {
        p.attributes[CONSUMER_ID]
        for p in metric_points(custom_reader, "http.server.request.duration")
    }
    assert http_labels == {"first", OVERFLOW_CONSUMER_ID}


def test_app_without_extension_gets_route_only(custom_reader: InMemoryMetricReader) -> None:
    app = Flask(__name__)

    @app.get("/plain/<int:n>")
    def plain(n: int) -> str:
        set_consumer("customer-45")
        custom.count("plain")
        return "ok"

    get(app, "/plain/3")
    assert attributes_of(custom_reader, "plain") == [{ROUTE: "/plain/<int:n>"}]


def test_no_route_when_no_rule_matched(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider)

    @app.errorhandler(404)
    def not_found(exc: Exception) -> tuple[str, int]:
        custom.count("not_found", attributes={"path.kind": "unknown"})
        return "nope", 404

    response = app.test_client().get("/no/such/thing", buffered=True)
    response.close()
    assert response.status_code == 404
    assert attributes_of(custom_reader, "not_found") == [{"path.kind": "unknown"}]


def test_raw_path_is_never_a_label(
    custom_reader: InMemoryMetricReader,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
) -> None:
    app = instrumented_app(tracer_provider, meter_provider)

    @app.get("/users/<user_id>")
    def user(user_id: str) -> str:
        custom.count("users.viewed")
        return request.path

    for user_id in ("alice", "bob"):
        get(app, f"/users/{user_id}")

    (point,) = metric_points(custom_reader, "users.viewed")
    assert dict(point.attributes) == {ROUTE: "/users/<user_id>"}
    assert point.value == 2


def test_an_explicit_meter_provider_is_used(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader
) -> None:
    custom.count("explicit.count", 2, meter_provider=meter_provider)
    with custom.timer("explicit.timer", meter_provider=meter_provider):
        pass
    assert [p.value for p in metric_points(metric_reader, "explicit.count")] == [2]
    assert [p.count for p in metric_points(metric_reader, "explicit.timer")] == [1]
