"""Tests for :mod:`otel_flask_metrics.redaction`.

The last tests are the ones that matter most: secrets put into spans through
the real SDK never appear in the bytes the real OTLP encoder produces.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import string
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from otel_flask_metrics.redaction import (
    DEFAULT_DENIED_KEYS,
    DEFAULT_VALUE_PATTERNS,
    RedactingLogRecordProcessor,
    RedactingSpanProcessor,
    RedactionRules,
    Redactor,
    pseudonymize,
)

M = "[REDACTED]"


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


@pytest.fixture
def tracer_provider(span_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    # Overrides conftest's: spans pass the redacting processor first.
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(span_exporter)))
    yield provider
    provider.shutdown()


def _luhn_digit(partial: str) -> str:
    """The check digit that makes ``partial + digit`` pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(sub: str, signature: str) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": sub}).encode())
    return f"{header}.{payload}.{signature}"


# -- keys -----------------------------------------------------------------------


@pytest.mark.parametrize("key", DEFAULT_DENIED_KEYS)
def test_every_default_key_is_denied_in_any_spelling(redactor: Redactor, key: str) -> None:
    assert redactor.is_denied(key)
    assert redactor.is_denied(key.upper())
    assert redactor.is_denied(key.replace("-", "_"))
    assert redactor.is_denied(f"http.request.header.{key}")
    assert redactor.redact_value(key, "hunter2") == M


@pytest.mark.parametrize(
    "key",
    ["x-api-key", "X_API_KEY", "api_key", "apiKey", "APIKey", "X-Api-Key", "x.api.key",
     "http.request.header.x-api-key", "http.request.header.authorization", "db_password",
     "newPassword", "client-secret", "csrf_token", "session.id", "credit_card", "Set-Cookie"],
)
def test_denied_spellings(redactor: Redactor, key: str) -> None:
    assert redactor.is_denied(key)


@pytest.mark.parametrize(
    "key",
    ["bcc", "input_tokens", "gen_ai.usage.output_tokens", "http.route", "url.full",
     "user_agent.original", "cwd", "tokenizer", "cardinality", "passenger", "discard"],
)
def test_not_denied(redactor: Redactor, key: str) -> None:
    assert not redactor.is_denied(key)


def test_denied_value_keeps_a_sensible_type(redactor: Redactor) -> None:
    assert redactor.redact_value("authorization", ("Bearer a", "Basic b")) == (M, M)
    assert redactor.redact_value("cvv", 123) == M
    assert redactor.redact_value("card_number", 4111111111111111) == M
    assert redactor.redact_value("password", ["a", 1]) == [M, M]
    assert redactor.redact_value("session", {"id": "x"}) == {"id": M}


def test_values_under_other_keys_pass(redactor: Redactor) -> None:
    for value in (1, 2.5, True, b"bytes", "plain text", ("a", "b")):
        assert redactor.redact_value("http.route", value) is value


# -- value patterns ------------------------------------------------------------


