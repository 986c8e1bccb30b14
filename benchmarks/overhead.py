"""Per-request overhead of otel-flask-metrics next to stock OpenTelemetry and a metrics-only peer.

Not a test: run it by hand and paste the Markdown it prints into the README::

    python benchmarks/overhead.py --quick            # a few minutes
    python benchmarks/overhead.py --json out.json    # the full run, ~12 minutes

Variants (``app.VARIANT_ENV``), each in a fresh process so that the global
OpenTelemetry providers never mix:

``bare``            the plain Flask app;
``vanilla``         what ``opentelemetry-instrument`` + opentelemetry-distro set
                    up: SDK providers, BatchSpanProcessor and periodic metric
                    reader over OTLP/HTTP, the stock ``FlaskInstrumentor``;
``ofm-full``        ``otel_flask_metrics.configure()`` + ``FlaskMetrics(app)``,
                    consumer header ``X-API-Key``, every request traced;
``ofm-production``  the same with ``parentbased_traceidratio`` at 10 %;
``ofm-ua``          ``ofm-full`` with ``OTEL_FLASK_METRICS_PARSE_USER_AGENT=true``
                    (browser and OS parsed in process, not by the Collector);
``pfe``             prometheus-flask-exporter's ``PrometheusMetrics(app)``
                    (metrics only, nothing exported; the scrape size is shown).

Every OTLP exporter sends to ``otlp_sink.py`` on 127.0.0.1, which counts the
bytes per process, so export volume is reported next to the timings.

Modes: ``in-process`` (Flask's test client: the instrumentation cost without a
server or network in the way, in microseconds per request) and ``http``
(gunicorn, one sync worker, driven by ``wrk -t1 -c4``: requests per second).
Rounds alternate the variants (bare, vanilla, ..., pfe, then the next round
starting one variant later) so slow drifts of the machine hit every variant
alike; the median over rounds is reported with the min and max.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.metadata
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import app as bench_app

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"

# Settings per run length: requests per in-process round, warm-up requests,
# rounds, wrk seconds per http round (after a 1 s warm-up).
PROFILES: Mapping[str, Mapping[str, int]] = {
    "quick": {"requests": 1500, "warmup": 300, "rounds": 3, "wrk_seconds": 5, "http_rounds": 3},
    "full": {"requests": 8000, "warmup": 1000, "rounds": 5, "wrk_seconds": 12, "http_rounds": 5},
}

# The environment every variant shares: OTLP/HTTP to the sink (the endpoint
# is added per process), metrics every 5 s, default batch span processor.
COMMON_ENV: Mapping[str, str] = {
    "OTEL_SERVICE_NAME": "bench-api",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",  # milliseconds
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class Sink:
    """``otlp_sink.py`` in its own process (so its work never shares our GIL)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "otlp_sink.py"), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            raise SystemExit(f"the OTLP sink did not start: {line!r}")
        self.url = "http://" + line.split()[1]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def variant_env(
    variant: str, sink: Sink, tag: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(COMMON_ENV)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"{sink.url}/{tag}"
    env.update(bench_app.VARIANT_ENV[variant])
    env.update(extra or {})
    env["OFM_BENCH_VARIANT"] = variant
    return env


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the ")" closing the command name; utime and stime are
        # the 14th and 15th fields of the whole line.
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


# --- in-process mode ------------------------------------------------------------


def run_in_process(
    variant: str,
    sink: Sink,
    tag: str,
    cfg: Mapping[str, int],
    extra_env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    cmd = [
        sys.executable, str(HERE / "inprocess.py"), "--variant", variant,
        "--requests", str(cfg["requests"]), "--warmup", str(cfg["warmup"]), *extra_args,
    ]
    done = subprocess.run(
        cmd, env=variant_env(variant, sink, tag, extra_env), cwd=HERE, capture_output=True,
        text=True,
        timeout=600,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])  # type: ignore[no-any-return]
    raise SystemExit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


# --- http mode ------------------------------------------------------------------


def _get(url: str, timeout: float = 2.0) -> bytes:
    r = bench_app.REQUEST_MIX[0]
    req = urllib.request.Request(url, headers=dict(r.headers))
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()  # type: ignore[no-any-return]


def _wrk(url: str, script: Path, seconds: int) -> dict[str, Any]:
    done = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            return json.loads(line[9:])  # type: ignore[no-any-return]
    raise SystemExit(f"wrk failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def run_http(
    variant: str, sink: Sink, tag: str, cfg: Mapping[str, int], script: Path
) -> dict[str, Any]:
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    cmd = [
        sys.executable, "-m", "gunicorn", "-w", "1", "-k", "sync", "-b", f"{LOOPBACK}:{port}",
        "--log-level", "warning", "--graceful-timeout", "15", "wsgi:app",
    ]
    server = subprocess.Popen(cmd, env=variant_env(variant, sink, tag), cwd=HERE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(base + "/items/1")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn for {variant} did not start") from None
                time.sleep(0.2)
        warm = _wrk(base, script, 1)
        workers = _children(server.pid)
        cpu_before = _cpu_seconds(workers[0]) if workers else None
        result = _wrk(base, script, cfg["wrk_seconds"])
        # The worker's CPU (request thread and export threads) per request: in
        # a steady state the exports of the window match its requests to
        # within one batch, and it is not moved by what else the machine runs.
        cpu = _cpu_seconds(workers[0]) - cpu_before if cpu_before is not None else None
        memory = _proc_status(workers[0]) if workers else {}
        scrape_bytes = len(_get(base + "/metrics", 10)) if variant == "pfe" else None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "variant": variant,
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "cpu_us_per_request": (
            cpu / result["requests"] * 1e6 if cpu and result["requests"] else None
        ),
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "errors": errors,
        "total_requests": 1 + warm["requests"] + result["requests"],
        "worker_rss_kib": memory.get("VmRSS"),
        "worker_peak_rss_kib": memory.get("VmHWM"),
        "scrape_bytes": scrape_bytes,
    }


# --- rounds and summaries --------------------------------------------------------


def run_mode(
    mode: str, variants: Sequence[str], sink: Sink, cfg: Mapping[str, int], script: Path | None
) -> dict[str, list[dict[str, Any]]]:
    rounds = cfg["rounds"] if mode == "in-process" else cfg["http_rounds"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for r in range(rounds):
        # Each round starts one variant later, so no variant always runs in
        # the same slot (right after the same neighbour, at the same point
        # of a periodic disturbance).
        shift = r % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            tag = f"{mode}.{variant}.r{r}"
            started = time.monotonic()
            if mode == "in-process":
                res = run_in_process(variant, sink, tag, cfg)
                shown = f"{res['us_per_request']:.0f} us/request"
            else:
                assert script is not None
                res = run_http(variant, sink, tag, cfg, script)
                shown = f"{res['rps']:.0f} requests/s"
                if res["errors"]:
                    shown += f" ({res['errors']} wrk errors!)"
            res["export"] = sink.stats().get(tag)
            runs[variant].append(res)
            log(f"  {mode} round {r + 1}/{rounds} {variant:<15} {shown}"
                f"  [{time.monotonic() - started:.1f} s]")
    return runs


def _med(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _export_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(r["total_requests"] for r in rows)
    out: dict[str, Any] = {"requests": requests}
    for signal_name in ("traces", "metrics"):
        exports = sum((r["export"] or {}).get(signal_name, {}).get("exports", 0) for r in rows)
        size = sum((r["export"] or {}).get(signal_name, {}).get("bytes", 0) for r in rows)
        items = sum((r["export"] or {}).get(signal_name, {}).get("items", 0) for r in rows)
        out[signal_name] = {
            "exports": exports,
            "bytes": size,
            "items": items,
            "bytes_per_1k_requests": size / requests * 1000 if requests else 0.0,
            "bytes_per_export": size / exports if exports else 0.0,
        }
    out["spans_per_request"] = out["traces"]["items"] / requests if requests else 0.0
    scrapes = [r["scrape_bytes"] for r in rows if r.get("scrape_bytes")]
    out["scrape_bytes"] = statistics.median(scrapes) if scrapes else None
    return out


def _cpu_summary(runs: Mapping[str, list[dict[str, Any]]], variant: str) -> dict[str, Any]:
    """CPU µs per request (all threads of the measured process) and its ratios.

    The ratios are paired: each round's variant is compared with the bare and
    vanilla runs of the same round (minutes apart at most), and the median of
    those per-round ratios is reported, so a slow stretch of a shared machine
    moves numerator and denominator together. ``capacity_vs_bare`` is bare's
    CPU per request over this variant's: the share of bare Flask's throughput a
    fully busy core keeps.
    """

    def cpu(v: str) -> list[float | None]:
        return [r.get("cpu_us_per_request") for r in runs.get(v, ())]

    mine, bare, vanilla = cpu(variant), cpu("bare"), cpu("vanilla")
    capacity = [b / m for m, b in zip(mine, bare, strict=False) if m and b]
    added = [
        (m - b) / (v - b)
        for m, b, v in zip(mine, bare, vanilla, strict=False)
        if m and b and v and v != b
    ]
    measured = [m for m in mine if m]
    return {
        "cpu_us_per_request": statistics.median(measured) if measured else None,
        "cpu_added_us": (
            statistics.median(m - b for m, b in zip(mine, bare, strict=False) if m and b)
            if measured and any(bare) else None
        ),
        "cpu_added_vs_vanilla_added": statistics.median(added) if added else None,
        "capacity_vs_bare": statistics.median(capacity) if capacity else None,
    }


def summarise_in_process(runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    bare = statistics.median(r["us_per_request"] for r in runs["bare"]) if "bare" in runs else None
    vanilla = (
        statistics.median(r["us_per_request"] for r in runs["vanilla"])
        if "vanilla" in runs else None
    )
    out = {}
    for variant, rows in runs.items():
        med, lo, hi = _med([r["us_per_request"] for r in rows])
        added = med - bare if bare is not None else None
        vanilla_added = vanilla - bare if vanilla is not None and bare is not None else None
        out[variant] = {
            "us_per_request": {"median": med, "min": lo, "max": hi},
            "added_us": added,
            "time_vs_bare": med / bare if bare else None,
            "added_vs_vanilla_added": (
                added / vanilla_added if added is not None and vanilla_added else None
            ),
            "peak_rss_kib": statistics.median(r["peak_rss_kib"] for r in rows),
            "rss_after_kib": statistics.median(r["rss_after_kib"] for r in rows),
            "export": _export_summary(rows),
            **_cpu_summary(runs, variant),
        }
    return out


def summarise_http(runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def rps(v: str) -> float | None:
        return statistics.median(r["rps"] for r in runs[v]) if v in runs else None

    bare, vanilla = rps("bare"), rps("vanilla")
    out = {}
    for variant, rows in runs.items():
        med, lo, hi = _med([r["rps"] for r in rows])
        added = 1e6 / med - 1e6 / bare if bare else None
        vanilla_added = 1e6 / vanilla - 1e6 / bare if bare and vanilla else None
        rss = [r["worker_rss_kib"] for r in rows if r["worker_rss_kib"]]
        peak = [r["worker_peak_rss_kib"] for r in rows if r["worker_peak_rss_kib"]]
        out[variant] = {
            "rps": {"median": med, "min": lo, "max": hi},
            "rps_vs_bare": med / bare if bare else None,
            "rps_vs_vanilla": med / vanilla if vanilla else None,
            "added_us": added,
            "added_vs_vanilla_added": (
                added / vanilla_added if added is not None and vanilla_added else None
            ),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["p99_ms"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "worker_rss_kib": statistics.median(rss) if rss else None,
            "worker_peak_rss_kib": statistics.median(peak) if peak else None,
            "export": _export_summary(rows),
            **_cpu_summary(runs, variant),
        }
    return out


# --- Markdown ------------------------------------------------------------------


def _x(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}x"


def _mib(kib: float | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.0f}"


def _kib(n: float) -> str:
    return "0" if not n else f"{n / 1024:.1f}"


def _volume(e: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """Trace KiB per 1k requests, spans per request, metric KiB per export, and
    all OTLP KiB (traces + metrics) per 1k requests: the figure target 5 compares."""
    traces = _kib(e["traces"]["bytes_per_1k_requests"])
    total = _kib(e["traces"]["bytes_per_1k_requests"] + e["metrics"]["bytes_per_1k_requests"])
    spans = f"{e['spans_per_request']:.2f}"
    if e["metrics"]["exports"]:
        metrics = f"{e['metrics']['bytes_per_export'] / 1024:.1f}"
    elif e.get("scrape_bytes"):
        metrics = f"({e['scrape_bytes'] / 1024:.1f} per scrape)"
    else:
        metrics = "0"
    return traces, spans, metrics, total


# The columns of _volume(), last in both tables.
_VOLUME_COLUMNS = (
    "trace KiB / 1k req", "spans / req", "metrics KiB / export", "OTLP KiB / 1k req",
)


def _header(*columns: str) -> list[str]:
    """A Markdown table's header: the variant column, then ``columns`` right-aligned."""
    return [
        "| variant | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]


def _cpu_cells(s: Mapping[str, Any], variant: str) -> str:
    ratio = "—" if variant == "bare" else _x(s["cpu_added_vs_vanilla_added"])
    cpu = s["cpu_us_per_request"]
    return f"{ratio} | {'—' if cpu is None else f'{cpu:.0f}'}"


def table_in_process(summary: Mapping[str, Any]) -> str:
    lines = _header(
        "added CPU ÷ vanilla's", "CPU µs/request", "added cost ÷ vanilla's (wall)",
        "time ÷ bare", "µs/request, median (min-max)", "added µs vs bare", "peak RSS MiB",
        "RSS after MiB", *_VOLUME_COLUMNS,
    )
    for variant, s in summary.items():
        t = s["us_per_request"]
        added = s["added_us"]
        traces, spans, metrics, total = _volume(s["export"])
        lines.append(
            f"| {variant} | {_cpu_cells(s, variant)} "
            f"| {_x(s['added_vs_vanilla_added']) if variant != 'bare' else '—'} "
            f"| {_x(s['time_vs_bare'])} | {t['median']:.0f} ({t['min']:.0f}-{t['max']:.0f}) "
            f"| {'—' if added is None or variant == 'bare' else f'{added:+.0f}'} "
            f"| {_mib(s['peak_rss_kib'])} | {_mib(s['rss_after_kib'])} "
            f"| {traces} | {spans} | {metrics} | {total} |"
        )
    return "\n".join(lines)


def table_http(summary: Mapping[str, Any]) -> str:
    lines = _header(
        "capacity ÷ bare (CPU)", "added CPU ÷ vanilla's", "worker CPU µs/request",
        "req/s ÷ bare", "req/s ÷ vanilla", "added cost ÷ vanilla's (req/s)",
        "req/s, median (min-max)", "added µs/req", "p50 / p99 ms", "worker RSS MiB (peak)",
        *_VOLUME_COLUMNS,
    )
    for variant, s in summary.items():
        r = s["rps"]
        added = s["added_us"]
        traces, spans, metrics, total = _volume(s["export"])
        warn = f" ⚠ {s['errors']} errors" if s["errors"] else ""
        lines.append(
            f"| {variant}{warn} | {_x(s['capacity_vs_bare'])} | {_cpu_cells(s, variant)} "
            f"| {_x(s['rps_vs_bare'])} | {_x(s['rps_vs_vanilla'])} "
            f"| {_x(s['added_vs_vanilla_added']) if variant != 'bare' else '—'} "
            f"| {r['median']:.0f} ({r['min']:.0f}-{r['max']:.0f}) "
            f"| {'—' if added is None or variant == 'bare' else f'{added:+.0f}'} "
            f"| {s['p50_ms']:.2f} / {s['p99_ms']:.2f} "
            f"| {_mib(s['worker_rss_kib'])} ({_mib(s['worker_peak_rss_kib'])}) "
            f"| {traces} | {spans} | {metrics} | {total} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "wrk": (wrk.stdout or wrk.stderr).split("\n")[0].strip(),
        "packages": {
            d: version(d)
            for d in (
                "otel-flask-metrics", "opentelemetry-sdk", "opentelemetry-instrumentation-flask",
                "flask", "werkzeug", "gunicorn", "prometheus-flask-exporter", "ua-parser",
            )
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-minute run")
    parser.add_argument("--mode", choices=("in-process", "http", "both"), default="both")
    parser.add_argument("--json", type=Path, help="write every round and the summaries here")
    parser.add_argument(
        "--variants", default=",".join(bench_app.VARIANTS),
        help="comma-separated subset, in round order (default: all)",
    )
    parser.add_argument("--rounds", type=int, help="override the rounds of both modes")
    parser.add_argument("--requests", type=int, help="override in-process requests per round")
    parser.add_argument("--wrk-seconds", type=int, help="override wrk seconds per round")
    args = parser.parse_args(argv)

    # A wheel install leaves bytecode next to the package, as the other
    # variants' site-packages have it. A source checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module in every worker
    # instead: slower imports, and about 2 MiB of compiler memory in the RSS.
    import otel_flask_metrics

    compileall.compile_dir(Path(otel_flask_metrics.__file__).parent, quiet=1)

    cfg = dict(PROFILES["quick" if args.quick else "full"])
    if args.rounds:
        cfg["rounds"] = cfg["http_rounds"] = args.rounds
    if args.requests:
        cfg["requests"] = args.requests
    if args.wrk_seconds:
        cfg["wrk_seconds"] = args.wrk_seconds
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(bench_app.VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(bench_app.VARIANTS)}")
    modes = ["in-process", "http"] if args.mode == "both" else [args.mode]

    env_info = environment()
    report: dict[str, Any] = {"config": cfg, "variants": variants, "environment": env_info}
    started = time.monotonic()
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "requests.lua"
            script.write_text(bench_app.wrk_script())
            for mode in modes:
                log(f"{mode}: {len(variants)} variants")
                runs = run_mode(mode, variants, sink, cfg, script)
                summarise = summarise_in_process if mode == "in-process" else summarise_http
                summary = summarise(runs)
                report[mode] = {"runs": runs, "summary": summary}
    finally:
        sink.close()
    report["seconds"] = time.monotonic() - started

    pk = env_info["packages"]
    print(
        f"\nPython {env_info['python']}, {env_info['cpus']} CPUs, "
        f"opentelemetry-sdk {pk['opentelemetry-sdk']}, "
        f"opentelemetry-instrumentation-flask {pk['opentelemetry-instrumentation-flask']}, "
        f"Flask {pk['flask']}, gunicorn {pk['gunicorn']}, "
        f"prometheus-flask-exporter {pk['prometheus-flask-exporter']}; "
        f"{'quick' if args.quick else 'full'} run: {json.dumps(cfg)}; "
        f"{report['seconds'] / 60:.1f} min"
    )
    if "in-process" in report:
        print(
            f"\n### In-process (Flask test client, {cfg['requests']} requests x "
            f"{cfg['rounds']} rounds per variant)\n"
        )
        print(table_in_process(report["in-process"]["summary"]))
    if "http" in report:
        print(
            f"\n### HTTP (gunicorn, 1 sync worker; wrk -t1 -c4 -d{cfg['wrk_seconds']}s x "
            f"{cfg['http_rounds']} rounds per variant)\n"
        )
        print(table_http(report["http"]["summary"]))
    print(
        "\n*added cost ÷ vanilla's*: (variant - bare) ÷ (vanilla - bare) per request; "
        "below 1x is cheaper than the stock OpenTelemetry Flask setup. "
        "*CPU* columns count every thread of the measured process (export included); "
        "*capacity ÷ bare* is bare's CPU per request over the variant's; CPU ratios are "
        "medians of per-round ratios (each round's bare and vanilla runs are minutes "
        "apart at most). "
        "Metrics are exported every 5 s, so their volume is per export, not per request; "
        "pfe exports nothing (its /metrics scrape size is shown)."
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
