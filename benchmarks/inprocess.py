"""One in-process measurement of one variant; run by ``overhead.py`` in a fresh process.

Builds the variant's app, sends ``--warmup`` then ``--requests`` requests from
:data:`app.REQUEST_MIX` through Flask's test client (``buffered=True``, so the
response iterable is closed and spans end, as under a real server), and prints
one JSON line: wall and CPU microseconds per request (the CPU of all threads,
export included: the providers are shut down, so every span of the measured
requests is exported, before the CPU clock stops), peak RSS and RSS after the run.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from typing import Any

import app as bench_app


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def send(client: Any, n: int, method: str | None = None) -> None:
    """``n`` requests of :data:`app.REQUEST_MIX`, cycled; only its ``method`` ones if given."""
    mix = bench_app.REQUEST_MIX
    if method is not None:
        mix = tuple(r for r in mix if r.method == method)
    size = len(mix)
    for i in range(n):
        r = mix[i % size]
        if r.body is None:
            resp = client.open(r.path, method=r.method, headers=r.headers, buffered=True)
        else:
            resp = client.open(
                r.path, method=r.method, headers=r.headers, data=r.body, buffered=True
            )
        if resp.status_code >= 400:
            raise SystemExit(f"{r.method} {r.path} answered {resp.status_code}")


def bypass_redaction() -> None:
    """Patch, in this process only, the redacting exporter into a pass-through."""
    from otel_flask_metrics.redaction import RedactingSpanExporter

    def export(self: Any, spans: Any) -> Any:
        return self.exporter.export(spans)

    RedactingSpanExporter.export = export  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, choices=bench_app.VARIANTS)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--no-redaction", action="store_true",
        help="(profiling ablation) forward ended spans past the redaction step unchanged",
    )
    args = parser.parse_args()

    if args.no_redaction:
        bypass_redaction()
    flask_app = bench_app.build_app(args.variant)
    client = flask_app.test_client()
    send(client, args.warmup)
    # The warm-up's spans leave now, so the measured window exports only its own.
    bench_app.flush_providers()
    gc.collect()
    cpu_start = time.process_time()
    start = time.perf_counter()
    send(client, args.requests)
    elapsed = time.perf_counter() - start
    rss_after = _rss_kib()
    scrape_bytes = None
    if args.variant == "pfe":
        # What one Prometheus scrape of this process would transfer.
        scrape_bytes = len(client.get("/metrics", buffered=True).data)
    bench_app.shutdown_providers()
    # CPU of every thread, up to the last export of the measured requests:
    # steadier than wall time on a shared machine, and it counts the export
    # threads' work even when it finishes after the loop.
    cpu = time.process_time() - cpu_start
    result = {
        "variant": args.variant,
        "requests": args.requests,
        "total_requests": args.requests + args.warmup,
        "us_per_request": elapsed / args.requests * 1e6,
        "cpu_us_per_request": cpu / args.requests * 1e6,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "rss_after_kib": rss_after,
        "scrape_bytes": scrape_bytes,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
