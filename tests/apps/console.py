"""An app that writes to the console the ways a Flask app does without any logging setup.

``tests/e2e/test_flask_run.py`` serves it with ``flask run``, bare and under
``opentelemetry-instrument``, and compares what each prints.
"""

from __future__ import annotations

import logging

from flask import Flask

app = Flask(__name__)


@app.get("/ready")
def ready() -> str:
    return "ok"


@app.get("/items/<int:item>")
def item(item: int) -> dict[str, int]:
    logging.getLogger("inventory").warning("item %d is low on stock", item)
    logging.getLogger("inventory").info("an info line nothing shows by default")
    return {"item": item}


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("boom for the console")
