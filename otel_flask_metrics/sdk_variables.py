"""The OpenTelemetry SDK's own variables, checked as the SDK will read them.

The SDK reads its numbers (export intervals, timeouts, queue and batch sizes)
and its sampler when the providers are built, and a value it cannot use is
either logged without naming the variable ("Found invalid value for export
interval, using default") or replaced in silence. Checking them here puts them
under the same rule as ours: one line naming the variable, the value and what
is accepted, at startup and from ``otel-flask-metrics check`` (which then
fails). Nothing is changed: the SDK still does what it does with the value,
and the line says what that is.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping

from .config import ConfigProblem

# variable -> (kind, what the SDK does with a value it cannot use)
_NUMBERS: dict[str, tuple[str, str]] = {
    "OTEL_METRIC_EXPORT_INTERVAL": ("ms", "the SDK uses 60000 instead"),
    "OTEL_METRIC_EXPORT_TIMEOUT": ("ms", "the SDK uses 30000 instead"),
    "OTEL_BSP_SCHEDULE_DELAY": ("ms", "the SDK uses its default instead"),
    "OTEL_BSP_EXPORT_TIMEOUT": ("ms", "the SDK uses its default instead"),
    "OTEL_BSP_MAX_QUEUE_SIZE": ("count", "the SDK uses its default instead"),
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": ("count", "the SDK uses its default instead"),
    "OTEL_BLRP_SCHEDULE_DELAY": ("ms", "the SDK uses its default instead"),
    "OTEL_BLRP_EXPORT_TIMEOUT": ("ms", "the SDK uses its default instead"),
    "OTEL_BLRP_MAX_QUEUE_SIZE": ("count", "the SDK uses its default instead"),
    "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE": ("count", "the SDK uses its default instead"),
}

_BUILT_IN_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


def sdk_variable_problems(env: Mapping[str, str]) -> list[ConfigProblem]:
    """One problem per SDK variable in ``env`` the SDK cannot use as given."""
    problems = [
        problem
        for name, (kind, fallback) in _NUMBERS.items()
        if name in env and (problem := _number_problem(name, env[name], kind, fallback))
    ]
    problems.extend(_sampler_problems(env))
    problems.extend(_endpoint_problems(env))
    return problems


def _number_problem(name: str, raw: str, kind: str, fallback: str) -> ConfigProblem | None:
    try:
        value = float(raw) if kind == "ms" else int(raw)
    except ValueError:
        value = math.nan
    if value > 0 and math.isfinite(value):
        return None
    accepted = "a positive number of milliseconds" if kind == "ms" else "a positive integer"
    return ConfigProblem(name, raw, f"expected {accepted}; {fallback}")


def _sampler_problems(env: Mapping[str, str]) -> list[ConfigProblem]:
    # As the SDK's TracerProvider reads it: lower-cased, not stripped, and the
    # built-in names only (sampler entry points are read by the SDK's own
    # configurator, which this distro replaces).
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").lower()
    problems: list[ConfigProblem] = []
    if name not in _BUILT_IN_SAMPLERS:
        problems.append(
            ConfigProblem(
                "OTEL_TRACES_SAMPLER",
                env["OTEL_TRACES_SAMPLER"],
                f"unknown sampler; accepted: {', '.join(_BUILT_IN_SAMPLERS)}; the SDK"
                " samples every trace (parentbased_always_on) instead",
            )
        )
    arg = env.get("OTEL_TRACES_SAMPLER_ARG")
    if arg is not None and name in _RATIO_SAMPLERS:
        try:
            ratio = float(arg)
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            problems.append(
                ConfigProblem(
                    "OTEL_TRACES_SAMPLER_ARG",
                    arg,
                    "expected a ratio from 0 to 1; the SDK samples every trace (ratio 1.0) instead",
                )
            )
    return problems


def _endpoint_problems(env: Mapping[str, str]) -> list[ConfigProblem]:
    """OTLP/HTTP endpoints that are no http(s) URL: every export to them fails.

    Only where the protocol in force is http/protobuf (the default): the gRPC
    exporter also takes a bare ``host:port``.
    """
    general_protocol = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip()
    checks = [("OTEL_EXPORTER_OTLP_ENDPOINT", general_protocol)]
    for signal in ("TRACES", "METRICS", "LOGS"):
        protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "").strip()
        checks.append((f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", protocol or general_protocol))
    problems = []
    for name, protocol in checks:
        raw = env.get(name, "")
        if not raw.strip() or protocol == "grpc":
            continue
        url = urllib.parse.urlsplit(raw.strip())
        if url.scheme.lower() not in ("http", "https") or not url.hostname:
            problems.append(
                ConfigProblem(
                    name,
                    raw,
                    "expected an http:// or https:// URL (e.g. http://collector:4318); "
                    "every OTLP/HTTP export to it fails until then",
                )
            )
    return problems
