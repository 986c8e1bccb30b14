"""The gunicorn entry for the http mode: ``OFM_BENCH_VARIANT=ofm-full gunicorn wsgi:app``.

Imported in the worker (no ``--preload``), so each worker builds its own
providers after the fork, as ``opentelemetry-instrument gunicorn`` does.
"""

from __future__ import annotations

import app as bench_app

app = bench_app.build_app(bench_app.variant_from_env())
