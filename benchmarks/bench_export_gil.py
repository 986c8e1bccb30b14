"""How long a request thread waits for the GIL while the export thread encodes spans.

Not a test. One process: a "request" thread loops over 0.2 ms of I/O (a
sleep, which releases the GIL as a socket read does) and a little Python,
and records each iteration's time; an "export" thread encodes 512-span
batches of real server spans (from the benchmark app, ``ofm-full``) back to
back, as a busy span processor would. Each mode runs in a fresh process::

    python benchmarks/bench_export_gil.py [--rounds 3] [--iterations 3000]

Modes: ``idle`` (no export thread: the floor), ``sdk`` (the exporter's own
encoder, fast path off), ``distro`` (the fast path: memoised attribute
encoding and a 50 µs pause every 0.5 ms of work, :mod:`otel_flask_metrics.export_pauses`).
Prints p50 / p99 / max of the request thread's iterations, in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("idle", "sdk", "distro")


def child(mode: str, iterations: int) -> dict[str, float]:
    os.environ.update(
        {
            "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",  # never sent to: captured
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
        }
    )
    sys.path.insert(0, str(HERE))
    import app as bench_app
    import inprocess
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from otel_flask_metrics import fast_attributes

    captured: list[object] = []

    def capture(self: object, spans: list[object]) -> SpanExportResult:
        captured.extend(spans)
        return SpanExportResult.SUCCESS

    OTLPSpanExporter.export = capture  # type: ignore[method-assign]
    client = bench_app.build_app("ofm-full").test_client()
    inprocess.send(client, 600)
    bench_app.flush_providers()
    batch = captured[:512]
    if mode == "sdk":
        fast_attributes.uninstall()
    stop = threading.Event()

    def export() -> None:
        while not stop.is_set():
            encode_spans(batch).SerializePartialToString()
            time.sleep(0.002)

    exporter = threading.Thread(target=export, daemon=True)
    if mode != "idle":
        exporter.start()
    times = []
    for _ in range(iterations):
        began = time.perf_counter()
        time.sleep(0.0002)
        total = 0
        for j in range(200):
            total += j
        times.append(time.perf_counter() - began)
    stop.set()
    times.sort()
    return {
        "p50": times[len(times) // 2] * 1e3,
        "p99": times[int(len(times) * 0.99)] * 1e3,
        "max": times[-1] * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.iterations)))
        return
    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--iterations", str(args.iterations)],
                capture_output=True, text=True, timeout=600, check=True,
            )
            results[mode].append(json.loads(out.stdout.splitlines()[-1]))
    print("| mode | p50 ms | p99 ms, median (min-max) | max ms, median |")
    print("| --- | ---: | ---: | ---: |")
    for mode, rows in results.items():
        p99 = [r["p99"] for r in rows]
        print(
            f"| {mode} | {statistics.median(r['p50'] for r in rows):.2f} "
            f"| {statistics.median(p99):.2f} ({min(p99):.2f}-{max(p99):.2f}) "
            f"| {statistics.median(r['max'] for r in rows):.2f} |"
        )


if __name__ == "__main__":
    main()