PATTERN_CASES = [
    # (input, expected output)
    ("Authorization: Bearer abc.def-ghi_jkl", f"Authorization: Bearer {M}"),
    ("Basic dXNlcjpwYXNzd29yZA==", f"Basic {M}"),
    ("bearer 0123456789abcdef", f"bearer {M}"),
    (_jwt("1234567890", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"), M),
    ("key AKIAIOSFODNN7EXAMPLE here", f"key {M} here"),
    ("ASIAIOSFODNN7EXAMPLE", M),
    ("ghp_" + "A1b2" * 9, M),
    ("gho_" + "z" * 36, M),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", M),
    ("xoxb-123456789012-abcdefABCDEF", M),
    ("xoxp-123456789012-abc", M),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", M),
    ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", M),
    ("rk_live_4eC39HqLyjWDarjtT1zdp7dc", M),
    ("AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", M),
    ("GET /v1?api_key=abc123&page=2", f"GET /v1?api_key={M}&page=2"),
    ("apikey=abc123", f"apikey={M}"),
    ("x-api-key: abc123", f"x-api-key: {M}"),
    ("password=hunter2 and more", f"password={M} and more"),
    ('{"password": "hunter2"}', f'{{"password": "{M}"}}'),
    ("postgres://app:s3cr3t@db:5432/app", f"postgres://app:{M}@db:5432/app"),
    ("https://user:p%40ss@example.com/x", f"https://user:{M}@example.com/x"),
    ("contact jane.doe+tag@example.co.uk today", f"contact {M} today"),
    ("JANE@EXAMPLE.COM", M),
    ("card 4111111111111111 end", f"card {M} end"),
    ("card 4111 1111 1111 1111 end", f"card {M} end"),
    ("card 5500-0000-0000-0004 end", f"card {M} end"),
    ("amex 378282246310005", f"amex {M}"),
    # Keywords match in any case.
    ("BEARER 0123456789abcdef", f"BEARER {M}"),
    ("PassWord: hunter2", f"PassWord: {M}"),
    ("HTTPS://app:s3cr3t@db/x", f"HTTPS://app:{M}@db/x"),
]


@pytest.mark.parametrize(("text", "expected"), PATTERN_CASES)
def test_value_patterns(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    ["hello world", "GET /users/{id}", "200", "order 4111111111111112 shipped",  # Luhn fails
     "ts 1700000000000", "trace 0af7651916cd43dd8448eb211c80319c", "version 1.2.3",
     "https://example.com:8443/path?q=1", "the basic idea", "tokens: 5", "a@b",
     # Token formats match only in the case they are issued in.
     "akiaiosfodnn7example", "GHP_" + "a" * 36, "SK_LIVE_4eC39HqLyjWDarjtT1zdp7dc"],
)
def test_non_secrets_are_kept_as_the_same_object(redactor: Redactor, text: str) -> None:
    assert redactor.redact_text(text) is text


def test_every_default_pattern_is_exercised(redactor: Redactor) -> None:
    hits = {i for i, p in enumerate(DEFAULT_VALUE_PATTERNS) for text, _ in PATTERN_CASES
            if p.search(text)}
    assert hits == set(range(len(DEFAULT_VALUE_PATTERNS)))


def test_luhn_decides_for_card_numbers(redactor: Redactor) -> None:
    valid = "4242424242424242"
    invalid = "4242424242424241"
    assert redactor.redact_text(valid) == M
    assert redactor.redact_text(invalid) == invalid
    assert redactor.redact_text("1234567890123456789012") == "1234567890123456789012"


def test_markers_are_not_rematched(redactor: Redactor) -> None:
    text = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. to bob@example.com"
    assert redactor.redact_text(text) == f"Bearer {M} to {M}"


def test_long_text_without_secrets_is_unchanged(redactor: Redactor) -> None:
    text = "a" * 200_000 + "." + "b1-" * 50_000
    assert redactor.redact_text(text) is text


@pytest.mark.parametrize(
    "text",
    ["-eyJ" * 25_000, "a." * 50_000 + "@", "a://b:" * 20_000, "4 " * 50_000,
     "password=" * 10_000, '{"' + "a" * 100_000, "bearer " * 15_000,
     "x@y.zz a://u:p@h eyJabcde.eyJabcde.x 4111111111111111 token=1 " * 2_000],
)
def test_hostile_input_is_linear(redactor: Redactor, text: str) -> None:
    # Values come from clients (URLs, headers, bodies): a pattern with
    # quadratic backtracking would be a denial of service. Quadratic cases
    # took minutes; linear ones take milliseconds.
    start = time.perf_counter()
    redactor.redact_text(text)
    redactor.redact_json(text)
    redactor.redact_url(text)
    assert time.perf_counter() - start < 5


# -- URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://bob:hunter2@example.com/a?b=1", f"https://bob:{M}@example.com/a?b=1"),
        ("https://example.com/a?token=abc&q=shoes#top",
         f"https://example.com/a?token={M}&q=shoes#top"),
        ("/v1/items?Api-Key=abc&page=2", f"/v1/items?Api-Key={M}&page=2"),
        ("/v1/items?client_secret=a%20b&x=", f"/v1/items?client_secret={M}&x="),
        ("/v1/items?email=bob%40example.com", "/v1/items?email=bob%40example.com"),
        ("/v1/items?email=bob@example.com", f"/v1/items?email={M}"),
        ("/plain/path", "/plain/path"),
    ],
)
def test_redact_url(redactor: Redactor, url: str, expected: str) -> None:
    assert redactor.redact_url(url) == expected


