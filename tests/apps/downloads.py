"""The app the file-download tests run: one big file, sent two ways.

``/file`` uses ``send_file``, which hands the server its own
``wsgi.file_wrapper`` object so that gunicorn and uWSGI can send it with
``sendfile()``; ``/generated`` streams the same bytes from a generator, which
every server has to copy through Python. The file's path comes from
``DOWNLOADS_FILE`` at request time, so the test can create it in its own
temporary directory. Like tests/apps/api.py, it has no instrumentation code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from flask import Flask, Response, send_file

app = Flask(__name__)

FILE_VARIABLE = "DOWNLOADS_FILE"
CHUNK_SIZE = 64 * 1024  # bytes


def _path() -> str:
    return os.environ[FILE_VARIABLE]


@app.after_request
def tell_worker(response: Response) -> Response:
    # The tests read this worker's CPU time from /proc/<pid>/stat.
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/file")
def file() -> Response:
    return send_file(_path(), mimetype="application/octet-stream")


@app.get("/generated")
def generated() -> Response:
    path = _path()

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_SIZE):
                yield chunk

    return Response(chunks(), mimetype="application/octet-stream")
