"""The console output an app had before OpenTelemetry's logging handler joined the root logger.

That handler exports records; it shows none. But Python counts it as a
handler, and so do the libraries that add a console handler only when no
handler would show their records:

- Python's last-resort stderr output stops: a warning of any library (a
  failed export among them) is seen by nobody;
- Flask adds no console handler to ``app.logger``: the traceback of every 500
  would vanish from the server's log;
- Werkzeug adds none to its logger: ``flask run`` would print neither its
  "Running on" address nor its request lines.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def reaches_a_console(logger: logging.Logger, ignoring: logging.Handler | None = None) -> bool:
    """Whether a record of ``logger`` reaches a handler other than OpenTelemetry's.

    With no handler at all, Python's last-resort handler prints warnings to stderr.

    :param ignoring: a handler not to count (the one asking).
    """
    current: logging.Logger | None = logger
    found = False
    while current is not None:
        for handler in current.handlers:
            if handler is ignoring:
                continue
            if not type(handler).__module__.startswith("opentelemetry."):
                return True
            found = True
        if not current.propagate:
            break
        current = current.parent
    return not found


class FlaskConsole(logging.Handler):
    """Flask's default console handler, for the records nothing else would show.

    Decided per record, as Flask would have decided when the logger was
    made: an app that configures logging afterwards (``basicConfig`` under
    the launcher) gets each line once, from its own handler.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        from flask.logging import default_handler

        if reaches_a_console(logging.getLogger(record.name), ignoring=self):
            return False
        return bool(default_handler.handle(record))

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work
        pass


def keep_flask_console(app: Flask) -> None:
    """Give ``app``'s logger Flask's console output when only OpenTelemetry's handler would see it.

    The logger is looked up by name, not through ``app.logger``, so Flask
    still creates that property itself, later, with the app's debug level.
    """
    from flask.logging import default_handler

    logger = logging.getLogger(app.name)
    if any(isinstance(h, FlaskConsole) or h is default_handler for h in logger.handlers):
        return
    if not reaches_a_console(logger):
        logger.addHandler(FlaskConsole())


#: Werkzeug's logger, which gets a stderr handler of its own when none would show its records.
_WERKZEUG = "werkzeug"


class ConsoleFallback(logging.Filter):
    """Shows, beside OpenTelemetry's handler, what the console would have shown without it.

    A filter on that handler, not a handler: ``logging.basicConfig`` (which
    does nothing once the root logger has a handler) and Werkzeug's own
    "is there a handler" check see the root logger as OpenTelemetry's
    handler left it. Decided per record, so an app that configures logging
    later gets each line once, from its own handler.
    """

    def __init__(self) -> None:
        super().__init__()
        self._werkzeug_console = logging.StreamHandler()  # stderr, "%(message)s", as Werkzeug's

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if not reaches_a_console(logging.getLogger(record.name)):
                if record.name == _WERKZEUG or record.name.startswith(_WERKZEUG + "."):
                    self._werkzeug_console.handle(record)
                elif logging.lastResort is not None and record.levelno >= logging.lastResort.level:
                    logging.lastResort.handle(record)
        except Exception:  # showing a line must never fail the app's logging call
            pass
        return True


def show_what_the_console_would(handler: logging.Handler | None) -> None:
    """Give OpenTelemetry's root ``handler`` the console output its presence stops."""
    if handler is not None and not any(isinstance(f, ConsoleFallback) for f in handler.filters):
        handler.addFilter(ConsoleFallback())


def warnings_reach_a_console(logger: logging.Logger) -> bool:
    """Whether a warning of ``logger`` is shown (a console handler, a :class:`ConsoleFallback`)."""
    if reaches_a_console(logger):
        return True
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if any(isinstance(f, ConsoleFallback) for f in handler.filters):
                return True
        if not current.propagate:
            break
        current = current.parent
    return False
