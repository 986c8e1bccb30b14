"""``otel-flask-metrics check``: what would the distro do with this environment?

It prints the effective configuration, every problem (bad values, unknown
``OTEL_FLASK_METRICS_*`` variables, unknown exporters), and whether the OTLP
endpoint answers. It exits 1 when any variable is bad, so it can gate a
deployment; an unreachable endpoint only fails with ``--require-endpoint``.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points

from . import fast_attributes
from .config import OPTIONS, ConfigProblem, resolve_settings
from .distro import (
    DISTRO_NAME,
    ENVIRONMENT_DEFAULTS,
    handler_level,
    load_exporters,
    otlp_protocol_variables,
)
from .export_transport import applicable_proxy
from .sdk_variables import sdk_variable_problems
from .version import __version__

_ENDPOINT_TIMEOUT = 3.0  # seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-flask-metrics")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate the configuration in the environment")
    check.add_argument(
        "--require-endpoint",
        action="store_true",
        help="also fail when the OTLP endpoint does not answer",
    )
    args = parser.parse_args(argv)
    return run_check(os.environ, require_endpoint=args.require_endpoint)


def run_check(environ: Mapping[str, str], *, require_endpoint: bool = False) -> int:
    env = {**ENVIRONMENT_DEFAULTS, **environ}
    settings, problems = resolve_settings(env)
    for signal in ("traces", "metrics", "logs"):
        # Instantiating validates names and protocols exactly as startup does.
        for exporter in load_exporters(signal, env, problems):
            shutdown = getattr(exporter, "shutdown", None)
            if shutdown is not None:
                shutdown()
    handler_level(env, problems)  # the logging handler's level, read as startup does
    problems.extend(sdk_variable_problems(env))
    problems.extend(_distro_conflicts(environ))
    problems = list(dict.fromkeys(problems))  # one protocol problem, not one per signal
    rejected = {problem.variable for problem in problems}

    print(f"otel-flask-metrics {__version__}")
    print("settings:")
    for option in OPTIONS:
        value = getattr(settings, option.field)
        if option.secret:
            shown = "(set)" if value else "(not set)"
        elif callable(value):
            shown = f"{value.__module__}.{getattr(value, '__qualname__', value)}"
        else:
            shown = repr(value)
        source = "default"
        if option.variable in environ:
            source = "env"
            if option.variable in rejected:
                # What is in force is the default; say what was refused.
                given = "***" if option.secret else repr(environ[option.variable])
                source = f"default: env {given} rejected"
        print(f"  {option.variable} = {shown} [{source}]")
    for line in _standard_variable_lines(env, environ, rejected):
        print(line)

    if (
        not settings.consumer_hash_key
        and settings.consumer_header
        and not settings.consumer_header_raw
    ):
        print(
            "note: OTEL_FLASK_METRICS_CONSUMER_HASH_KEY is not set; consumer pseudonyms use "
            "a public key"
        )

    if not settings.sdk_fast_path:
        print("SDK fast path: off; metric attributes take the SDK's general path")
    elif fast_attributes.available():
        print("SDK fast path: available for this SDK")
    else:
        print(
            "note: SDK fast path: this SDK's attribute handling is not the one it was "
            "checked against; the SDK's general path is used"
        )

    endpoint_ok = True
    if "otlp" in env.get("OTEL_METRICS_EXPORTER", "") or "otlp" in env.get(
        "OTEL_TRACES_EXPORTER", ""
    ):
        endpoint_ok = _print_endpoint_status(env)

    if problems:
        print(f"{len(problems)} problem(s):")
        for problem in problems:
            print(f"  {problem}")
        return 1
    if require_endpoint and not endpoint_ok:
        return 1
    print("configuration OK")
    return 0


def _standard_variable_lines(
    env: Mapping[str, str], environ: Mapping[str, str], rejected: set[str]
) -> list[str]:
    """The standard variables in force, each marked when it was refused."""
    signals = ("traces", "metrics", "logs")
    protocols = [v for signal in signals for v in otlp_protocol_variables(signal)]
    names = ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", *ENVIRONMENT_DEFAULTS, *protocols)
    lines = []
    for name in dict.fromkeys(names):
        if name not in env:
            continue
        value = env[name]
        if name not in rejected:
            lines.append(f"  {name} = {value!r}")
        elif name in protocols and value.strip() not in ("http/protobuf", "grpc"):
            # An unknown protocol falls back to the default one.
            lines.append(f"  {name} = 'http/protobuf' [default: env {value!r} rejected]")
        else:
            lines.append(f"  {name} = {value!r} [env; not usable as it is: see the problems]")
    return lines


def _distro_conflicts(environ: Mapping[str, str]) -> list[ConfigProblem]:
    """Another distro installed beside ours is picked in an undefined order."""
    others = sorted(
        ep.name for ep in entry_points(group="opentelemetry_distro") if ep.name != DISTRO_NAME
    )
    chosen = environ.get("OTEL_PYTHON_DISTRO")
    if others and chosen != DISTRO_NAME:
        return [
            ConfigProblem(
                "OTEL_PYTHON_DISTRO",
                chosen or "",
                f"other distros are installed ({', '.join(others)}); set "
                f"OTEL_PYTHON_DISTRO={DISTRO_NAME} so opentelemetry-instrument uses this one",
            )
        ]
    return []


def _print_endpoint_status(env: Mapping[str, str]) -> bool:
    protocol = env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip() == "grpc":
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")
        print(f"OTLP endpoint: {base} (grpc; not probed)")
        return True
    url = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/") + "/v1/metrics"
    )
    if urllib.parse.urlsplit(url.strip()).scheme.lower() not in ("http", "https"):
        # The configuration problem above names the variable and the fix.
        print(f"OTLP endpoint: {url} (not an http:// or https:// URL; not probed)")
        return False
    # An empty export request is valid OTLP: a Collector answers it with 200.
    probe = urllib.request.Request(
        url, data=b"", method="POST", headers={"Content-Type": "application/x-protobuf"}
    )
    # Through the proxy the exporters would use, and said so: a proxy that
    # cannot reach the Collector is the usual reason behind "does not answer".
    proxy = applicable_proxy(url, env)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({scheme: proxy[1]} if proxy else {})
    )
    via = f" through the proxy in {proxy[0]} ({_without_credentials(proxy[1])})" if proxy else ""
    try:
        with opener.open(probe, timeout=_ENDPOINT_TIMEOUT) as response:
            print(f"OTLP endpoint: {url} answers{via} (HTTP {response.status})")
            return True
    except urllib.error.HTTPError as exc:
        print(f"OTLP endpoint: {url} answers{via} with HTTP {exc.code}")
        return exc.code < 500
    except (OSError, ValueError) as exc:
        hint = ""
        if proxy:
            host = urllib.parse.urlsplit(url).hostname
            hint = f"; to send to it directly, add {host} to NO_PROXY"
        print(f"OTLP endpoint: {url} does not answer{via} ({exc}){hint}")
        return False


def _without_credentials(proxy: str) -> str:
    """A proxy URL fit to print: its user and password, if any, replaced."""
    parts = urllib.parse.urlsplit(proxy)
    if parts.username is None and parts.password is None:
        return proxy
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


if __name__ == "__main__":
    sys.exit(main())
