"""Short pauses of the export threads, so that requests never wait long for the GIL.

The export threads (the span batch processor's, the metric reader's) run
Python for milliseconds at a time: redacting and encoding 512 spans, or every
series of a metric export. A request thread that gives the GIL up for I/O
(reading the request, writing the response) must get it back to go on, and
CPython hands it over when its holder releases it or, at the latest, after the
switch interval (5 ms by default). A thread that only computes releases it
only then, so a request could wait up to 5 ms at each of its I/O steps while
an export runs.

:func:`let_requests_run` is called by the export path after each span it
redacts and each span or metric point whose attributes it encodes; once
:data:`PAUSE_EVERY` (0.5 ms) of work has passed since the last pause, it
sleeps :data:`PAUSE_FOR` (50 µs), long enough for a waiting thread to wake
and take the GIL.

Measured over HTTP (``benchmarks/overhead.py --mode http``, gunicorn, 1 sync
worker, 3 rounds, separate runs on 2 cores; full mode, every request traced):

- no pause: p99 15.8 ms, 475 µs of worker CPU a request;
- ``time.sleep(0)`` after every span: p99 8.1 ms, but 800 µs (5 rounds, part
  of them beside another job; bare Flask's 328-342 µs in every run). Most
  likely each pause handed the GIL over and back, two thread switches a
  span; valgrind's instruction counts leave the kernel out and did not show it;
- this: p99 9.3 ms, 528 µs. Production preset: 7.4, 3.6 and 4.5 ms.

In isolation (``benchmarks/bench_export_gil.py``: a thread doing 0.2 ms of
I/O and a little Python in a loop while another encodes 512-span batches
back to back, 3 rounds) the loop's p99 is 0.3 ms with no export, 6.5-8.1 ms
with the SDK's encoder, 0.6 ms with a pause after every span and 5.2 ms with
this one: there the request thread wants the GIL back far more often than a
request served over HTTP does.
"""

from __future__ import annotations

import time

#: Work the export thread does between pauses (seconds of wall clock).
PAUSE_EVERY = 0.0005
#: The pause itself: long enough for a waiting thread to wake and take the GIL.
PAUSE_FOR = 0.00005

_last_pause = 0.0


def let_requests_run() -> None:
    """Every :data:`PAUSE_EVERY` of export work, release the GIL for a moment."""
    global _last_pause
    now = time.perf_counter()
    if now - _last_pause >= PAUSE_EVERY:
        time.sleep(PAUSE_FOR)
        _last_pause = time.perf_counter()
