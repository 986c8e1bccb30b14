"""Environment and keyword arguments -> Settings, and the problems reported on the way."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from otel_flask_metrics import config
from otel_flask_metrics.config import (
    OPTIONS,
    OPTIONS_BY_VARIABLE,
    ConfigProblem,
    InvalidValue,
    Settings,
    report_problems,
    resolve_settings,
    unknown_variables,
)

PREFIX = "OTEL_FLASK_METRICS_"
DEFAULTS = Settings()


def identify_consumer(request: Any) -> str:
    """A consumer callback importable as ``tests.test_config:identify_consumer``."""
    return "from-callback"


class _Namespace:
    """Holds a callable reachable through a dotted attribute path."""

    @staticmethod
    def identify(request: Any) -> str:
        return "nested"


NOT_CALLABLE = 42


# --- the option table ---------------------------------------------------------


def test_every_settings_field_has_one_option_and_variable() -> None:
    assert sorted(o.field for o in OPTIONS) == sorted(f.name for f in dataclasses.fields(Settings))
    for option in OPTIONS:
        assert option.variable == PREFIX + option.field.upper()
        assert OPTIONS_BY_VARIABLE[option.variable] is option


def test_defaults_without_any_variable() -> None:
    settings, problems = resolve_settings({})
    assert problems == []
    assert settings == Settings(
        disabled=False,
        environment=None,
        consumer_header=None,
        consumer_header_raw=False,
        consumer_hash_key=None,
        consumer_callback=None,
        consumer_id_max_length=128,
        max_consumers=1000,
        parse_user_agent=False,
    )


def test_each_options_example_parses_without_problems() -> None:
    """The README/check example of every option is itself a valid value."""
    for option in OPTIONS:
        if option.field in ("consumer_callback", "skip_callback"):
            continue  # its example names the user's module, which does not exist here
        _, problems = resolve_settings({option.variable: option.example})
        assert problems == [], option.variable


GOOD_VALUES: list[tuple[str, str, Any]] = [
    ("DISABLED", "true", True),
    ("DISABLED", "false", False),
    ("DISABLED", "TRUE", True),
    ("DISABLED", " False ", False),
    ("ENVIRONMENT", "production", "production"),
    ("ENVIRONMENT", "  staging  ", "staging"),
    ("ENVIRONMENT", "   ", None),
    ("CONSUMER_HEADER", "X-API-Key", "X-API-Key"),
    ("CONSUMER_HEADER", " X-Client-Name ", "X-Client-Name"),
    ("CONSUMER_HEADER", "Authorization", "Authorization"),
    ("CONSUMER_HEADER", "", None),
    ("CONSUMER_HEADER_RAW", "true", True),
    ("CONSUMER_HEADER_RAW", "false", False),
    ("CONSUMER_HASH_KEY", "s3cr3t-key", "s3cr3t-key"),
    ("CONSUMER_HASH_KEY", "  s3cr3t-key\n", "s3cr3t-key"),
    ("CONSUMER_CALLBACK", "tests.test_config:identify_consumer", identify_consumer),
    ("CONSUMER_CALLBACK", " tests.test_config:identify_consumer ", identify_consumer),
    ("CONSUMER_CALLBACK", "tests.test_config:_Namespace.identify", _Namespace.identify),
    ("CONSUMER_CALLBACK", "", None),
    ("CONSUMER_ID_MAX_LENGTH", "64", 64),
    ("CONSUMER_ID_MAX_LENGTH", " 1 ", 1),
    ("MAX_CONSUMERS", "5000", 5000),
    ("MAX_CONSUMERS", "1", 1),
    ("PARSE_USER_AGENT", "false", False),
    ("PARSE_USER_AGENT", "true", True),
    ("SDK_FAST_PATH", "false", False),
    ("SDK_FAST_PATH", " TRUE ", True),
    ("PROCESS_METRICS", "false", False),
    ("PROCESS_METRICS", " True ", True),
    ("KEEP_ERRORS", "false", False),
    ("KEEP_SLOW_MS", "2000", 2000),
    ("LOG_RECORDS_PER_REQUEST", "1000", 1000),
    ("REDACT_KEYS", "x-session, ssn ,", ("x-session", "ssn")),
    ("REDACT_KEYS_REPLACE", "true", True),
    ("REDACT_PATTERNS", '["ref-[0-9]{6}", "a,b"]', ("ref-[0-9]{6}", "a,b")),
    ("REDACT_PATTERNS_REPLACE", "false", False),
    ("REDACT_ALLOWED_KEYS", "id,name", ("id", "name")),
    ("REDACT_MARKER", " *** ", "***"),
    ("REDACT_HASH", "true", True),
    ("CAPTURE_BODIES", "true", True),
    ("CAPTURE_BODY_MAX_BYTES", "2048", 2048),
    ("SKIP_CALLBACK", "tests.test_config:identify_consumer", identify_consumer),
    ("ALLOWED_HOSTS", "api.example.com,*.example.org", ("api.example.com", "*.example.org")),
]


@pytest.mark.parametrize(("suffix", "raw", "expected"), GOOD_VALUES)
def test_good_value_is_parsed(suffix: str, raw: str, expected: Any) -> None:
    variable = PREFIX + suffix
    settings, problems = resolve_settings({variable: raw})
    assert problems == []
    assert getattr(settings, OPTIONS_BY_VARIABLE[variable].field) == expected


def test_good_values_cover_every_option() -> None:
    assert {PREFIX + suffix for suffix, _, _ in GOOD_VALUES} == set(OPTIONS_BY_VARIABLE)


BAD_VALUES: list[tuple[str, str, str]] = [
    # (variable suffix, value, words of "what is accepted")
    ("DISABLED", "yes", "true or false"),
    ("DISABLED", "1", "true or false"),
    ("DISABLED", "on", "true or false"),
    ("CONSUMER_HEADER", "X API Key", "HTTP header name"),
    ("CONSUMER_HEADER", "X-API-Key:", "HTTP header name"),
    ("CONSUMER_HEADER", "X-Schlüssel", "HTTP header name"),
    ("CONSUMER_HEADER_RAW", "yes please", "true or false"),
    ("CONSUMER_CALLBACK", "nocolon", "package.module:function"),
    ("CONSUMER_CALLBACK", ":identify", "package.module:function"),
    ("CONSUMER_CALLBACK", "tests.test_config:", "package.module:function"),
    ("CONSUMER_CALLBACK", "missing.module:f", "importable"),
    ("CONSUMER_CALLBACK", "os:not_there", "importable"),
    ("CONSUMER_CALLBACK", "tests.test_config:_Namespace.missing", "importable"),
    ("CONSUMER_CALLBACK", "tests.test_config:NOT_CALLABLE", "callable"),
    ("CONSUMER_ID_MAX_LENGTH", "0", "positive integer"),
    ("CONSUMER_ID_MAX_LENGTH", "-5", "positive integer"),
    ("CONSUMER_ID_MAX_LENGTH", "sixty-four", "positive integer"),
    ("CONSUMER_ID_MAX_LENGTH", "1.5", "positive integer"),
    ("MAX_CONSUMERS", "0", "positive integer"),
    ("MAX_CONSUMERS", "lots", "positive integer"),
    ("PARSE_USER_AGENT", "nope", "true or false"),
    ("SDK_FAST_PATH", "off", "true or false"),
    ("PROCESS_METRICS", "0", "true or false"),
    ("KEEP_ERRORS", "yes", "true or false"),
    ("KEEP_SLOW_MS", "0", "positive integer"),
    ("LOG_RECORDS_PER_REQUEST", "-1", "positive integer"),
    ("REDACT_KEYS_REPLACE", "y", "true or false"),
    ("REDACT_PATTERNS", "ref-[0-9]{6}", "JSON array of regexes"),
    ("REDACT_PATTERNS", '["(unclosed"]', "valid regexes"),
    ("REDACT_PATTERNS_REPLACE", "n", "true or false"),
    ("REDACT_HASH", "sure", "true or false"),
    ("CAPTURE_BODIES", "on", "true or false"),
    ("CAPTURE_BODY_MAX_BYTES", "4k", "positive integer"),
    ("SKIP_CALLBACK", "nocolon", "package.module:function"),
]


@pytest.mark.parametrize(("suffix", "raw", "accepted"), BAD_VALUES)
def test_bad_value_gives_default_and_one_problem(suffix: str, raw: str, accepted: str) -> None:
    variable = PREFIX + suffix
    option = OPTIONS_BY_VARIABLE[variable]
    default = getattr(DEFAULTS, option.field)

    settings, problems = resolve_settings({variable: raw})

    assert getattr(settings, option.field) == default
    assert settings == DEFAULTS
    assert len(problems) == 1
    problem = problems[0]
    assert isinstance(problem, ConfigProblem)
    assert problem.variable == variable
    assert problem.value == raw
    text = str(problem)
    assert variable in text
    assert repr(raw) in text
    assert accepted in text
    assert f"using the default {default!r} instead" in text


def test_bad_values_cover_every_option_that_can_be_wrong() -> None:
    # Free text and lists accept anything; an empty marker counts as unset.
    always_valid = (config._parse_text, config._parse_list, config._parse_optional_list, config._parse_marker)
    can_be_wrong = {o.variable for o in OPTIONS if o.parse not in always_valid}
    assert {PREFIX + suffix for suffix, _, _ in BAD_VALUES} == can_be_wrong


@pytest.mark.parametrize("variable", sorted(OPTIONS_BY_VARIABLE))
def test_empty_value_means_unset(variable: str) -> None:
    """OpenTelemetry's configuration spec: an empty variable is the same as an unset one.

    (Compose files and Helm charts often render ``NAME=`` for "not configured".)
    """
    settings, problems = resolve_settings({variable: ""})
    assert problems == []
    assert settings == DEFAULTS


def test_bad_values_do_not_affect_good_ones() -> None:
    settings, problems = resolve_settings(
        {
            PREFIX + "MAX_CONSUMERS": "zero",
            PREFIX + "CONSUMER_HEADER": "X-API-Key",
            PREFIX + "DISABLED": "maybe",
            PREFIX + "CONSUMER_ID_MAX_LENGTH": "32",
        }
    )
    assert settings.consumer_header == "X-API-Key"
    assert settings.consumer_id_max_length == 32
    assert settings.max_consumers == 1000
    assert settings.disabled is False
    assert sorted(p.variable for p in problems) == [
        PREFIX + "DISABLED",
        PREFIX + "MAX_CONSUMERS",
    ]


def test_callback_import_error_names_the_cause() -> None:
    _, problems = resolve_settings({PREFIX + "CONSUMER_CALLBACK": "missing.module:f"})
    assert "missing" in problems[0].message


# --- secrets --------------------------------------------------------------------


def test_secret_option_is_not_in_settings_repr() -> None:
    settings, _ = resolve_settings({PREFIX + "CONSUMER_HASH_KEY": "hunter2-key"})
    assert settings.consumer_hash_key == "hunter2-key"
    assert "hunter2-key" not in repr(settings)


def test_rejected_secret_value_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a secret option's parser rejects, the problem never shows the value.

    The shipped secret (the hash key) accepts any text, so a stricter parser is
    swapped in to reach the masking path.
    """

    def strict(raw: str) -> str:
        raise InvalidValue("expected at least 32 characters")

    secret_options = [o for o in OPTIONS if o.secret]
    assert [o.field for o in secret_options] == ["consumer_hash_key"]
    monkeypatch.setattr(
        config,
        "OPTIONS",
        tuple(dataclasses.replace(o, parse=strict) if o.secret else o for o in OPTIONS),
    )

    settings, problems = resolve_settings({PREFIX + "CONSUMER_HASH_KEY": "hunter2-key"})

    assert settings.consumer_hash_key is None
    assert len(problems) == 1
    text = str(problems[0])
    assert "hunter2-key" not in text
    assert problems[0].value != "hunter2-key"
    assert PREFIX + "CONSUMER_HASH_KEY" in text
    assert "expected at least 32 characters" in text


