"""otel-flask-metrics: an OpenTelemetry distribution for Flask APIs.

Start an unchanged app with ``opentelemetry-instrument gunicorn app:app``, or
use :class:`FlaskMetrics` with ``init_app`` in an app factory after
:func:`configure`.
"""

from __future__ import annotations

from . import custom as custom
from .config import Settings as Settings
from .consumers import Consumer as Consumer
from .consumers import set_consumer as set_consumer
from .distro import configure as configure
from .extension import FlaskMetrics as FlaskMetrics
from .redaction import RedactingLogRecordProcessor as RedactingLogRecordProcessor
from .redaction import RedactingSpanExporter as RedactingSpanExporter
from .redaction import RedactingSpanProcessor as RedactingSpanProcessor
from .redaction import RedactionRules as RedactionRules
from .redaction import Redactor as Redactor
from .version import __version__ as __version__

__all__ = [
    "Consumer",
    "FlaskMetrics",
    "RedactingLogRecordProcessor",
    "RedactingSpanExporter",
    "RedactingSpanProcessor",
    "RedactionRules",
    "Redactor",
    "Settings",
    "__version__",
    "configure",
    "custom",
    "set_consumer",
]
