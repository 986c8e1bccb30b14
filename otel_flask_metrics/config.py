"""Environment variables (and keyword arguments) -> one frozen, typed :class:`Settings`.

Every option is declared once in :data:`OPTIONS`: its environment variable, its
parser, its default and an example. The README table, ``otel-flask-metrics
check`` and the resolver are all driven by that table, so an option cannot be
documented and forgotten, or parsed two ways.

Telemetry must never take the app down: a bad value is reported as a
:class:`ConfigProblem` (one log line naming the variable, the value, what is
accepted and the default used instead) and the default is used. Keyword
arguments given in code take precedence over the environment, which takes
precedence over the defaults, as the OpenTelemetry configuration spec says.
"""

from __future__ import annotations

import difflib
import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, TypeVar

from .log_console import warnings_reach_a_console

_logger = logging.getLogger(__name__)

ENV_PREFIX = "OTEL_FLASK_METRICS_"

T = TypeVar("T")


class InvalidValue(ValueError):
    """Raised by a parser; its message says what is accepted."""


@dataclass(frozen=True)
class ConfigProblem:
    """A setting that could not be used as given."""

    variable: str
    value: str
    message: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: {self.message}"


# A callback that receives the Flask request and returns None, a consumer id,
# or a mapping with "id", "name", "group" (or ReadMe's "api_key", "label").
ConsumerCallback = Callable[[Any], Any]
# Called with the Flask request; True means "do not record this request's details".
RequestPredicate = Callable[[Any], Any]


@dataclass(frozen=True)
class Settings:
    """The effective configuration of otel-flask-metrics, validated."""

    disabled: bool = False
    environment: str | None = None
    consumer_header: str | None = None
    consumer_header_raw: bool = False
    consumer_hash_key: str | None = field(default=None, repr=False)
    consumer_callback: ConsumerCallback | None = None
    consumer_id_max_length: int = 128
    max_consumers: int = 1000
    parse_user_agent: bool = False
    sdk_fast_path: bool = True
    process_metrics: bool = True
    keep_errors: bool = True
    keep_slow_ms: int | None = None
    log_records_per_request: int = 100
    redact_keys: tuple[str, ...] = ()
    redact_keys_replace: bool = False
    redact_patterns: tuple[str, ...] = ()
    redact_patterns_replace: bool = False
    redact_allowed_keys: tuple[str, ...] | None = None
    redact_marker: str = "[REDACTED]"
    redact_hash: bool = False
    capture_bodies: bool = False
    capture_body_max_bytes: int = 4096
    skip_callback: RequestPredicate | None = None
    allowed_hosts: tuple[str, ...] | None = None


# --- parsers: one small function per kind of value --------------------------


# Parsers take a string from the environment or a value given in code, so
# keyword arguments are validated exactly like variables.


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if not isinstance(raw, str):
        raise InvalidValue("expected true or false")
    value = raw.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise InvalidValue("expected true or false")


def _parse_positive_int(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise InvalidValue("expected a positive integer")
    try:
        value = int(raw.strip()) if isinstance(raw, str) else raw
    except ValueError:
        raise InvalidValue("expected a positive integer") from None
    if value < 1:
        raise InvalidValue("expected a positive integer")
    return value


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def _parse_header_name(raw: Any) -> str | None:
    if not isinstance(raw, str):
        raise InvalidValue("expected an HTTP header name such as X-API-Key")
    value = raw.strip()
    if not value:
        return None
    if not _HEADER_NAME.match(value):
        raise InvalidValue("expected an HTTP header name such as X-API-Key")
    return value


def _parse_text(raw: Any) -> str | None:
    if not isinstance(raw, str):
        raise InvalidValue("expected a string")
    return raw.strip() or None


def _parse_callback(raw: Any) -> ConsumerCallback | None:
    if callable(raw):
        return raw  # type: ignore[no-any-return]
    if not isinstance(raw, str):
        raise InvalidValue("expected a callable or package.module:function")
    value = raw.strip()
    if not value:
        return None
    module_name, sep, attribute = value.partition(":")
    if not sep or not module_name or not attribute:
        raise InvalidValue("expected package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except Exception as exc:  # any import-time error of the user's module
        raise InvalidValue(f"expected an importable package.module:function ({exc})") from None
    if not callable(target):
        raise InvalidValue("expected package.module:function naming a callable")
    return target  # type: ignore[no-any-return]


def _parse_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple, set, frozenset)) and all(isinstance(i, str) for i in raw):
        items = list(raw)
    else:
        raise InvalidValue("expected a comma-separated list")
    return tuple(item.strip() for item in items if item.strip())


def _parse_optional_list(raw: Any) -> tuple[str, ...] | None:
    return _parse_list(raw) or None


