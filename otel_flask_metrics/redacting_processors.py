"""Redaction wired into the SDK's pipelines: span and log record processors and a
span exporter wrapper, so every span and log record is redacted on the way
out whatever instrumentation produced it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.status import Status
from opentelemetry.util.types import AnyValue, AttributeValue

from .export_pauses import let_requests_run
from .redaction_rules import (
    _log_once,
)
from .redactor import Redactor


def _bounded(new: dict[str, AttributeValue], dropped: int) -> Mapping[str, AttributeValue]:
    """Read-only attributes for the copy. If the original dropped some (over
    the span limits), a ``BoundedAttributes`` carrying that count, so the copy
    exports the same ``dropped_attributes_count``; otherwise a cheap read-only
    view (building ``BoundedAttributes`` re-validates every value)."""
    if not dropped:
        return MappingProxyType(new)
    attrs = BoundedAttributes(attributes=new, immutable=True)
    attrs.dropped = dropped
    return attrs


class RedactingSpanProcessor(SpanProcessor):
    """A span processor that redacts ended spans before the wrapped one sees them.

    Wrap the exporting processor (typically a ``BatchSpanProcessor``) rather
    than adding this next to it: processors run in registration order on the
    same span object, and only wrapping guarantees the exporter never sees the
    unredacted span. Span attributes, event attributes (including
    ``exception.message`` and ``exception.stacktrace``), link attributes and
    the status description are redacted; names and the resource are not.
    An unchanged span is forwarded as the same object (no copy); a changed one
    is rebuilt with the public :class:`~opentelemetry.sdk.trace.ReadableSpan`
    constructor. If redaction fails the span is dropped (fail closed) and a
    warning is logged once.

    :param processor: the processor to forward to.
    :param redactor: the redactor; one with the default rules if omitted.
    """

    def __init__(self, processor: SpanProcessor, redactor: Redactor | None = None) -> None:
        self._processor = processor
        self._redactor = redactor if redactor is not None else Redactor()

    @property
    def processor(self) -> SpanProcessor:
        """The wrapped processor."""
        return self._processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        # Private SDK hook, forwarded so wrapping changes nothing but redaction.
        self._processor._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            redacted = self.redact_span(span)
        except Exception:
            _log_once(
                "span",
                logging.WARNING,
                "otel_flask_metrics: redacting a span failed; dropped it rather than export "
                "unredacted data",
            )
            return
        self._processor.on_end(redacted)

    def redact_span(self, span: ReadableSpan) -> ReadableSpan:
        """Return ``span`` itself if nothing needs masking, else a redacted copy."""
        return redact_span(span, self._redactor)

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)


def redact_span(span: ReadableSpan, r: Redactor) -> ReadableSpan:
    """Return ``span`` itself if nothing needs masking, else a redacted copy.

    :raises Exception: whatever fails; callers turn that into a drop.
    """
    changed = False
    attributes: Any = span.attributes
    new_attrs = r.redact_attributes(attributes)
    if new_attrs is not None:
        attributes = _bounded(new_attrs, span.dropped_attributes)
        changed = True

    new_events, events_changed = _redact_items(
        span.events, r, lambda event, attrs: Event(event.name, attrs, event.timestamp)
    )
    new_links, links_changed = _redact_items(
        span.links, r, lambda link, attrs: trace_api.Link(link.context, attrs)
    )
    changed = changed or events_changed or links_changed

    status = span.status
    if status.description:
        description = r.redact_text(status.description)
        if description is not status.description:
            status = Status(status.status_code, description)
            changed = True

    if not changed:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=_bounded_list(new_events, span.dropped_events),
        links=_bounded_list(new_links, span.dropped_links),
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """An exporter that redacts each batch before the wrapped exporter sends it.

    This is how the distro redacts: a ``BatchSpanProcessor`` calls ``export``
    from its worker thread, so the work is done in the export path, not on
    the request thread, and still nothing reaches the wrapped exporter
    unredacted. A span that fails to redact is dropped (fail closed) and a
    warning is logged once.
    """

    def __init__(self, exporter: SpanExporter, redactor: Redactor | None = None) -> None:
        self._exporter = exporter
        self._redactor = redactor if redactor is not None else Redactor()

    @property
    def exporter(self) -> SpanExporter:
        """The wrapped exporter."""
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        redacted: list[ReadableSpan] = []
        for span in spans:
            let_requests_run()
            try:
                redacted.append(redact_span(_with_plain_attributes(span), self._redactor))
            except Exception:
                _log_once(
                    "span",
                    logging.WARNING,
                    "otel_flask_metrics: redacting a span failed; dropped it rather than "
                    "export unredacted data",
                )
        return self._exporter.export(redacted)

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _with_plain_attributes(span: ReadableSpan) -> ReadableSpan:
    """``span``, or the same span read over its attributes' plain dict.

    An SDK span keeps its attributes in a ``BoundedAttributes``, a Python
    mapping: each pass over it (redaction's, then the OTLP encoder's) runs a
    Python generator and a ``__getitem__`` call per attribute, about five times
    a pass over a dict. An ended span's attributes no longer change, so the
    exported copy reads them from the dict inside, in the same order. Spans
    that dropped attributes, events or links (their counts live in the
    bounded containers), and anything not built as expected, go as they are.
    """
    bounded = getattr(span, "_attributes", None)
    if type(bounded) is not BoundedAttributes or bounded.dropped or span.end_time is None:
        return span
    plain = getattr(bounded, "_dict", None)
    if type(plain) is not dict or span.dropped_events or span.dropped_links:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=span.parent,
        resource=span.resource,
        attributes=MappingProxyType(plain),
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _redact_items(
    items: Sequence[Any], r: Redactor, rebuild: Callable[[Any, Mapping[str, AttributeValue]], Any]
) -> tuple[list[Any], bool]:
    """Events or links with redacted attributes: each one kept as it is when
    nothing in it changed, else rebuilt (keeping its dropped-attribute count)."""
    out: list[Any] = []
    changed = False
    for item in items:
        attrs = r.redact_attributes(item.attributes)
        if attrs is None:
            out.append(item)
        else:
            changed = True
            out.append(rebuild(item, _bounded(attrs, item.dropped_attributes)))
    return out, changed


def _bounded_list(items: list[Any], dropped: int) -> Sequence[Any]:
    """Keep the original's dropped count (events/links over the span limits)."""
    if not dropped:
        return tuple(items)
    bounded: BoundedList[Any] = BoundedList(None)
    # BoundedList.extend is unannotated in the SDK.
    cast(Any, bounded).extend(items)
    bounded.dropped = dropped
    return bounded


