"""The ``opentelemetry_instrumentor`` entry point: every Flask app, no code change.

``opentelemetry-instrument`` calls :meth:`FlaskMetricsInstrumentor.instrument`
before the app module is imported. Rather than replacing the ``flask.Flask``
class (which breaks ``isinstance`` checks and apps whose module imported Flask
first), it wraps ``Flask.__init__`` so that each new app gets
:class:`~otel_flask_metrics.FlaskMetrics` set up on it; ``uninstrument``
restores the original method.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import flask
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,  # the package has no py.typed: its names are untyped
)
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from .extension import FlaskMetrics

_logger = logging.getLogger(__name__)


class FlaskMetricsInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # untyped base
    """Sets up otel-flask-metrics on every Flask app created after ``instrument()``."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("flask >= 2.3",)

    def _instrument(self, **kwargs: Any) -> None:
        extension = FlaskMetrics(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
        )

        def after_init(wrapped: Callable[..., None], app: flask.Flask, args: Any, kw: Any) -> None:
            wrapped(*args, **kw)
            try:
                extension._setup(app, automatic=True)
            except Exception:
                _logger.warning("otel-flask-metrics could not instrument %r", app, exc_info=True)

        wrap_function_wrapper(flask.Flask, "__init__", after_init)

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap(flask.Flask, "__init__")
