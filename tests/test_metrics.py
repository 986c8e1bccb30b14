from __future__ import annotations

from opentelemetry.metrics import CallbackOptions

from otel_flask_metrics.metrics import ActiveRequests


def _observed(active: ActiveRequests) -> dict[tuple[str, str], int | float]:
    return {
        (o.attributes["http.request.method"], o.attributes["url.scheme"]): o.value  # type: ignore[index]
        for o in active.observe(CallbackOptions())
    }


def test_active_requests_counts_what_is_in_flight_per_method_and_scheme() -> None:
    active = ActiveRequests()
    first, second, third = object(), object(), object()
    active.start(first, "GET", "http")
    active.start(second, "GET", "http")
    active.start(third, "POST", "https")
    assert _observed(active) == {("GET", "http"): 2, ("POST", "https"): 1}
    active.end(first)
    active.end(third)
    assert _observed(active) == {("GET", "http"): 1, ("POST", "https"): 0}


def test_an_idle_method_stays_at_zero_and_ending_twice_is_harmless() -> None:
    active = ActiveRequests()
    token = object()
    active.start(token, "GET", "http")
    active.end(token)
    active.end(token)
    assert _observed(active) == {("GET", "http"): 0}, "a seen series reports 0, not nothing"
    assert not active.in_flight
