"""Short pauses of the export threads, so that requests never wait long for the GIL.

The export threads (the span batch processor's, the metric reader's) run
Python for milliseconds at a time: redacting and encoding 512 spans, or every
series of a metric export. A request thread that gives the GIL up for I/O
(reading the request, writing the response) must get it back to go on, and
CPython hands it over when its holder releases it or, at the latest, after the
switch interval (5 ms by default). A thread that only computes releases it
only then, so a request could wait up to 5 ms at each of its I/O steps while
an export runs.

:func:`let_requests_run` releases the GIL for a moment (``time.sleep(0)``), and
the export path calls it after each span it redacts and each span or metric
point whose attributes it encodes. A request waiting for the GIL then gets it
within one span's work (tens of microseconds). ``benchmarks/bench_export_gil.py``
(a thread doing 0.2 ms of I/O and a little Python in a loop while another
encodes 512-span batches back to back; 3 rounds on 2 busy cores): p99 0.32 ms
with no export, 8.07 ms with the SDK's encoder, 0.61 ms with this one. A pause
every 8 spans gave 4.2 ms in a trial run: the releasing thread often takes the
GIL straight back, so only frequent pauses hand it over. A pause costs a
system call, about a microsecond a span.
"""

from __future__ import annotations

import time


def let_requests_run() -> None:
    """Release the GIL for a moment: a thread waiting for it takes it now."""
    time.sleep(0)
