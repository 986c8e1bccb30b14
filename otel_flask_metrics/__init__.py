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
from .version import __version__ as __version__

__all__ = [
    "Consumer",
    "FlaskMetrics",
    "Settings",
    "__version__",
    "configure",
    "custom",
    "set_consumer",
]