def test_misspelt_secret_variable_does_not_show_the_secret() -> None:
    """A typo in a secret's name is the usual way a secret reaches a log line."""
    problems = unknown_variables({PREFIX + "CONSUMER_HASH_KY": "hunter2-key"})
    assert len(problems) == 1
    text = str(problems[0])
    assert f"did you mean {PREFIX}CONSUMER_HASH_KEY?" in text
    assert "hunter2-key" not in text


# --- unknown variables ----------------------------------------------------------


@pytest.mark.parametrize(
    ("unknown", "suggestion"),
    [
        ("CONSUMER_HEADDER", "CONSUMER_HEADER"),
        ("CONSUMER_HEADER_RAWW", "CONSUMER_HEADER_RAW"),
        ("MAX_CONSUMER", "MAX_CONSUMERS"),
        ("DISABLE", "DISABLED"),
        ("PARSE_USERAGENT", "PARSE_USER_AGENT"),
        ("CONSUMER_CALLBAK", "CONSUMER_CALLBACK"),
    ],
)
def test_unknown_variable_suggests_closest_name(unknown: str, suggestion: str) -> None:
    settings, problems = resolve_settings({PREFIX + unknown: "X-API-Key"})
    assert settings == DEFAULTS
    assert len(problems) == 1
    problem = problems[0]
    assert problem.variable == PREFIX + unknown
    text = str(problem)
    assert PREFIX + unknown in text
    assert "unknown variable" in text
    assert text.endswith(f"did you mean {PREFIX}{suggestion}?")


