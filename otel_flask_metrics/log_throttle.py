"""Keeps per-request warnings of the OpenTelemetry SDK from flooding the app's log.

During a long Collector outage the batch processor's queue fills and the SDK
logs "Queue full, dropping spans." for every request; a client sending a
malformed ``baggage`` header makes the propagator warn on every request it
sends; with no Collector listening, the OTLP exporters log every failed
export and every retry (4 lines a minute per worker and signal, from the first
minute on, for an app started before its Collector). All are worth one line,
not thousands. This filter lets the first
occurrence of a message through, then at most one line per interval saying how
many were suppressed. The drops themselves are still counted by the SDK.
"""

from __future__ import annotations

import logging
import threading
import time

INTERVAL = 60.0  # seconds between two lines about the same message

# The loggers whose warnings a request (or its absence of a Collector) can trigger.
THROTTLED_LOGGERS = (
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.baggage.propagation",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)


class RepeatedMessageFilter(logging.Filter):
    """Passes a message once per ``interval``, counting what it held back."""

    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__()
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._suppressed.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self._interval:.0f} s)"
        return True


_installed = RepeatedMessageFilter()


def install() -> None:
    """Attach the filter to the SDK loggers, once."""
    for name in THROTTLED_LOGGERS:
        logger = logging.getLogger(name)
        if _installed not in logger.filters:
            logger.addFilter(_installed)
