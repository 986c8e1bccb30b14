"""Opt-in capture of request/response headers and bodies for the server span.

Headers follow the standard variables of the OpenTelemetry HTTP
instrumentations (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``,
``..._SERVER_RESPONSE``, ``..._SANITIZE_FIELDS``; comma-separated names or
regexes) and become ``http.request.header.<name>`` /
``http.response.header.<name>`` attributes, the name in lower case with its
dashes, as the current semantic conventions say.

Bodies (``OTEL_FLASK_METRICS_CAPTURE_BODIES``) are kept only for JSON, form and
text content types, at most ``OTEL_FLASK_METRICS_CAPTURE_BODY_MAX_BYTES`` bytes
each, taken as the bytes flow: nothing is buffered or read that the app and the
server would not read anyway. They go to ``http.request.body.content`` and
``http.response.body.content``.

Everything captured passes the redacting span processor before export, like
every other attribute: credentials in headers, denied keys in form and JSON
bodies, and secret-shaped values anywhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
    SanitizeValue,
)

from .config import Settings

REQUEST_BODY = "http.request.body.content"
RESPONSE_BODY = "http.response.body.content"

_TEXTUAL = re.compile(
    r"^\s*(application/([a-z0-9.+-]*\+)?json|application/x-www-form-urlencoded|text/[a-z0-9.+-]+)",
    re.IGNORECASE,
)


def is_textual(content_type: str | None) -> bool:
    """JSON, form and text bodies are captured; anything else is binary to us."""
    return bool(content_type) and _TEXTUAL.match(content_type or "") is not None


def decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class Capture:
    """What to capture, decided once from the settings and the environment."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.body_limit = settings.capture_body_max_bytes if settings.capture_bodies else 0
        self._request = _compile(
            _names(env, OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST)
        )
        self._response = _compile(
            _names(env, OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE)
        )
        self._sanitize = SanitizeValue(
            _names(env, OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS)
        )

    @property
    def headers(self) -> bool:
        return self._request is not None or self._response is not None

    def request_headers(self, environ: Mapping[str, Any]) -> dict[str, list[str]]:
        if self._request is None:
            return {}
        found: dict[str, list[str]] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").lower()
                if self._request.fullmatch(name):
                    found["http.request.header." + name] = [
                        self._sanitize.sanitize_header_value(name, str(value))
                    ]
        return found

    def response_headers(self, headers: Iterable[tuple[str, str]] | None) -> dict[str, list[str]]:
        if self._response is None or not headers:
            return {}
        found: dict[str, list[str]] = {}
        for name, value in headers:
            lowered = name.lower()
            if self._response.fullmatch(lowered):
                found.setdefault("http.response.header." + lowered, []).append(
                    self._sanitize.sanitize_header_value(lowered, value)
                )
        return found


class BodyPrefix:
    """Keeps the first ``limit`` bytes of a body as they pass."""

    __slots__ = ("data", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]


class CapturingInput:
    """``wsgi.input`` that keeps a prefix of what the app reads, and counts it."""

    __slots__ = ("_stream", "count", "prefix")

    def __init__(self, stream: Any, prefix: BodyPrefix | None) -> None:
        self._stream = stream
        self.prefix = prefix
        self.count = 0

    def _seen(self, data: bytes) -> bytes:
        self.count += len(data)
        if self.prefix is not None:
            self.prefix.add(data)
        return data

    def read(self, *args: Any) -> bytes:
        return self._seen(self._stream.read(*args))

    def readinto(self, buffer: Any) -> int | None:
        # Werkzeug's LimitedStream reads this way.
        size: int | None = self._stream.readinto(buffer)
        if size:
            self.count += size
            if self.prefix is not None:
                self.prefix.add(bytes(memoryview(buffer)[:size]))
        return size

    def readline(self, *args: Any) -> bytes:
        return self._seen(self._stream.readline(*args))

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._seen(line) for line in self._stream.readlines(*args)]

    def __iter__(self) -> Any:
        for line in self._stream:
            yield self._seen(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _names(env: Mapping[str, str], variable: str) -> list[str]:
    return [name.strip() for name in env.get(variable, "").split(",") if name.strip()]


def _compile(names: list[str]) -> re.Pattern[str] | None:
    if not names:
        return None
    return re.compile("|".join(names), re.IGNORECASE)