def test_unknown_variable_without_close_name_has_no_suggestion() -> None:
    _, problems = resolve_settings({PREFIX + "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ": "1"})
    assert len(problems) == 1
    assert "unknown variable" in str(problems[0])
    assert "did you mean" not in str(problems[0])


def test_other_variables_are_not_ours_to_judge() -> None:
    _, problems = resolve_settings(
        {
            "OTEL_SERVICE_NAME": "orders",
            "OTEL_FLASK_METRIC_DISABLED": "true",  # not our prefix
            "HOME": "/root",
        }
    )
    assert problems == []


def test_resolve_reads_os_environ_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFIX + "MAX_CONSUMERS", "7")
    monkeypatch.setenv(PREFIX + "CONSUMER_HEADDER", "X-API-Key")
    settings, problems = resolve_settings()
    assert settings.max_consumers == 7
    assert [p.variable for p in problems] == [PREFIX + "CONSUMER_HEADDER"]


# --- keyword arguments ----------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "raw", "field", "keyword"),
    [
        (PREFIX + "DISABLED", "true", "disabled", False),
        (PREFIX + "CONSUMER_HEADER", "X-API-Key", "consumer_header", "X-Client-Id"),
        (PREFIX + "CONSUMER_HEADER_RAW", "true", "consumer_header_raw", False),
        (PREFIX + "CONSUMER_ID_MAX_LENGTH", "10", "consumer_id_max_length", 20),
        (PREFIX + "MAX_CONSUMERS", "10", "max_consumers", 3),
        (PREFIX + "ENVIRONMENT", "staging", "environment", "production"),
        (PREFIX + "CONSUMER_HASH_KEY", "env-key", "consumer_hash_key", "code-key"),
        (PREFIX + "PARSE_USER_AGENT", "false", "parse_user_agent", True),
    ],
)
def test_keyword_beats_environment(variable: str, raw: str, field: str, keyword: Any) -> None:
    from_env, problems = resolve_settings({variable: raw})
    assert problems == []
    assert getattr(from_env, field) != keyword  # the row really tests something

    settings, problems = resolve_settings({variable: raw}, **{field: keyword})
    assert problems == []
    assert getattr(settings, field) == keyword