def _parse_patterns(raw: Any) -> tuple[str, ...]:
    # Regexes often contain commas, so the variable holds a JSON array.
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise InvalidValue('expected a JSON array of regexes, e.g. ["ref-[0-9]{6}"]') from None
    if not isinstance(raw, (list, tuple)) or not all(isinstance(p, str) for p in raw):
        raise InvalidValue('expected a JSON array of regexes, e.g. ["ref-[0-9]{6}"]')
    for pattern in raw:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidValue(f"expected valid regexes ({pattern!r}: {exc})") from None
    return tuple(raw)


def _parse_marker(raw: Any) -> str:
    text = _parse_text(raw)
    if text is None:
        raise InvalidValue("expected a non-empty marker")
    return text


@dataclass(frozen=True)
class Option(Generic[T]):
    """One setting: the field it fills, its variable, parser and documentation."""

    field: str
    parse: Callable[[Any], T]
    type_name: str
    description: str
    example: str
    secret: bool = False

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.field.upper()


OPTIONS: tuple[Option[Any], ...] = (
    Option(
        "disabled",
        _parse_bool,
        "bool",
        "Turn otel-flask-metrics off entirely (no spans, no metrics, no hooks).",
        "true",
    ),
    Option(
        "environment",
        _parse_text,
        "string",
        "Sets deployment.environment.name on the resource unless OTEL_RESOURCE_ATTRIBUTES "
        "already does.",
        "production",
    ),
    Option(
        "consumer_header",
        _parse_header_name,
        "header name",
        "Request header whose value identifies the API consumer (pseudonymised).",
        "X-API-Key",
    ),
    Option(
        "consumer_header_raw",
        _parse_bool,
        "bool",
        "Export the consumer header's value as-is instead of a keyed hash. Only for "
        "headers that carry no secret (e.g. X-Client-Name).",
        "false",
    ),
    Option(
        "consumer_hash_key",
        _parse_text,
        "string (secret)",
        "Key of the HMAC that pseudonymises consumer credentials and redacted values. "
        "Set it in production: without it, pseudonyms use a public key.",
        "a-long-random-string",
        secret=True,
    ),
    Option(
        "consumer_callback",
        _parse_callback,
        "package.module:function",
        "Called with the Flask request after the view ran; returns None, an id, or "
        "a mapping with id/name/group.",
        "myapp.auth:identify_consumer",
    ),
    Option(
        "consumer_id_max_length",
        _parse_positive_int,
        "int",
        "Consumer ids, names and groups are trimmed to this many characters.",
        "64",
    ),
    Option(
        "max_consumers",
        _parse_positive_int,
        "int",
        "Distinct consumer ids kept as metric labels per process; later ones are "
        "folded into the overflow value `_other` (spans keep the real id).",
        "5000",
    ),
    Option(
        "parse_user_agent",
        _parse_bool,
        "bool",
        "Parse user_agent.name and user_agent.os.name in the process (ua-parser) for "
        "sampled server spans; the bundled Collector derives them from "
        "user_agent.original, so turn this on only when exporting elsewhere.",
        "true",
    ),
    Option(
        "sdk_fast_path",
        _parse_bool,
        "bool",
        "Clean and hash flat metric attributes in one loop instead of the SDK's general "
        "path (same results, checked at startup; nearly half the cost of a request's "
        "metric records). Turn off to run the SDK's own code.",
        "false",
    ),
    Option(
        "process_metrics",
        _parse_bool,
        "bool",
        "Export each worker process's CPU time, memory (RSS) and uptime "
        "(process.cpu.time, process.memory.usage, process.uptime), read once per "
        "metric export, never per request.",
        "false",
    ),
    Option(
        "keep_errors",
        _parse_bool,
        "bool",
        "Export the span of every request that ends in a 5xx or an unhandled exception, "
        "decided after the response, even when the head sampler did not sample it.",
        "false",
    ),
    Option(
        "keep_slow_ms",
        _parse_positive_int,
        "int (milliseconds)",
        "Also export the span of every request that took at least this many "
        "milliseconds, sampled or not.",
        "2000",
    ),
    Option(
        "log_records_per_request",
        _parse_positive_int,
        "int",
        "At most this many of the app's log records are exported per request (later "
        "ones are dropped and counted on its span), so one looping request cannot "
        "fill the export queue every request shares.",
        "1000",
    ),
    Option(
        "redact_keys",
        _parse_list,
        "list",
        "More keys (headers, query/form fields, JSON keys, attributes) whose values "
        "are redacted, added to the defaults.",
        "x-session,ssn",
    ),
    Option(
        "redact_keys_replace",
        _parse_bool,
        "bool",
        "Use only OTEL_FLASK_METRICS_REDACT_KEYS, not the default keys.",
        "false",
    ),
    Option(
        "redact_patterns",
        _parse_patterns,
        "JSON array of regexes",
        "More value patterns redacted wherever they appear, added to the defaults.",
        '["ref-[0-9]{6}"]',
    ),
    Option(
        "redact_patterns_replace",
        _parse_bool,
        "bool",
        "Use only OTEL_FLASK_METRICS_REDACT_PATTERNS, not the default patterns.",
        "false",
    ),
    Option(
        "redact_allowed_keys",
        _parse_optional_list,
        "list",
        "If set, captured headers, query and form fields and JSON keys not listed are "
        "redacted too (denied keys always are).",
        "id,name,status",
    ),
    Option(
        "redact_marker", _parse_marker, "string", "What a redacted value is replaced with.", "***"
    ),
    Option(
        "redact_hash",
        _parse_bool,
        "bool",
        "Replace redacted values by [REDACTED:<keyed hash>] to correlate them without "
        "seeing them (key: OTEL_FLASK_METRICS_CONSUMER_HASH_KEY).",
        "true",
    ),
    Option(
        "capture_bodies",
        _parse_bool,
        "bool",
        "Record JSON, form and text request/response bodies on the server span "
        "(redacted, capped, never buffered).",
        "true",
    ),
    Option(
        "capture_body_max_bytes",
        _parse_positive_int,
        "int",
        "At most this many bytes of each captured body.",
        "2048",
    ),
    Option(
        "skip_callback",
        _parse_callback,
        "package.module:function",
        "Called with the Flask request; when it returns true the request is still "
        "counted, but its details (consumer, query, client, captures) are not recorded.",
        "myapp.privacy:opted_out",
    ),
    Option(
        "allowed_hosts",
        _parse_optional_list,
        "list",
        "Only requests whose Host is listed are recorded (`*.example.com` matches subdomains).",
        "api.example.com,*.example.org",
    ),
)

