"""Per-request cost in CPU instructions counted by valgrind: steady to a few tenths of a percent.

Wall-clock and CPU-time benchmarks on a shared 2-core machine move by ±20-30 %
between runs; the instruction count of the same work does not. This script
runs each variant of ``app.py`` in a fresh Python process under
``valgrind --tool=cachegrind --cache-sim=no`` (every thread counted: the
request thread, the batch span processor, the metric reader) and reads the
total ``Ir`` (instructions executed) from cachegrind's output file.

Method, per variant: the same warm-up, then ``--requests`` requests (default
100 and 400) through Flask's test client with ``buffered=True`` (the response
is read and closed, so spans end as under a server; the loop is
``inprocess.send``), then a provider shutdown, so the final metric export and
the export of every span are inside the count. The per-request cost is the
difference of the two totals divided by the difference of the request counts:
start-up, imports, warm-up and the fixed part of the shutdown cancel out.

What would make two runs differ, and is pinned:

* time-based exports: ``OTEL_METRIC_EXPORT_INTERVAL`` and
  ``OTEL_BSP_SCHEDULE_DELAY`` are a day, so exports happen only at the
  warm-up flush, when a batch fills (512 spans) and at the shutdown, never
  because valgrind makes the run slow;
* ``PYTHONHASHSEED=0`` (set and dict layouts) and ``random.seed(--seed)``
  before the app is built, so the trace ids, and with them the spans that
  ``ofm-production``'s 10 % ratio sampler keeps, are the same in both runs;
  the spans that actually reached the sink per measured request are shown;
* byte-compiled modules: the package directories are compiled first, so no
  run pays for writing ``.pyc`` files the other one reads.

``--methods all,GET,POST`` measures each variant also with a window of only
the mix's ``GET /items/<id>`` (or only its ``POST /items``) requests, one table
per method: the warm-up is the whole mix either way, so the same series exist
and the window pays for records, not for new series.

OTLP goes to ``otlp_sink.py`` on 127.0.0.1 (its own process, not counted).

What is left varies by about ±0.2 % for the exporting variants (most likely the threads
hand the GIL over at wall-clock moments) and by under 0.01 % for ``bare`` and
``pfe``; ``--repeat 3`` shows the spread.

``--pythonpath [LABEL=]DIR`` measures another checkout of the package side by
side, e.g. a ``git worktree`` of an older commit: those processes get
``PYTHONPATH=DIR`` first, so ``import otel_flask_metrics`` comes from DIR (the
editable install's finder comes after ``PYTHONPATH``; each run reports where
the package came from and a mismatch is an error). Their rows are labelled
``variant@LABEL``; LABEL defaults to DIR's short commit.

Usage::

    python benchmarks/instructions.py                               # ~3 minutes
    python benchmarks/instructions.py --variants bare,ofm-production --json instr.json
    python benchmarks/instructions.py --methods GET,POST                 # a table per method
    git worktree add /tmp/ofm-old <commit>
    python benchmarks/instructions.py --pythonpath /tmp/ofm-old     # adds ofm-*@<commit> rows

The Markdown goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Long enough that no timer fires inside a run, however slow valgrind makes it.
NO_TIMER_MS = "86400000"  # milliseconds: one day

# What every measured process gets on top of overhead.py's common environment.
PINNED_ENV: Mapping[str, str] = {
    "OTEL_METRIC_EXPORT_INTERVAL": NO_TIMER_MS,
    "OTEL_BSP_SCHEDULE_DELAY": NO_TIMER_MS,
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
}

DEFAULT_VARIANTS = ("bare", "vanilla", "ofm-full", "ofm-production", "pfe", "apitally")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the measured process ------------------------------------------------------


def child(variant: str, requests: int, warmup: int, seed: int, method: str | None) -> None:
    """One run under valgrind: warm-up, flush, ``requests`` requests, shutdown.

    :param method: only the mix's requests of this method in the measured
        window (the warm-up is the whole mix), or None for the whole mix.
    """
    import gc
    import random

    import app as bench_app
    import inprocess

    random.seed(seed)
    flask_app = bench_app.build_app(variant)
    client = flask_app.test_client()
    inprocess.send(client, warmup)
    bench_app.flush_providers()
    gc.collect()
    inprocess.send(client, requests, method)
    bench_app.shutdown_providers()
    ofm = sys.modules.get("otel_flask_metrics")
    print("CHILD " + json.dumps({"ofm_file": getattr(ofm, "__file__", None)}), flush=True)


# --- the driver ------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One variant with one copy of the package (``pythonpath`` None: the installed one)."""

    variant: str
    label: str | None = None
    pythonpath: Path | None = None
    #: The measured window's requests: ``all`` of the mix, or only ``GET`` or ``POST``.
    method: str = "all"

    @property
    def name(self) -> str:
        return self.variant if self.label is None else f"{self.variant}@{self.label}"

    @property
    def tag(self) -> str:
        return self.name if self.method == "all" else f"{self.name}.{self.method}"


