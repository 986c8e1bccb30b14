"""The app's own log lines, tied to the request that wrote them.

OpenTelemetry's logging handler (``opentelemetry-instrumentation-logging``)
turns each ``logging`` record into an OTLP log record carrying the current
trace and span ids. This processor sits in front of the exporting ones and
adds what a request log needs to find a line again: the route and the API
consumer of the request being served, and it caps how many lines one request
can export, so a request stuck in a loop cannot flood the export queue that
every other request shares. Records written outside a request pass unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from flask import current_app, has_request_context, request
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.semconv.attributes import http_attributes

from .extension import EXTENSION_KEY
from .request_record import API_CONSUMER_GROUP, API_CONSUMER_ID, ENVIRON_KEY, RequestRecord

if TYPE_CHECKING:
    from .extension import AppState

_logger = logging.getLogger(__name__)

_ROUTE = http_attributes.HTTP_ROUTE


class RequestLogProcessor(LogRecordProcessor):
    """Adds ``http.route`` and ``api.consumer.*`` to a request's log records, at most N per request.

    :param processor: where the records go next (redaction, then export).
    :param per_request: records exported per request; later ones are dropped,
        and the request's span says how many (``otel_flask_metrics.log_records.dropped``).
    """

    def __init__(self, processor: LogRecordProcessor, per_request: int) -> None:
        self._processor = processor
        self._per_request = per_request

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            keep = self._annotate(log_record)
        except Exception:
            # The line still goes out, without the request's attributes.
            _logger.debug("otel-flask-metrics: a log record's request is unknown", exc_info=True)
            keep = True
        if keep:
            self._processor.on_emit(log_record)

    def _annotate(self, log_record: ReadWriteLogRecord) -> bool:
        if not has_request_context():
            return True
        req = request._get_current_object()  # type: ignore[attr-defined]
        record: RequestRecord | None = req.environ.get(ENVIRON_KEY)
        if record is None:  # an excluded URL, or another app's request
            return True
        if record.last_log is not log_record:
            # Counted once, however many exporters' processors see the record.
            record.last_log = log_record
            record.log_records += 1
            if record.log_records > self._per_request:
                record.log_records_dropped += 1
        if record.log_records > self._per_request:
            return False
        attributes = log_record.log_record.attributes
        if not isinstance(attributes, MutableMapping):  # the SDK gives a mutable one
            return True
        rule = req.url_rule
        if rule is not None:
            attributes[_ROUTE] = rule.rule
        state: AppState | None = current_app.extensions.get(EXTENSION_KEY)
        # A request the skip callback may opt out (decided after the view)
        # gets no consumer on its lines before that decision.
        if state is not None and not record.private and (
            record.consumer is not None or state.settings.skip_callback is None
        ):
            # The consumer as known now: the header's at once, one the view
            # sets (g.consumer_identifier, set_consumer) from then on; the
            # consumer callback runs once per request, after the view, never
            # per line.
            consumer = record.consumer or state.consumers.resolve(req, use_callback=False)
            if consumer is not None:
                attributes[API_CONSUMER_ID] = consumer.id
                if consumer.group is not None:
                    attributes[API_CONSUMER_GROUP] = consumer.group
        return True

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)
