"""The console output an app had before OpenTelemetry's logging handler joined the root logger.

That handler exports records; it shows none. But Python counts it as a
handler: its last-resort stderr output stops, and Flask, which adds its own
console handler to ``app.logger`` only when no handler would show the app's
records, adds none, so the traceback of every 500 would vanish from the
server's log.
"""

from __future__ import annotations

import logging

from flask import Flask


def reaches_a_console(logger: logging.Logger) -> bool:
    """Whether a record of ``logger`` reaches a handler other than OpenTelemetry's.

    With no handler at all, Python's last-resort handler prints warnings to stderr.
    """
    current: logging.Logger | None = logger
    found = False
    while current is not None:
        for handler in current.handlers:
            if not type(handler).__module__.startswith("opentelemetry."):
                return True
            found = True
        if not current.propagate:
            break
        current = current.parent
    return not found


def keep_flask_console(app: Flask) -> None:
    """Give ``app``'s logger Flask's console handler when only OpenTelemetry's would see it.

    The logger is looked up by name, not through ``app.logger``, so Flask
    still creates that property itself, later, with the app's debug level.
    """
    from flask.logging import default_handler

    logger = logging.getLogger(app.name)
    if default_handler not in logger.handlers and not reaches_a_console(logger):
        logger.addHandler(default_handler)
