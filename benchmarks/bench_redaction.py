"""Per-span cost of :class:`~otel_flask_metrics.redaction.RedactingSpanProcessor`.

Not a test: run it by hand (``PYTHONPATH=. python benchmarks/bench_redaction.py``)
and copy the figures into the README. Two measurements:

* ``on_end`` alone: a batch of pre-built spans (about 15 typical HTTP server
  attributes and one event) is pushed through a processor that forwards to a
  no-op processor, with and without redaction. This isolates what redaction
  adds on the thread that ends the span.
* whole span: start, set the attributes, end, with a ``TracerProvider`` whose
  only processor is the no-op (baseline) or the redacting wrapper around it,
  which puts the overhead in proportion to what instrumentation already costs.

Each figure is the median over several rounds, in microseconds per span.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from otel_flask_metrics.redaction import RedactingSpanProcessor

Attrs = dict[str, AttributeValue]


def _clean_attributes(i: int) -> Attrs:
    return {
        "http.request.method": "GET",
        "url.scheme": "https",
        "url.path": f"/v1/orders/{i}",
        "url.query": "page=2&per_page=50",
        "url.full": f"https://api.example.com/v1/orders/{i}?page=2&per_page=50",
        "http.route": "/v1/orders/<int:order_id>",
        "server.address": "api.example.com",
        "server.port": 443,
        "client.address": "203.0.113.7",
        "network.protocol.version": "1.1",
        "user_agent.original": "python-requests/2.32.3",
        "http.request.header.accept": ("application/json",),
        "http.response.status_code": 200,
        "http.response.body.size": 1834,
        "api.consumer.id": "3f2a9c1d5e7b8a60",
    }


def _secret_attributes(i: int) -> Attrs:
    attrs = _clean_attributes(i)
    attrs.update({
        "url.query": "page=2&api_key=abc123def456",
        "url.full": f"https://api.example.com/v1/orders/{i}?page=2&api_key=abc123def456",
        "http.request.header.authorization": ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",),
        "http.request.header.cookie": ("session=0123456789abcdef",),
        "enduser.email": "jane.doe@example.com",
    })
    return attrs


class _Null(SpanProcessor):
    """Stands in for the BatchSpanProcessor: takes the span, does nothing."""

    def on_end(self, span: ReadableSpan) -> None:
        pass


def _make_spans(attrs: Callable[[int], Attrs], n: int) -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    for i in range(n):
        with tracer.start_as_current_span("GET /v1/orders/<int:order_id>",
                                          kind=SpanKind.SERVER, attributes=attrs(i)) as span:
            span.add_event("request.received", {"http.request.body.size": 0})
    spans = exporter.get_finished_spans()
    provider.shutdown()
    return spans


# CPU time of this process by default: on a shared machine wall-clock time
# mostly measures the neighbours. --clock wall for an idle machine.
_CLOCKS: dict[str, Callable[[], float]] = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = _CLOCKS["cpu"]


def _median_us(fn: Callable[[], None], per_call: int, rounds: int) -> float:
    fn()  # warm-up: key cache, regex caches
    timings = []
    for _ in range(rounds):
        start = _clock()
        fn()
        timings.append((_clock() - start) / per_call * 1e6)
    return statistics.median(timings)


def bench_on_end(n: int, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {}
    baseline = _Null()
    redacting = RedactingSpanProcessor(_Null())
    for label, attrs in (("no secrets", _clean_attributes), ("with secrets", _secret_attributes)):
        spans = _make_spans(attrs, n)

        def run(proc: SpanProcessor = redacting, spans: Sequence[ReadableSpan] = spans) -> None:
            for s in spans:
                proc.on_end(s)

        def base(spans: Sequence[ReadableSpan] = spans) -> None:
            for s in spans:
                baseline.on_end(s)

        results[f"on_end forward only ({label})"] = _median_us(base, n, rounds)
        results[f"on_end redacting ({label})"] = _median_us(run, n, rounds)
    return results


def bench_whole_span(n: int, rounds: int) -> dict[str, float]:
    results: dict[str, float] = {}
    for label, attrs in (("no secrets", _clean_attributes), ("with secrets", _secret_attributes)):
        prepared = [attrs(i) for i in range(n)]
        for mode in ("forward only", "redacting"):
            provider = TracerProvider()
            null = _Null()
            provider.add_span_processor(null if mode == "forward only"
                                        else RedactingSpanProcessor(null))
            tracer = provider.get_tracer("bench")

            def run(tracer: object = tracer, prepared: list[Attrs] = prepared) -> None:
                for a in prepared:
                    with tracer.start_as_current_span(  # type: ignore[attr-defined]
                        "GET /v1/orders/<int:order_id>", kind=SpanKind.SERVER, attributes=a
                    ) as span:
                        span.add_event("request.received", {"http.request.body.size": 0})

            results[f"whole span {mode} ({label})"] = _median_us(run, n, rounds)
            provider.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=2000, help="spans per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds (median reported)")
    parser.add_argument("--clock", choices=sorted(_CLOCKS), default="cpu")
    args = parser.parse_args()
    global _clock
    _clock = _CLOCKS[args.clock]

    results = bench_on_end(args.spans, args.rounds)
    results.update(bench_whole_span(args.spans, args.rounds))
    width = max(map(len, results))
    for name, us in results.items():
        print(f"{name:<{width}}  {us:8.2f} µs/span")
    print()
    for label in ("no secrets", "with secrets"):
        added = (results[f"on_end redacting ({label})"]
                 - results[f"on_end forward only ({label})"])
        whole = results[f"whole span forward only ({label})"]
        ratio = results[f"whole span redacting ({label})"] / whole
        print(f"{label}: redaction adds {added:.2f} µs/span; whole span x{ratio:.2f} "
              f"({results[f'whole span redacting ({label})']:.1f} vs {whole:.1f} µs)")


if __name__ == "__main__":
    main()