@dataclass
class Measured:
    job: Job
    # One dict per repetition: request count -> total Ir / spans received.
    ir: list[dict[int, int]] = field(default_factory=list)
    spans: list[dict[int, int]] = field(default_factory=list)
    seconds: float = 0.0

    def per_request(self, lo: int, hi: int) -> list[float]:
        return [(r[hi] - r[lo]) / (hi - lo) for r in self.ir]

    def spans_per_request(self, lo: int, hi: int) -> float:
        return statistics.median((s[hi] - s[lo]) / (hi - lo) for s in self.spans)


def _short_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _parse_pythonpath(spec: str) -> tuple[str, Path]:
    label, sep, directory = spec.partition("=")
    if not sep:
        directory, label = spec, ""
    path = Path(directory).resolve()
    if not (path / "otel_flask_metrics" / "__init__.py").is_file():
        raise SystemExit(f"--pythonpath {spec}: no otel_flask_metrics/__init__.py in {path}")
    return label or _short_commit(path) or path.name, path


def _total_ir(cachegrind_out: Path) -> int:
    match = re.search(r"^summary:\s+(\d+)", cachegrind_out.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no 'summary:' line in {cachegrind_out}")
    return int(match.group(1))


def run_once(
    job: Job, requests: int, args: argparse.Namespace, sink: Any, tag: str, outdir: Path
) -> tuple[int, int]:
    """Total instructions of one whole process, and the spans the sink got from it."""
    import overhead

    extra = dict(PINNED_ENV)
    if job.pythonpath is not None:
        rest = os.environ.get("PYTHONPATH")
        extra["PYTHONPATH"] = os.pathsep.join([str(job.pythonpath), *([rest] if rest else [])])
    env = overhead.variant_env(job.variant, sink, tag, extra)
    out_file = outdir / f"{tag}.cachegrind"
    cmd = [
        args.valgrind,
        "--tool=cachegrind",
        "--cache-sim=no",
        f"--cachegrind-out-file={out_file}",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        job.variant,
        "--requests",
        str(requests),
        "--warmup",
        str(args.warmup),
        "--seed",
        str(args.seed),
        *(["--method", job.method] if job.method != "all" else []),
    ]
    done = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("CHILD ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(
            f"{job.tag} n={requests} failed (exit {done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    ofm_file = json.loads(lines[-1][6:])["ofm_file"]
    if job.variant.startswith("ofm-"):
        came_from = Path(ofm_file).resolve()
        if job.pythonpath is not None and job.pythonpath not in came_from.parents:
            raise SystemExit(
                f"{job.name}: otel_flask_metrics came from {came_from}, not {job.pythonpath}"
            )
        if job.pythonpath is None and any(p in came_from.parents for p in args.other_dirs):
            raise SystemExit(f"{job.name}: otel_flask_metrics came from {came_from}")
    spans = sink.stats().get(tag, {}).get("traces", {}).get("items", 0)
    return _total_ir(out_file), int(spans)


def _fmt_ratio(num: float, den: float | None) -> str:
    if den is None or den <= 0:
        return "—"
    return f"{num / den:.2f}x"


def render_by_method(results: Sequence[Measured], lo: int, hi: int) -> str:
    """One table per measured method (``all`` first), each with its own bare and peers."""
    methods = list(dict.fromkeys(m.job.method for m in results))
    if methods == ["all"]:
        return render(results, lo, hi)
    parts = []
    for method in methods:
        title = "the whole mix" if method == "all" else f"only `{method}` requests"
        parts.append(f"Measured window: {title}.\n")
        parts.append(render([m for m in results if m.job.method == method], lo, hi) + "\n")
    return "\n".join(parts).rstrip("\n")


def render(results: Sequence[Measured], lo: int, hi: int) -> str:
    per = {m.job.name: statistics.median(m.per_request(lo, hi)) for m in results}
    bare = per.get("bare")
    added = {k: (v - bare if bare is not None else None) for k, v in per.items()}
    vanilla = added.get("vanilla")
    pfe = added.get("pfe")
    repeats = max(len(m.ir) for m in results)
    head = ["variant", "M instr/request"]
    if repeats > 1:
        head.append("min-max")
    head += ["added over bare (M)", "added ÷ vanilla's", "added ÷ pfe's", "spans/request"]
    lines = ["| " + " | ".join(head) + " |", "| --- " + "| ---: " * (len(head) - 1) + "|"]
    for m in results:
        name = m.job.name
        cells = [f"`{name}`", f"{per[name] / 1e6:.3f}"]
        if repeats > 1:
            values = m.per_request(lo, hi)
            cells.append(f"{min(values) / 1e6:.3f}-{max(values) / 1e6:.3f}")
        a = added[name]
        if a is None or name == "bare":
            cells += ["—", "—", "—"]
        else:
            cells += [
                f"{a / 1e6:+.3f}",
                "—" if name == "vanilla" else _fmt_ratio(a, vanilla),
                "—" if name == "pfe" else _fmt_ratio(a, pfe),
            ]
        cells.append(f"{m.spans_per_request(lo, hi):.2f}")
        lines.append("| " + " | ".join(cells) + " |")

    # Each other checkout next to the same variant with the installed package.
    pairs = [
        (m.job.name, m.job.variant)
        for m in results
        if m.job.label is not None and m.job.variant in per
    ]
    if pairs:
        lines += [
            "",
            "| variant | this checkout (M instr/request) | other (M) | change |",
            "| --- | ---: | ---: | ---: |",
        ]
        for other, variant in pairs:
            now, then = per[variant], per[other]
            lines.append(
                f"| `{variant}` vs `{other}` | {now / 1e6:.3f} | {then / 1e6:.3f} "
                f"| {(now - then) / then * 100:+.2f} % |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help="random.seed for trace ids (0)")
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated (default: {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument(
        "--requests",
        default="100,400",
        help="two request counts; cost = difference of totals / difference of counts",
    )
    parser.add_argument("--warmup", type=int, default=200, help="requests before each window")
    parser.add_argument(
        "--methods",
        default="all",
        help="comma-separated windows: all (the whole mix), GET, POST; a table each (all)",
    )
    parser.add_argument("--method", choices=("GET", "POST"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--pythonpath",
        action="append",
        default=[],
        metavar="[LABEL=]DIR",
        help="also measure the package in DIR (e.g. a git worktree), rows 'variant@LABEL'; "
        "repeatable",
    )
    parser.add_argument(
        "--pythonpath-variants",
        help="variants measured with each --pythonpath (default: the ofm-* of --variants)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure each pair N times")
    parser.add_argument("--valgrind", default=shutil.which("valgrind") or "valgrind")
    parser.add_argument("--json", type=Path, help="write every total and the figures here")
    args = parser.parse_args(argv)

    if args.child:
        child(args.child, int(args.requests), args.warmup, args.seed, args.method)
        return

    import app as bench_app
    import overhead

    counts = sorted(int(n) for n in args.requests.split(","))
    if len(counts) != 2 or counts[0] >= counts[1]:
        parser.error("--requests takes two different counts, e.g. 100,400")
    lo, hi = counts
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    other_variants = (
        [v.strip() for v in args.pythonpath_variants.split(",") if v.strip()]
        if args.pythonpath_variants is not None
        else [v for v in variants if v.startswith("ofm-")]
    )
    unknown = set(variants + other_variants) - set(bench_app.VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(bench_app.VARIANTS)}")

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - {"all", "GET", "POST"}:
        parser.error("--methods takes all, GET and POST, e.g. all,GET,POST")

    others = [_parse_pythonpath(spec) for spec in args.pythonpath]
    args.other_dirs = [path for _, path in others]
    jobs = []
    for method in methods:
        jobs += [Job(v, method=method) for v in variants]
        for label, path in others:
            jobs += [Job(v, label, path, method) for v in other_variants]

    # Every copy of the package byte-compiled before any run (see the docstring).
    import otel_flask_metrics

    for directory in [
        Path(otel_flask_metrics.__file__).parent,
        HERE,
        *(p / "otel_flask_metrics" for p in args.other_dirs),
    ]:
        compileall.compile_dir(directory, quiet=1)

    log(
        f"{len(jobs)} variants x {args.repeat} x requests {lo} and {hi}, warm-up {args.warmup}; "
        f"each run is one whole python process under cachegrind"
    )
    results = [Measured(job) for job in jobs]
    sink = overhead.Sink()
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="ofm-instr-") as tmp:
            for rep in range(args.repeat):
                for m in results:
                    t0 = time.monotonic()
                    ir: dict[int, int] = {}
                    spans: dict[int, int] = {}
                    for n in (lo, hi):
                        tag = f"instr.{m.job.tag}.r{rep}.n{n}".replace("@", ".at.")
                        ir[n], spans[n] = run_once(m.job, n, args, sink, tag, Path(tmp))
                    m.ir.append(ir)
                    m.spans.append(spans)
                    m.seconds += time.monotonic() - t0
                    log(
                        f"  {m.job.tag:<28} {(ir[hi] - ir[lo]) / (hi - lo) / 1e6:8.3f} "
                        f"M instr/request  (totals {ir[lo]:,} / {ir[hi]:,}; "
                        f"{time.monotonic() - t0:.0f} s)"
                    )
    finally:
        sink.close()
    log(f"done in {time.monotonic() - started:.0f} s")

    print(
        f"Instructions per request (valgrind cachegrind `Ir`, all threads), "
        f"(total at {hi} - total at {lo}) ÷ {hi - lo}, warm-up {args.warmup}; "
        f"Python {platform.python_version()}, {platform.machine()}.\n"
    )
    print(render_by_method(results, lo, hi))

    if args.json:
        payload = {
            "requests": [lo, hi],
            "warmup": args.warmup,
            "seed": args.seed,
            "python": platform.python_version(),
            "env": dict(PINNED_ENV),
            "results": [
                {
                    "variant": m.job.name,
                    "method": m.job.method,
                    "pythonpath": str(m.job.pythonpath) if m.job.pythonpath else None,
                    "instructions_per_request": m.per_request(lo, hi),
                    "totals": [{str(k): v for k, v in r.items()} for r in m.ir],
                    "spans": [{str(k): v for k, v in s.items()} for s in m.spans],
                    "seconds": m.seconds,
                }
                for m in results
            ],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