def test_keyword_callback_beats_environment() -> None:
    settings, problems = resolve_settings(
        {PREFIX + "CONSUMER_CALLBACK": "tests.test_config:identify_consumer"},
        consumer_callback=_Namespace.identify,
    )
    assert problems == []
    assert settings.consumer_callback is _Namespace.identify


def test_keyword_none_leaves_the_environment_value() -> None:
    settings, problems = resolve_settings(
        {PREFIX + "CONSUMER_HEADER": "X-API-Key"}, consumer_header=None
    )
    assert problems == []
    assert settings.consumer_header == "X-API-Key"


def test_keyword_fixes_a_bad_environment_value_but_the_problem_is_still_reported() -> None:
    settings, problems = resolve_settings({PREFIX + "MAX_CONSUMERS": "many"}, max_consumers=5)
    assert settings.max_consumers == 5
    assert [p.variable for p in problems] == [PREFIX + "MAX_CONSUMERS"]


@pytest.mark.parametrize(
    ("keyword", "suggestion"),
    [
        ("consumer_headr", "consumer_header"),
        ("max_consumer", "max_consumers"),
        ("consumer_call_back", "consumer_callback"),
    ],
)
def test_unknown_keyword_is_a_problem_with_suggestion(keyword: str, suggestion: str) -> None:
    settings, problems = resolve_settings({}, **{keyword: "X-API-Key"})
    assert settings == DEFAULTS
    assert len(problems) == 1
    problem = problems[0]
    assert problem.variable == keyword
    text = str(problem)
    assert keyword in text
    assert "unknown keyword argument" in text
    assert f"did you mean {suggestion!r}?" in text