OPTIONS_BY_VARIABLE: dict[str, Option[Any]] = {o.variable: o for o in OPTIONS}
_FIELDS = {f.name for f in fields(Settings)}
assert _FIELDS == {o.field for o in OPTIONS}, "every Settings field needs exactly one Option"


def resolve_settings(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> tuple[Settings, list[ConfigProblem]]:
    """Build the effective :class:`Settings` and list what was wrong on the way.

    :param environ: the environment to read; ``os.environ`` when omitted. It is
        read here, at configure time, never at import.
    :param overrides: keyword arguments given in code, by :class:`Settings`
        field name; they win over the environment.
    """
    env = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = env.get(option.variable)
        # An empty variable is unset, as the OpenTelemetry spec says.
        if raw is None or not raw.strip():
            continue
        _parse_into(values, problems, option, option.variable, raw)
    by_field = {o.field: o for o in OPTIONS}
    for name, value in overrides.items():
        known = by_field.get(name)
        if known is None:
            close = difflib.get_close_matches(name, sorted(_FIELDS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(ConfigProblem(name, str(value), f"unknown keyword argument{hint}"))
            continue
        if value is not None:
            _parse_into(values, problems, known, name, value)
    problems.extend(unknown_variables(env))
    return replace(Settings(), **values), problems


def _parse_into(
    values: dict[str, Any],
    problems: list[ConfigProblem],
    option: Option[Any],
    source: str,
    raw: Any,
) -> None:
    try:
        values[option.field] = option.parse(raw)
    except InvalidValue as exc:
        default = getattr(Settings(), option.field)
        shown = "***" if option.secret else str(raw)
        problems.append(
            ConfigProblem(source, shown, f"{exc}; using the default {default!r} instead")
        )


def unknown_variables(environ: Mapping[str, str]) -> list[ConfigProblem]:
    """``OTEL_FLASK_METRICS_*`` variables that no option reads, with a suggestion."""
    problems = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in OPTIONS_BY_VARIABLE:
            close = difflib.get_close_matches(name, list(OPTIONS_BY_VARIABLE), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            # A misspelt secret variable still holds a secret.
            secret = (close and OPTIONS_BY_VARIABLE[close[0]].secret) or any(
                word in name for word in ("KEY", "SECRET", "TOKEN", "PASSWORD")
            )
            shown = "***" if secret else environ[name]
            problems.append(ConfigProblem(name, shown, f"unknown variable, ignored{hint}"))
    return problems


_reported: set[ConfigProblem] = set()


def report_problems(problems: list[ConfigProblem]) -> None:
    """Log each problem on one line at warning level, once per process.

    The configurator and every ``init_app`` resolve the settings; a bad
    variable is still one line in the log.
    """
    for problem in problems:
        if problem not in _reported:
            _reported.add(problem)
            _logger.warning("otel-flask-metrics configuration: %s", problem)
            if not warnings_reach_a_console(_logger):
                # Only OpenTelemetry's handler would see it (it is on the root
                # logger, so Python's last-resort stderr output no longer
                # runs): the person starting the app must still read it.
                sys.stderr.write(f"otel-flask-metrics configuration: {problem}\n")