def test_url_attributes_get_query_masking(redactor: Redactor) -> None:
    attrs = {
        "url.full": "https://api.example.com/v1?session=abc&q=1",
        "url.query": "password=x&q=1",
        "http.target": "/v1?access_token=abc",
        "http.request.header.referer": ("https://example.com/?token=t1",),
    }
    assert redactor.redact_attributes(attrs) == {
        "url.full": f"https://api.example.com/v1?session={M}&q=1",
        "url.query": f"password={M}&q=1",
        "http.target": f"/v1?access_token={M}",
        "http.request.header.referer": (f"https://example.com/?token={M}",),
    }


def test_redact_attributes_returns_none_when_unchanged(redactor: Redactor) -> None:
    assert redactor.redact_attributes({"http.route": "/a", "http.status_code": 200}) is None
    # Second time through the cache of known-clean strings: same answers.
    assert redactor.redact_attributes({"http.route": "/a", "h": ("x", "y")}) is None
    assert redactor.redact_attributes({"http.route": "/a", "h": ("x", "y")}) is None
    # A clean value seen under an ordinary key is still masked under a denied one.
    assert redactor.redact_attributes({"password": "/a", "token": ("x", "y")}) == {
        "password": M, "token": (M, M)}
    assert redactor.redact_attributes({}) is None
    assert redactor.redact_attributes(None) is None


# -- JSON, forms, headers ---------------------------------------------------------


def test_nested_json_at_depth(redactor: Redactor) -> None:
    deep: Any = {"password": "p0", "keep": "k"}
    for i in range(30):
        deep = {f"level{i}": [deep, {"n": i}]}
    out = json.loads(redactor.redact_json(json.dumps(deep)))
    node = out
    for i in reversed(range(30)):
        assert node[f"level{i}"][1] == {"n": i}
        node = node[f"level{i}"][0]
    assert node == {"password": M, "keep": "k"}


def test_json_masks_denied_keys_and_patterns(redactor: Redactor) -> None:
    body = {"user": {"email": "bob@example.com", "name": "Bob", "apiKey": 12345,
                     "cards": [{"card_number": "4111111111111111", "exp": "12/30"}]},
            "items": [1, 2]}
    assert json.loads(redactor.redact_json(body)) == {
        "user": {"email": M, "name": "Bob", "apiKey": M,
                 "cards": [{"card_number": M, "exp": "12/30"}]},
        "items": [1, 2],
    }


def test_unchanged_json_text_is_returned_as_is(redactor: Redactor) -> None:
    text = '{ "a" : [1, 2, {"b": "c"}] }'
    assert redactor.redact_json(text) is text
    assert redactor.redact_json(text.encode()) == text


def test_truncated_json_still_masks_denied_keys(redactor: Redactor) -> None:
    text = '{"user": {"name": "Bob", "password": "hunter2", "token": "abc", "note": "hun'
    out = redactor.redact_json(text)
    assert "hunter2" not in out and '"abc"' not in out
    assert '"name": "Bob"' in out


def test_allowlist_keeps_only_listed_keys_and_denylist_wins() -> None:
    r = Redactor(RedactionRules.build(allowed_keys=["user", "id", "Password", "Accept"]))
    body = {"id": 7, "other": "o", "n": None,
            "user": {"name": "Bob", "password": "p", "email": "bob@example.com"}}
    assert json.loads(r.redact_json(body)) == {
        "id": 7, "other": M, "n": None,
        "user": {"name": "Bob", "password": M, "email": M},
    }
    assert r.redact_headers({"accept": "json", "x-trace": "1", "password": "p"}) == {
        "accept": "json", "x-trace": M, "password": M}
    assert r.redact_url("/a?id=1&q=2&password=3") == f"/a?id=1&q={M}&password={M}"
    # The allowlist is for captured payloads, not span attributes.
    assert r.redact_attributes({"http.route": "/a"}) is None


def test_redact_form_and_headers(redactor: Redactor) -> None:
    assert redactor.redact_form({"username": "bob", "password": "x", "tags": ["a", "b"]}) == {
        "username": "bob", "password": M, "tags": ["a", "b"]}
    headers = [("Authorization", "Bearer abcdefgh12"), ("Cookie", "a=b"), ("Accept", "*/*"),
               ("X-Forwarded-For", "1.2.3.4"), ("Cookie", "c=d"),
               ("Referer", "https://ex.com/?token=abc&q=1")]
    assert redactor.redact_headers(headers) == {
        "Authorization": M, "Cookie": [M, M], "Accept": "*/*", "X-Forwarded-For": "1.2.3.4",
        "Referer": f"https://ex.com/?token={M}&q=1"}


