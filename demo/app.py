"""The demo API of the otel-flask-metrics stack: a small catalogue of items.

It has no instrumentation code. Run it as the stack does::

    OTEL_SERVICE_NAME=demo-api OTEL_FLASK_METRICS_CONSUMER_HEADER=X-API-Key \\
        opentelemetry-instrument gunicorn --chdir demo app:app

and ``demo/traffic.py`` gives it something to measure. Consumers are found two
ways, as a real API would use the distro:

* ``OTEL_FLASK_METRICS_CONSUMER_HEADER=X-API-Key``: any request with that
  header is attributed to a consumer derived from the key (hashed by the
  distro, as the key is a secret);
* :func:`identify_consumer` below maps the keys it knows to a readable id, name
  and group with :func:`otel_flask_metrics.set_consumer`, which wins over the
  header. Unknown keys are refused with 401, requests without a key are
  anonymous.

The module is importable both as ``demo.app`` and as ``app`` (gunicorn
``--chdir demo``), so it uses no package-relative imports. Items live in the
memory of each worker process: a created item is only seen by the worker that
created it, which is fine for a demo.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from otel_flask_metrics import set_consumer

API_KEY_HEADER = "X-API-Key"

EXPORT_CHUNKS = 5  # chunks of the streamed export
EXPORT_CHUNK_DELAY = 0.02  # seconds between two chunks of the export
SLOW_MIN, SLOW_MAX = 0.05, 0.4  # seconds, the latency range of /api/slow
FLAKY_FAILURE_RATE = 0.1  # share of /api/flaky requests that fail with 500
NAME_MAX_LENGTH = 100  # characters


class DemoConsumer(NamedTuple):
    id: str
    name: str
    group: str


# The demo's API keys. A real API would look them up in its user store; the
# ids, names and groups are what the dashboards show.
API_KEYS: dict[str, DemoConsumer] = {
    "demo-key-acme": DemoConsumer("acme", "Acme Corp", "enterprise"),
    "demo-key-globex": DemoConsumer("globex", "Globex", "pro"),
    "demo-key-initech": DemoConsumer("initech", "Initech", "free"),
}

SEED_ITEMS: list[dict[str, Any]] = [
    {"id": 1, "name": "Anvil", "price": 49.9, "tags": ["hardware"]},
    {"id": 2, "name": "Rocket skates", "price": 199.0, "tags": ["sport", "speed"]},
    {"id": 3, "name": "Giant magnet", "price": 75.5, "tags": ["hardware"]},
    {"id": 4, "name": "Bird seed", "price": 4.25, "tags": ["food"]},
    {"id": 5, "name": "Portable hole", "price": 120.0, "tags": ["magic"]},
]

app = Flask(__name__)
# Its info lines reach the log store: Python's root logger stops below warning.
app.logger.setLevel(logging.INFO)

_items: dict[int, dict[str, Any]] = {item["id"]: dict(item) for item in SEED_ITEMS}
_items_lock = threading.Lock()


@app.before_request
def identify_consumer() -> None:
    """Attribute the request to the consumer of its API key (Apitally-style)."""
    key = request.headers.get(API_KEY_HEADER)
    if key is None or request.path == "/health":
        return
    consumer = API_KEYS.get(key)
    if consumer is None:
        abort(401, description="unknown API key")
    set_consumer(consumer.id, name=consumer.name, group=consumer.group)


@app.errorhandler(HTTPException)
def json_error(error: HTTPException) -> tuple[Response, int]:
    """Errors as JSON, as API clients expect; unhandled exceptions arrive as 500."""
    code = error.code or 500
    return jsonify(error=error.name, message=error.description), code


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/api/items")
def list_items() -> dict[str, Any]:
    with _items_lock:
        items = [dict(item) for item in _items.values()]
    tag = request.args.get("tag")
    if tag:
        items = [item for item in items if tag in item["tags"]]
    return {"items": items, "count": len(items)}


@app.get("/api/items/<int:item_id>")
def get_item(item_id: int) -> dict[str, Any]:
    with _items_lock:
        item = _items.get(item_id)
    if item is None:
        abort(404, description=f"no item {item_id}")
    return dict(item)


def _validated_item(body: Any) -> dict[str, Any]:
    """The fields of a new item, or a 400 saying what is wrong."""
    if not isinstance(body, dict):
        abort(400, description="the body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX_LENGTH:
        abort(400, description=f"name: a non-empty string of at most {NAME_MAX_LENGTH} characters")
    price = body.get("price")
    if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
        abort(400, description="price: a number >= 0")
    tags = body.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        abort(400, description="tags: a list of strings")
    return {"name": name.strip(), "price": float(price), "tags": tags}


@app.post("/api/items")
def create_item() -> tuple[dict[str, Any], int, dict[str, str]]:
    fields = _validated_item(request.get_json(silent=True))
    with _items_lock:
        item_id = max(_items, default=0) + 1
        item = {"id": item_id, **fields}
        _items[item_id] = item
    # One line per new item: the request log (VictoriaLogs in the stack) shows
    # it with the request's trace id, route and consumer.
    app.logger.info("created item %d (%s)", item_id, item["name"])
    return dict(item), 201, {"Location": f"/api/items/{item_id}"}


@app.get("/api/reports/export")
def export_report() -> Response:
    """A CSV export streamed in several chunks, as large exports are."""
    with _items_lock:
        rows = [dict(item) for item in _items.values()]

    def chunks() -> Iterator[str]:
        yield "id,name,price\n"
        for index in range(EXPORT_CHUNKS):
            time.sleep(EXPORT_CHUNK_DELAY)
            yield (
                "".join(f"{row['id']},{row['name']},{row['price']:.2f}\n" for row in rows)
                + f"# part {index + 1}/{EXPORT_CHUNKS}\n"
            )

    return Response(
        chunks(),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=items.csv"},
    )


@app.get("/api/slow")
def slow() -> dict[str, float]:
    delay = random.uniform(SLOW_MIN, SLOW_MAX)
    time.sleep(delay)
    return {"slept_ms": round(delay * 1000, 1)}


@app.get("/api/flaky")
def flaky() -> dict[str, str]:
    if random.random() < FLAKY_FAILURE_RATE:
        # Unhandled on purpose: the span records the exception, the response is a 500.
        raise RuntimeError("the flaky dependency failed")
    return {"status": "ok"}
