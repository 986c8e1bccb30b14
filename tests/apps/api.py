"""The app the end-to-end tests run under ``opentelemetry-instrument gunicorn``.

It has no instrumentation code: everything comes from the distro. Consumers
are identified by the X-API-Key header (OTEL_FLASK_METRICS_CONSUMER_HEADER), by
``g.consumer_identifier`` (X-Customer), and by ``set_consumer`` (X-Tenant).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, abort, g, request

from otel_flask_metrics import set_consumer

app = Flask(__name__)

STREAM_CHUNKS = 5
STREAM_CHUNK_SIZE = 1000  # bytes


@app.before_request
def identify() -> None:
    customer = request.headers.get("X-Customer")
    if customer:
        g.consumer_identifier = customer
    tenant = request.headers.get("X-Tenant")
    if tenant:
        set_consumer(tenant, name=f"Tenant {tenant}", group="enterprise")


@app.after_request
def tell_worker(response: Response) -> Response:
    # Lets the tests see which pre-fork worker served a request.
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/<int:item_id>")
def get_item(item_id: int) -> dict[str, object]:
    if item_id > 1000:
        abort(404)
    return {"id": item_id, "name": f"item-{item_id}"}


@app.post("/items")
def create_item() -> tuple[dict[str, object], int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400)
    return {"created": body}, 201


@app.post("/upload")
def upload() -> dict[str, int]:
    return {"received": len(request.get_data())}


@app.get("/stream")
def stream() -> Response:
    def chunks() -> Iterator[bytes]:
        for _ in range(STREAM_CHUNKS):
            yield b"x" * STREAM_CHUNK_SIZE

    return Response(chunks(), mimetype="application/octet-stream")


@app.get("/slow")
def slow() -> dict[str, str]:
    # Long enough that concurrent requests need both pre-fork workers.
    time.sleep(0.3)
    return {"status": "done"}


@app.get("/fail")
def fail() -> str:
    raise RuntimeError("the test asked for a failure")


@app.get("/charge")
def charge() -> dict[str, str]:
    # A log line with secrets in it: what leaves the process must be redacted.
    app.logger.warning(
        "charging card %s for %s", request.args.get("card", ""), request.headers.get("Authorization")
    )
    return {"status": "charged"}