# -- rules -------------------------------------------------------------------------


def test_default_equals_plain_construction() -> None:
    assert RedactionRules.default() == RedactionRules()
    assert RedactionRules.build() == RedactionRules()


def test_extending_keeps_defaults() -> None:
    r = Redactor(RedactionRules.build(extra_keys=["X-Tenant-Secret-Id", "dob"],
                                      extra_patterns=[r"\bACME-[0-9]{6}\b"]))
    assert r.is_denied("x_tenant_secret_id") and r.is_denied("user.dob")
    assert r.is_denied("authorization")
    assert r.redact_text("acme-123456 and bob@example.com") == f"{M} and {M}"


def test_replacing_drops_defaults() -> None:
    r = Redactor(RedactionRules.build(extra_keys=["dob"], replace_keys=True,
                                      extra_patterns=[re.compile("ACME-[0-9]{6}")],
                                      replace_patterns=True))
    assert r.is_denied("dob") and not r.is_denied("authorization")
    assert r.redact_text("ACME-123456 and bob@example.com") == f"{M} and bob@example.com"
    assert r.redact_text("acme-123456") == "acme-123456"  # a compiled pattern keeps its flags


def test_no_patterns_at_all() -> None:
    r = Redactor(RedactionRules.build(replace_patterns=True))
    text = "bob@example.com"
    assert r.redact_text(text) is text


def test_custom_marker_and_invalid_rules() -> None:
    r = Redactor(RedactionRules.build(marker="***"))
    assert r.redact_value("password", "x") == "***"
    with pytest.raises(ValueError):
        RedactionRules(marker="")
    with pytest.raises(TypeError):
        RedactionRules(value_patterns=("not compiled",))  # type: ignore[arg-type]


def test_hash_marker_is_stable_and_keyed() -> None:
    a = Redactor(RedactionRules.build(hash_key=b"key-a"))
    b = Redactor(RedactionRules.build(hash_key=b"key-b"))
    first = a.redact_value("password", "hunter2")
    assert first == a.redact_value("password", "hunter2")
    assert re.fullmatch(r"\[REDACTED:[0-9a-f]{16}\]", str(first))
    assert first != a.redact_value("password", "hunter3")
    assert first != b.redact_value("password", "hunter2")
    assert first == f"[REDACTED:{pseudonymize('hunter2', b'key-a')}]"
    assert a.redact_text("to bob@example.com") == (
        f"to [REDACTED:{pseudonymize('bob@example.com', b'key-a')}]")
    assert "key-a" not in repr(a.rules)
    assert Redactor(RedactionRules.build(marker="<x>", hash_key=b"k")).mask("v") == (
        "<x>:" + pseudonymize("v", b"k"))


def test_pseudonymize() -> None:
    p = pseudonymize("consumer-1", b"k")
    assert re.fullmatch(r"[0-9a-f]{16}", p)
    assert p == pseudonymize("consumer-1", b"k") != pseudonymize("consumer-1", b"j")


# -- failing closed ---------------------------------------------------------------


class _Exploding(Redactor):
    def _text(self, s: str) -> str:
        raise RuntimeError("boom")


def test_internal_errors_fail_closed(caplog: pytest.LogCaptureFixture) -> None:
    r = _Exploding()
    with caplog.at_level(logging.DEBUG, logger="otel_flask_metrics.redaction"):
        assert r.redact_text("anything") == M
        assert r.redact_value("k", "anything") == M
        assert r.redact_url("/a?b=c") == M
        assert r.redact_query("b=c") == M
        assert json.loads(r.redact_json({"a": "b"})) == M
        assert r.redact_headers({"a": "b"}) == {"a": M}


# -- the span processor --------------------------------------------------------------


