"""Keep a request's span after seeing its response: errors and slow requests at any sampling rate.

A head sampler decides when a request arrives, before anyone knows it will
fail. At 10 % sampling nine of ten 500s would leave no trace, and those are
the requests people open the request log for. So a request that was not
sampled is still not recorded while it runs (that would cost every request a
span), but when it ends with a 5xx or an unhandled exception, or took longer
than a threshold, its server span is created then, with the start time,
trace id and span id the request already had, and goes through the same
processors, redaction and exporters as any other span.

What such a span cannot have: spans that other instrumentations (HTTP
clients, databases) would have made under it, and events the app added to the
current span while it ran, since both were dropped when the request was not
sampled.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from .config import Settings

_logger = logging.getLogger(__name__)


class _ReplayedIds(IdGenerator):
    """Gives the kept span the ids its request already had (and propagated).

    Set just before the kept span starts, on the thread that starts it.
    """

    def __init__(self) -> None:
        self._pending = threading.local()
        self.random = False  # what the request tracer's generator says of its trace ids

    def replay(self, trace_id: int, span_id: int) -> None:
        self._pending.ids = (trace_id, span_id)

    def generate_trace_id(self) -> int:
        return self._pending.ids[0]  # type: ignore[no-any-return]

    def generate_span_id(self) -> int:
        return self._pending.ids[1]  # type: ignore[no-any-return]

    def is_trace_id_random(self) -> bool:
        return self.random


class RequestKeeper:
    """Decides which unsampled requests are kept, and starts their spans.

    :param tracer: the tracer of the request spans. Kept spans are made by a
        tracer that shares its resource, processors and limits, with a sampler
        that keeps everything; that needs the OpenTelemetry SDK's tracer (or a
        proxy to one).
    """

    __slots__ = ("_ids", "_kept_tracer", "_resolved", "_tracer", "keep_errors", "slow_seconds")

    def __init__(self, tracer: trace.Tracer, keep_errors: bool, slow_ms: int | None) -> None:
        self._tracer = tracer
        self.keep_errors = keep_errors
        # Compared with the request's duration in seconds.
        self.slow_seconds = slow_ms / 1000 if slow_ms is not None else None
        self._ids = _ReplayedIds()
        self._kept_tracer: SdkTracer | None = None
        self._resolved = False

    @classmethod
    def from_settings(cls, settings: Settings, tracer: trace.Tracer) -> RequestKeeper | None:
        """The keeper the settings ask for, or None when nothing is kept."""
        if not settings.keep_errors and settings.keep_slow_ms is None:
            return None
        return cls(tracer, settings.keep_errors, settings.keep_slow_ms)

    def wants(self, error_type: str | None, duration: float) -> bool:
        """Whether an unsampled request that ended so is kept."""
        if error_type is not None and self.keep_errors:
            return True
        slow = self.slow_seconds
        return slow is not None and duration >= slow

    def start_span(
        self,
        unsampled: trace.Span,
        name: str,
        parent: Any,
        attributes: dict[str, Any],
        start_time: int,
    ) -> trace.Span | None:
        """The recorded server span for the request ``unsampled`` stood for, or None.

        :param parent: the context the request's trace was continued from.
        :param start_time: when the request began, in ns since the epoch.
        """
        tracer = self._sdk_tracer()
        source = self._source()
        if tracer is None or source is None:
            return None
        ids = unsampled.get_span_context()
        if not ids.is_valid:
            # The request tracer made no ids (a tracer configurator disabled
            # it): nothing to keep under.
            return None
        self._ids.replay(ids.trace_id, ids.span_id)
        # A worker renews its resource after the fork (service.instance.id):
        # take the request tracer's current one.
        tracer.resource = source.resource
        return tracer.start_span(
            name,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            start_time=start_time,
        )

    def _source(self) -> SdkTracer | None:
        tracer = self._tracer
        if isinstance(tracer, SdkTracer):
            return tracer
        # The API's ProxyTracer, once a provider is set, delegates to it.
        inner = getattr(tracer, "_tracer", None)
        return inner if isinstance(inner, SdkTracer) else None

    def _sdk_tracer(self) -> SdkTracer | None:
        if self._kept_tracer is not None or self._resolved:
            return self._kept_tracer
        source = self._source()
        if source is None:
            if isinstance(getattr(self._tracer, "_tracer", None), trace.NoOpTracer):
                return None  # no provider yet: decide on a later request
            self._resolved = True
            _logger.warning(
                "otel-flask-metrics: failed and slow requests that were not sampled are not "
                "kept: the tracer provider is not the OpenTelemetry SDK's"
            )
            return None
        self._resolved = True
        self._ids.random = source.id_generator.is_trace_id_random()
        self._kept_tracer = SdkTracer(
            ALWAYS_ON,
            source.resource,
            source.span_processor,
            self._ids,
            source.instrumentation_info,
            source._span_limits,  # the request spans' limits
            source._instrumentation_scope,  # the same scope
            _tracer_config=source._tracer_config,
        )
        return self._kept_tracer