class RedactingLogRecordProcessor(LogRecordProcessor):
    """A log record processor that redacts records before the wrapped one sees them.

    In SDK 1.45 the :class:`~opentelemetry.sdk._logs.ReadWriteLogRecord` is
    mutable at emit time, so the body (a string, or a structured value) and the
    attributes (including ``exception.*``) are redacted in place. As with spans,
    wrap the exporting processor: the record object is shared by every
    processor on the provider. If redaction fails the record is dropped
    (fail closed) and a warning is logged once.

    :param processor: the processor to forward to.
    :param redactor: the redactor; one with the default rules if omitted.
    """

    def __init__(self, processor: LogRecordProcessor, redactor: Redactor | None = None) -> None:
        self._processor = processor
        self._redactor = redactor if redactor is not None else Redactor()

    @property
    def processor(self) -> LogRecordProcessor:
        """The wrapped processor."""
        return self._processor

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            self.redact_record(log_record)
        except Exception:
            _log_once(
                "log",
                logging.WARNING,
                "otel_flask_metrics: redacting a log record failed; dropped it rather than "
                "export unredacted data",
            )
            return
        self._processor.on_emit(log_record)

    def redact_record(self, log_record: ReadWriteLogRecord) -> None:
        """Redact ``log_record`` in place.

        :raises Exception: whatever fails; :meth:`on_emit` turns that into a drop.
        """
        r = self._redactor
        record = log_record.log_record
        body: AnyValue = record.body
        if body is not None:
            record.body = r.redact_value("body", body)
        attrs = record.attributes
        new_attrs = r.redact_attributes(attrs)
        if new_attrs is None or attrs is None:
            return
        if isinstance(attrs, BoundedAttributes):
            try:
                # In place keeps the SDK's limits and dropped count on the record.
                for key, value in new_attrs.items():
                    if value is not attrs.get(key):
                        attrs[key] = value
                return
            except TypeError:  # an immutable BoundedAttributes
                pass
        record.attributes = _bounded(new_attrs, getattr(attrs, "dropped", 0))

    def enabled(
        self,
        *,
        context: Context | None = None,
        instrumentation_scope: InstrumentationScope | None = None,
        severity_number: SeverityNumber | None = None,
        event_name: str | None = None,
    ) -> bool:
        return self._processor.enabled(
            context=context,
            instrumentation_scope=instrumentation_scope,
            severity_number=severity_number,
            event_name=event_name,
        )

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)