def test_span_attributes_events_links_and_status_are_redacted(
    tracer_provider: TracerProvider, span_exporter: InMemorySpanExporter
) -> None:
    tracer = tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("linked") as other:
        pass
    link = trace_api.Link(other.get_span_context(), {"token": "link-secret", "n": 1})
    with tracer.start_as_current_span("GET /items", links=[link]) as span:
        span.set_attribute("http.request.header.authorization", ("Bearer abcdefgh123",))
        span.set_attribute("url.full", "https://api.example.com/items?api_key=k1&q=shoes")
        span.set_attribute("http.route", "/items")
        span.set_attribute("http.response.status_code", 500)
        span.add_event("login", {"user.email": "bob@example.com", "ok": True})
        try:
            raise ValueError("could not charge 4111 1111 1111 1111 for bob@example.com")
        except ValueError as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"ValueError: {exc}"))
    exported = span_exporter.get_finished_spans()
    assert len(exported) == 2
    s = exported[1]
    assert s.name == "GET /items"
    assert s.attributes == {
        "http.request.header.authorization": (M,),
        "url.full": f"https://api.example.com/items?api_key={M}&q=shoes",
        "http.route": "/items",
        "http.response.status_code": 500,
    }
    login, exc_event = s.events
    assert login.name == "login" and dict(login.attributes or {}) == {"user.email": M, "ok": True}
    assert exc_event.name == "exception"
    exc_attrs = exc_event.attributes or {}
    assert exc_attrs["exception.message"] == f"could not charge {M} for {M}"
    assert "4111" not in str(exc_attrs["exception.stacktrace"])
    assert "bob@example.com" not in str(exc_attrs["exception.stacktrace"])
    assert exc_attrs["exception.type"] == "ValueError"
    assert s.status.status_code is StatusCode.ERROR
    assert s.status.description == f"ValueError: could not charge {M} for {M}"
    assert dict(s.links[0].attributes or {}) == {"token": M, "n": 1}
    assert s.links[0].context == other.get_span_context()
    assert s.context == span.get_span_context() and s.parent == span.parent
    assert s.start_time == span.start_time and s.end_time == span.end_time
    assert s.kind == span.kind and s.resource is span.resource
    assert s.instrumentation_scope == span.instrumentation_scope
    assert login.timestamp == span.events[0].timestamp


