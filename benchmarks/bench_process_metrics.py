"""What the worker-health metrics cost per export, in-process, median of 7 rounds.

The three process instruments (CPU time, RSS, uptime) are read by psutil in
their callbacks, which the SDK runs when a reader collects: once per export
(every 15 s by default), never on a request. This times a collection of a
meter provider with them against one without, the difference being their
cost per export.

    python benchmarks/bench_process_metrics.py
"""

from __future__ import annotations

import statistics
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_flask_metrics.process_metrics import ProcessMetrics

COLLECTIONS = 2_000
ROUNDS = 7


def per_collection(with_process_metrics: bool) -> float:
    """Seconds per collection, the median of ROUNDS rounds of COLLECTIONS each."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    if with_process_metrics:
        ProcessMetrics().register(provider)
    # One request counter, so the provider without them has something to collect.
    provider.get_meter("bench").create_counter("requests").add(1)
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(COLLECTIONS):
            reader.get_metrics_data()
        rounds.append((time.perf_counter() - started) / COLLECTIONS)
    provider.shutdown()
    return statistics.median(rounds)


def main() -> None:
    without = per_collection(False)
    with_them = per_collection(True)
    print(f"collection without process metrics: {without * 1e6:7.1f} us")
    print(f"collection with process metrics:    {with_them * 1e6:7.1f} us")
    print(f"their cost per export:              {(with_them - without) * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
