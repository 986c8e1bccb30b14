"""The console output an app had before OpenTelemetry's logging handler joined the root logger.

That handler exports records; it shows none. But Python counts it as a
handler: its last-resort stderr output stops, and Flask, which adds its own
console handler to ``app.logger`` only when no handler would show the app's
records, adds none, so the traceback of every 500 would vanish from the
server's log.
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