def test_untouched_spans_pass_as_the_same_object() -> None:
    seen: list[ReadableSpan] = []

    class Recorder(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            seen.append(span)

    # The SDK hands on_end a ReadableSpan snapshot; that very object goes on.
    received: list[ReadableSpan] = []

    class Spy(RedactingSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            received.append(span)
            super().on_end(span)

    provider = TracerProvider()
    provider.add_span_processor(Spy(Recorder()))
    with provider.get_tracer("t").start_as_current_span("clean") as span:
        span.set_attribute("http.route", "/a")
        span.add_event("e", {"n": 1}, timestamp=1)
        span.set_status(Status(StatusCode.ERROR, "plain failure"))
    assert len(seen) == 1 and seen[0] is received[0]
    readable = ReadableSpan("direct", attributes={"a": "b"})
    RedactingSpanProcessor(Recorder()).on_end(readable)
    assert seen[1] is readable


def test_dropped_counts_survive_the_copy(span_exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(span_limits=SpanLimits(max_attributes=2, max_events=1))
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(span_exporter)))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        for i in range(4):
            span.set_attribute(f"a{i}", i)
        span.set_attribute("password", "x")
        span.add_event("e1", {"token": "t"})
        span.add_event("e2", {"token": "t", "a": 1, "b": 2, "c": 3})
    (s,) = span_exporter.get_finished_spans()
    assert s is not span
    assert s.attributes == {"a3": 3, "password": M}
    assert s.dropped_attributes == span.dropped_attributes == 3
    assert s.dropped_events == span.dropped_events == 1
    assert s.events[0].dropped_attributes == span.events[0].dropped_attributes == 2
    assert dict(s.events[0].attributes or {}) == {"b": 2, "c": 3}


def test_span_redaction_failure_drops_the_span(
    span_exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Redactor):
        def redact_attributes(self, attrs: Any) -> Any:
            raise RuntimeError("boom")

    provider = TracerProvider()
    processor = RedactingSpanProcessor(SimpleSpanProcessor(span_exporter), Broken())
    provider.add_span_processor(processor)
    with caplog.at_level(logging.WARNING, logger="otel_flask_metrics.redaction"):
        with provider.get_tracer("t").start_as_current_span("s") as span:
            span.set_attribute("password", "x")
    assert span_exporter.get_finished_spans() == ()
    assert processor.force_flush() is True
    processor.shutdown()


# -- the log record processor -------------------------------------------------------


def test_log_records_are_redacted_in_place() -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(
        RedactingLogRecordProcessor(SimpleLogRecordProcessor(exporter)))
    logger = provider.get_logger("t")
    logger.emit(body="login by bob@example.com with Bearer abcdefgh1234",
                severity_number=SeverityNumber.INFO,
                attributes={"password": "p", "http.route": "/login"})
    logger.emit(body={"user": "bob", "token": "t", "nested": {"api_key": "k"}})
    try:
        raise KeyError("sk_live_4eC39HqLyjWDarjtT1zdp7dc")
    except KeyError as exc:
        logger.emit(body="failed", exception=exc)
    first, second, third = exporter.get_finished_logs()
    assert first.log_record.body == f"login by {M} with Bearer {M}"
    assert dict(first.log_record.attributes or {}) == {"password": M, "http.route": "/login"}
    assert second.log_record.body == {"user": "bob", "token": M, "nested": {"api_key": M}}
    attrs = third.log_record.attributes or {}
    assert "exception.message" in attrs
    blob = encode_logs([first, second, third]).SerializeToString()
    for secret in (b"bob@example.com", b"abcdefgh1234", b"sk_live_4eC39", b'"p"'):
        assert secret not in blob
    provider.shutdown()


def test_immutable_log_attributes_are_replaced() -> None:
    from opentelemetry._logs import LogRecord
    from opentelemetry.attributes import BoundedAttributes

    record = ReadWriteLogRecord(LogRecord(body="x", attributes={"token": "t", "n": 1}))
    record.log_record.attributes = BoundedAttributes(
        attributes={"token": "t", "n": 1}, immutable=True)
    forwarded: list[ReadWriteLogRecord] = []

    class Recorder(LogRecordProcessor):
        def on_emit(self, log_record: ReadWriteLogRecord) -> None:
            forwarded.append(log_record)

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    RedactingLogRecordProcessor(Recorder()).on_emit(record)
    assert forwarded == [record]
    assert dict(record.log_record.attributes or {}) == {"token": M, "n": 1}


def test_log_redaction_failure_drops_the_record() -> None:
    class Broken(Redactor):
        def redact_value(self, key: str, value: Any) -> Any:
            raise RuntimeError("boom")

    forwarded: list[ReadWriteLogRecord] = []

    class Recorder(LogRecordProcessor):
        def on_emit(self, log_record: ReadWriteLogRecord) -> None:
            forwarded.append(log_record)

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    provider = LoggerProvider()
    processor = RedactingLogRecordProcessor(Recorder(), Broken())
    provider.add_log_record_processor(processor)
    provider.get_logger("t").emit(body="x")
    assert forwarded == []
    assert processor.enabled() is True
    assert processor.force_flush() is True


# -- property: secrets never reach the OTLP bytes -----------------------------------

# Secrets start with "Zq" (upper case) and ordinary values are lower case, so a
# secret cannot turn up in the output by coincidence.
_ALNUM = string.ascii_letters + string.digits
_secret_text = st.text(alphabet=_ALNUM + "-_.~+/", min_size=10, max_size=40).map(lambda s: "Zq" + s)
_plain = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=12)
_denied_key = st.sampled_from(DEFAULT_DENIED_KEYS).flatmap(
    lambda k: st.sampled_from([k, k.upper(), k.replace("-", "_"), f"app.{k}"]))


@st.composite
def _card(draw: st.DrawFn) -> tuple[str, str]:
    body = draw(st.sampled_from("23456")) + draw(
        st.text(alphabet=string.digits, min_size=14, max_size=14))
    digits = body + _luhn_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return digits, sep.join(digits[i:i + 4] for i in range(0, 16, 4))


@st.composite
def _email(draw: st.DrawFn) -> str:
    local = draw(st.text(alphabet=_ALNUM + "._+", min_size=1, max_size=10))
    domain = draw(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1,
                          max_size=10))
    return f"Zq{local}@{domain}.example"


@st.composite
def _secrets(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "bearer": draw(_secret_text),
        "jwt_sig": draw(st.text(alphabet=_ALNUM + "-_", min_size=16, max_size=43)),
        "jwt_sub": draw(_secret_text),
        "email": draw(_email()),
        "card": draw(_card()),
        "denied_key": draw(_denied_key),
        "denied_value": draw(_secret_text),
        "query_key": draw(_denied_key),
        "query_value": draw(st.text(alphabet=_ALNUM, min_size=8, max_size=30).map(
            lambda s: "Zq" + s)),
        "json_key": draw(_denied_key),
        "json_value": draw(_secret_text),
        "depth": draw(st.integers(min_value=0, max_value=12)),
        "plain": draw(_plain),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_secrets())