def test_unknown_keyword_without_close_name() -> None:
    _, problems = resolve_settings({}, zzzzzz=1)
    assert len(problems) == 1
    assert "unknown keyword argument" in str(problems[0])
    assert "did you mean" not in str(problems[0])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # Values that the environment parser rejects must not slip in through code.
        ("max_consumers", 0),
        ("consumer_id_max_length", -1),
        ("consumer_header", "X API Key"),
    ],
)
def test_invalid_keyword_value_gives_default_and_a_problem(field: str, value: Any) -> None:
    settings, problems = resolve_settings({}, **{field: value})
    assert getattr(settings, field) == getattr(DEFAULTS, field)
    assert len(problems) == 1
    assert field in str(problems[0])


def test_keyword_string_false_does_not_turn_raw_export_on() -> None:
    """``consumer_header_raw="false"`` (e.g. forwarded from a config file) is not true.

    A truthy string here would export raw credentials; it must be parsed like the
    variable or rejected with a problem, never taken as-is.
    """
    settings, _ = resolve_settings({}, consumer_header_raw="false")
    assert settings.consumer_header_raw is False


def test_keyword_callback_as_string_resolves_or_is_reported() -> None:
    """The ``module:function`` form in code is imported like the variable, or rejected."""
    settings, problems = resolve_settings(
        {}, consumer_callback="tests.test_config:identify_consumer"
    )
    if problems:
        assert settings.consumer_callback is None
    else:
        assert settings.consumer_callback is identify_consumer


def test_settings_are_frozen() -> None:
    settings, _ = resolve_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_consumers = 5  # type: ignore[misc]


# --- reporting ------------------------------------------------------------------


def test_report_problems_logs_one_warning_line_per_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, problems = resolve_settings(
        {
            PREFIX + "MAX_CONSUMERS": "zero",
            PREFIX + "CONSUMER_HEADDER": "X-API-Key",
            PREFIX + "CONSUMER_CALLBACK": "nocolon",
        }
    )
    assert len(problems) == 3

    with caplog.at_level(logging.DEBUG, logger="otel_flask_metrics"):
        report_problems(problems)

    records = [r for r in caplog.records if r.name.startswith("otel_flask_metrics")]
    assert len(records) == 3
    for record, problem in zip(records, problems, strict=True):
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert "\n" not in message
        assert str(problem) in message
        assert problem.variable in message


def test_report_problems_with_no_problems_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="otel_flask_metrics"):
        report_problems([])
    assert [r for r in caplog.records if r.name.startswith("otel_flask_metrics")] == []


def test_problem_with_newline_in_value_stays_on_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, problems = resolve_settings({PREFIX + "MAX_CONSUMERS": "5\nINJECTED 10"})
    with caplog.at_level(logging.WARNING, logger="otel_flask_metrics"):
        report_problems(problems)
    (record,) = [r for r in caplog.records if r.name.startswith("otel_flask_metrics")]
    assert "\n" not in record.getMessage()


def test_a_problem_reaches_stderr_when_only_opentelemetrys_handler_is_on_the_root_logger(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """That handler silences Python's last resort; the startup line must still be seen."""
    from opentelemetry._logs import NoOpLoggerProvider
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    from otel_flask_metrics.config import ConfigProblem, report_problems

    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers[:] = [LoggingHandler(logger_provider=NoOpLoggerProvider())]
    try:
        report_problems([ConfigProblem("OTEL_FLASK_METRICS_X", "1", "only telemetry sees this")])
    finally:
        root.handlers[:] = saved
    assert capsys.readouterr().err == (
        "otel-flask-metrics configuration: OTEL_FLASK_METRICS_X='1': only telemetry sees this\n"
    )

    # With a console handler of the app's, the line is not written twice.
    console = logging.StreamHandler()
    root.addHandler(console)
    try:
        report_problems([ConfigProblem("OTEL_FLASK_METRICS_Y", "2", "the app's console sees this")])
    finally:
        root.removeHandler(console)
    assert capsys.readouterr().err.count("the app's console sees this") == 1
