"""Where the time of one ``ofm-full`` request goes, in process.

Not a test. Three views, printed as Markdown::

    python benchmarks/profile_request.py [--requests 4000] [--pyinstrument out.html]

1. **Ablations** (the trustworthy numbers): the in-process benchmark of
   ``overhead.py`` rerun, each in a fresh process, with one piece switched off
   by configuration (or, for redaction, by a pass-through patch applied in the
   benchmark process only). The difference to ``ofm-full`` is what that piece
   costs per request, export thread and GIL contention included.
2. **cProfile by component**: the main thread's own time per request, grouped
   by where the code lives (ours, the OpenTelemetry SDK's trace and metrics
   parts, the API/context, Werkzeug/Flask, ...). cProfile inflates code that
   makes many small calls, so read shares, not absolute figures; and the
   BatchSpanProcessor's export thread is not in it (see the ablations).
3. **Hot spots**: the functions of ours and of the SDK with the largest
   cumulative time per request, and a pyinstrument call tree when installed.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import app as bench_app
import inprocess
import overhead

# name, variant, extra environment, extra arguments of inprocess.py
ABLATIONS: Sequence[tuple[str, str, Mapping[str, str], Sequence[str]]] = (
    ("bare", "bare", {}, ()),
    ("vanilla", "vanilla", {}, ()),
    ("ofm-full", "ofm-full", {}, ()),
    ("- redaction (pass-through patch)", "ofm-full", {}, ("--no-redaction",)),
    ("+ user-agent parsing in process", "ofm-full", {"OTEL_FLASK_METRICS_PARSE_USER_AGENT": "true"}, ()),
    ("- consumer header", "ofm-full", {"OTEL_FLASK_METRICS_CONSUMER_HEADER": ""}, ()),
    ("- span export (OTEL_TRACES_EXPORTER=none)", "ofm-full", {"OTEL_TRACES_EXPORTER": "none"}, ()),
    ("- metric readers (OTEL_METRICS_EXPORTER=none)", "ofm-full",
     {"OTEL_METRICS_EXPORTER": "none"}, ()),
    ("metrics only (sampler always_off)", "ofm-full", {"OTEL_TRACES_SAMPLER": "always_off"}, ()),
    ("ofm-production (10 %)", "ofm-production", {}, ()),
)

# Where a function lives -> component, first match wins (path fragments).
COMPONENTS: Sequence[tuple[str, str]] = (
    ("otel_flask_metrics/redaction", "ours: redaction"),
    ("otel_flask_metrics/consumers", "ours: consumers"),
    ("otel_flask_metrics/user_agent", "ours: user agent"),
    ("ua_parser", "ua-parser"),
    ("otel_flask_metrics/", "ours: extension (hooks, attributes, finish)"),
    ("opentelemetry/sdk/trace/export", "SDK: BatchSpanProcessor (on_end)"),
    ("opentelemetry/sdk/_shared_internal", "SDK: BatchSpanProcessor (on_end)"),
    ("opentelemetry/sdk/trace", "SDK: spans (start, attributes, end)"),
    ("opentelemetry/sdk/metrics", "SDK: metric record calls"),
    ("opentelemetry/attributes", "SDK: BoundedAttributes"),
    ("opentelemetry/sdk/util", "SDK: util (BoundedList, ...)"),
    ("opentelemetry/sdk/resources", "SDK: other"),
    ("opentelemetry/instrumentation", "OTel instrumentation utils (wsgi getter, ...)"),
    ("opentelemetry/util", "OTel instrumentation utils (wsgi getter, ...)"),
    ("opentelemetry/", "OTel API: context, propagation, trace API"),
    ("hmac.py", "stdlib: hmac/hashlib (pseudonyms)"),
    ("werkzeug/", "Werkzeug + Flask + test client (bare)"),
    ("flask/", "Werkzeug + Flask + test client (bare)"),
)


def component(filename: str) -> str:
    path = filename.replace("\\", "/")
    for fragment, name in COMPONENTS:
        if fragment in path:
            return name
    if path.startswith("<") or path == "~":  # builtins
        return "builtins / C calls"
    return "other Python (stdlib, json, ...)"


def ablations(sink: overhead.Sink, requests: int, rounds: int) -> list[tuple[str, float, float]]:
    cfg = {"requests": requests, "warmup": 300}
    times: dict[str, list[float]] = defaultdict(list)
    for r in range(rounds):
        for name, variant, env, args in ABLATIONS:
            res = overhead.run_in_process(variant, sink, f"profile.{r}.{variant}", cfg, env, args)
            times[name].append(res["us_per_request"])
            overhead.log(f"  ablation round {r + 1}/{rounds} {name:<45} "
                         f"{res['us_per_request']:.0f} us/request")
    full = statistics.median(times["ofm-full"])
    bare = statistics.median(times["bare"])
    return [
        (name, statistics.median(t), statistics.median(t) - (bare if name == "vanilla" else full))
        for name, t in times.items()
    ]


def profile(requests: int, pyinstrument_out: Path | None) -> tuple[pstats.Stats, str | None]:
    """cProfile (and pyinstrument) ``requests`` ofm-full requests in this process."""
    flask_app = bench_app.build_app("ofm-full")
    client = flask_app.test_client()
    inprocess.send(client, 500)
    prof = cProfile.Profile()
    prof.enable()
    inprocess.send(client, requests)
    prof.disable()
    tree = None
    try:
        import pyinstrument
    except ImportError:
        pyinstrument = None  # type: ignore[assignment]  # optional
    if pyinstrument is not None:
        profiler = pyinstrument.Profiler(interval=0.0001)
        profiler.start()
        inprocess.send(client, requests)
        profiler.stop()
        tree = profiler.output_text(unicode=True, color=False, show_all=False)
        if pyinstrument_out is not None:
            pyinstrument_out.write_text(profiler.output_html())
    bench_app.shutdown_providers()
    return pstats.Stats(prof), tree


def by_component(stats: pstats.Stats, requests: int) -> list[tuple[str, float, float]]:
    own: dict[str, float] = defaultdict(float)
    raw: Any = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        own[component(filename)] += tottime
    total = sum(own.values())
    return sorted(
        ((name, t / requests * 1e6, t / total) for name, t in own.items()),
        key=lambda row: -row[1],
    )


def hot_spots(
    stats: pstats.Stats, requests: int, limit: int
) -> list[tuple[str, float, float, float]]:
    raw: Any = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        path = filename.replace("\\", "/")
        if "otel_flask_metrics/" not in path and "opentelemetry/" not in path:
            continue
        short = path.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append((f"`{short}:{line} {name}`", ncalls, cumtime, tottime))
    rows.sort(key=lambda r: -r[2])
    return [
        (label, round(n / requests, 2), cum / requests * 1e6, tot / requests * 1e6)
        for label, n, cum, tot in rows[:limit]
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3, help="ablation rounds")
    parser.add_argument("--top", type=int, default=30, help="hot spots listed")
    parser.add_argument("--pyinstrument", type=Path, help="also write pyinstrument's HTML here")
    parser.add_argument("--skip-ablations", action="store_true")
    args = parser.parse_args(argv)

    sink = overhead.Sink()
    try:
        if not args.skip_ablations:
            print(f"### Ablations (in-process, {args.requests} requests, median of "
                  f"{args.rounds} rounds)\n")
            print("| configuration | µs/request | Δ vs ofm-full (vanilla: vs bare) |")
            print("| --- | ---: | ---: |")
            for name, med, delta in ablations(sink, args.requests, args.rounds):
                shown = "—" if name in ("ofm-full", "bare") else f"{delta:+.0f}"
                print(f"| {name} | {med:.0f} | {shown} |")
            print()
        # The profiled process is this one: same environment as the benchmark.
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            del os.environ[key]
        os.environ.update(overhead.variant_env("ofm-full", sink, "profile.cprofile"))
        stats, tree = profile(args.requests, args.pyinstrument)
    finally:
        sink.close()

    print(f"### cProfile: main-thread own time by component (ofm-full, {args.requests} "
          "requests; profiler overhead included)\n")
    print("| component | µs/request | share |")
    print("| --- | ---: | ---: |")
    for name, us, share in by_component(stats, args.requests):
        if share >= 0.005:
            print(f"| {name} | {us:.1f} | {share:.0%} |")
    print(f"\n### Hot spots in otel_flask_metrics and OpenTelemetry (top {args.top} by "
          "cumulative time)\n")
    print("| function | calls / request | cumulative µs / request | own µs / request |")
    print("| --- | ---: | ---: | ---: |")
    for label, calls, cum, tot in hot_spots(stats, args.requests, args.top):
        print(f"| {label} | {calls:g} | {cum:.1f} | {tot:.1f} |")
    if tree is not None:
        print("\n### pyinstrument call tree (main thread)\n")
        print("```")
        print(tree.rstrip())
        print("```")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
