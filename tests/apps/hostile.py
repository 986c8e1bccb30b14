"""The e2e API (tests/apps/api.py) plus one route the hostile-input test needs.

``/big-stream`` streams far more than the loopback socket buffers hold, so a
client that closes after a few bytes really leaves mid-stream: the server's
next write fails while the response iterable is still open. It has no
instrumentation code, like api.py.
"""

from __future__ import annotations

from collections.abc import Iterator

from api import app
from flask import Response

BIG_STREAM_CHUNKS = 2048
BIG_STREAM_CHUNK_SIZE = 16 * 1024  # bytes: 32 MiB in all


@app.get("/big-stream")
def big_stream() -> Response:
    def chunks() -> Iterator[bytes]:
        chunk = b"z" * BIG_STREAM_CHUNK_SIZE
        for _ in range(BIG_STREAM_CHUNKS):
            yield chunk

    return Response(chunks(), mimetype="application/octet-stream")


__all__ = ["app"]