def test_secrets_never_reach_the_otlp_bytes(data: dict[str, Any]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exporter)))
    redactor = Redactor()
    jwt = _jwt(data["jwt_sub"], data["jwt_sig"])
    card_digits, card = data["card"]
    plain = data["plain"]
    nested: Any = {data["json_key"]: data["json_value"], "keep": plain}
    for _ in range(data["depth"]):
        nested = {"child": [nested, plain]}
    headers = {"Authorization": f"Bearer {data['bearer']}",
               data["denied_key"]: data["denied_value"], "X-Plain": plain}
    query = f"{data['query_key']}={data['query_value']}&plain={plain}"
    try:
        with provider.get_tracer("t").start_as_current_span("GET /items") as span:
            span.set_attribute(data["denied_key"], data["denied_value"])
            span.set_attribute("http.request.header.authorization", (f"Bearer {data['bearer']}",))
            span.set_attribute("http.request.header.x-jwt", (jwt,))
            span.set_attribute("url.full", f"https://api.example.com/items?{query}")
            span.set_attribute("message", f"paid with {card} by {data['email']}")
            span.set_attribute("request.body", json.dumps(nested))
            span.set_attribute("captured.headers", json.dumps(redactor.redact_headers(headers)))
            span.set_attribute("captured.query", redactor.redact_query(query))
            span.set_attribute("captured.body", redactor.redact_json(nested))
            span.set_attribute("plain", plain)
            span.add_event("checkout", {data["denied_key"]: data["denied_value"],
                                        "note": f"to {data['email']}"})
            try:
                raise RuntimeError(f"card {card} declined for {data['email']} token {jwt}")
            except RuntimeError as exc:
                span.record_exception(exc)
        spans = exporter.get_finished_spans()
        blob = encode_spans(spans).SerializeToString()
    finally:
        provider.shutdown()
    for secret in (data["bearer"], jwt, data["jwt_sig"], data["email"], card, card_digits,
                   data["denied_value"], data["query_value"], data["json_value"]):
        assert secret.encode() not in blob, secret
    (s,) = spans
    attrs = s.attributes or {}
    assert attrs["plain"] == plain
    assert attrs["url.full"] == (
        f"https://api.example.com/items?{data['query_key']}={M}&plain={plain}")
    body = json.loads(str(attrs["request.body"]))
    for _ in range(data["depth"]):
        assert body["child"][1] == plain
        body = body["child"][0]
    assert body == {data["json_key"]: M, "keep": plain}
    assert json.loads(str(attrs["captured.headers"]))["X-Plain"] == plain


def test_redacting_exporter_redacts_in_the_export_path() -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_flask_metrics.redaction import RedactingSpanExporter

    inner = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(inner)))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        span.set_attribute("http.request.header.authorization", ("Bearer abcdefghijklmnop",))
        span.set_attribute("http.route", "/x")
    provider.force_flush()
    (exported,) = inner.get_finished_spans()
    assert exported.attributes["http.request.header.authorization"] == ("[REDACTED]",)
    assert exported.attributes["http.route"] == "/x"
    provider.shutdown()


@pytest.mark.parametrize("limits", [SpanLimits(), SpanLimits(max_span_attributes=2)])
def test_the_exporter_sends_the_same_otlp_bytes_over_plain_attributes(limits: SpanLimits) -> None:
    from otel_flask_metrics.redacting_processors import _with_plain_attributes

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent"):
        span = tracer.start_span("GET /items", attributes={"http.request.method": "GET"})
        span.set_attributes({"url.path": "/items/1", "http.response.status_code": 200, "n": 1.5})
        span.add_event("e", {"k": "v"})
        span.record_exception(ValueError("boom"))
        span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end()
    ended = exporter.get_finished_spans()[0]
    plain = _with_plain_attributes(ended)
    if limits.max_span_attributes == 2:
        assert plain is ended, "dropped attributes keep their container"
    else:
        assert plain is not ended and type(dict(plain.attributes)) is dict
    assert encode_spans([plain]).SerializeToString() == encode_spans([ended]).SerializeToString()
    assert plain.to_json() == ended.to_json()
