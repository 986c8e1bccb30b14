"""Each process's CPU time, memory (RSS) and uptime, as the process semantic conventions name them.

Every gunicorn or uWSGI worker exports its own figures under its own
``service.instance.id``, so a leaking or recycled worker shows next to its
request metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation, get_meter
from opentelemetry.semconv._incubating.attributes.cpu_attributes import CPU_MODE, CpuModeValues
from opentelemetry.semconv._incubating.metrics import process_metrics

from .version import __version__


class ProcessMetrics:
    """CPU time, memory (RSS) and uptime of the process, per the process semconv.

    The callbacks run when a reader collects (in the export thread, every
    ``OTEL_METRIC_EXPORT_INTERVAL``), never on a request. They read the
    process by its current pid, so a worker forked from a configured parent
    (``opentelemetry-instrument gunicorn`` configures the arbiter) reports its
    own figures under its own ``service.instance.id``, which the SDK renews
    after the fork.

    Not ``opentelemetry-instrumentation-system-metrics``: one more contrib
    package whose upper bound must move with the others (see pyproject.toml);
    it reads the pid captured when it is instrumented, so forked workers would all
    report the arbiter; and it labels CPU time ``type`` instead of
    ``cpu.mode``.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._process: Any = None  # psutil.Process (psutil ships no type hints)

    def register(self, meter_provider: metrics.MeterProvider) -> None:
        """Create the three observable instruments on ``meter_provider``."""
        meter = get_meter(__name__, __version__, meter_provider)
        meter.create_observable_counter(
            process_metrics.PROCESS_CPU_TIME,
            callbacks=[self._cpu_time],
            unit="s",
            description="Total CPU seconds broken down by different CPU modes.",
        )
        meter.create_observable_up_down_counter(
            process_metrics.PROCESS_MEMORY_USAGE,
            callbacks=[self._memory_usage],
            unit="By",
            description="The amount of physical memory in use.",
        )
        process_metrics.create_process_uptime(meter, callbacks=[self._uptime])

    def _current(self) -> Any:
        pid = os.getpid()
        if pid != self._pid:  # first call, or the first in a forked child
            # (The SDK's resources module has already imported it: ~0.9 MiB.)
            import psutil  # type: ignore[import-untyped]  # no type hints

            self._process = psutil.Process(pid)
            self._pid = pid
        return self._process

    def _cpu_time(self, options: CallbackOptions) -> Iterator[Observation]:
        times = self._current().cpu_times()
        yield Observation(times.user, {CPU_MODE: CpuModeValues.USER.value})
        yield Observation(times.system, {CPU_MODE: CpuModeValues.SYSTEM.value})

    def _memory_usage(self, options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self._current().memory_info().rss)

    def _uptime(self, options: CallbackOptions) -> Iterator[Observation]:
        # create_time() is read once by psutil.Process: the fork time for a worker.
        yield Observation(max(0.0, time.time() - self._current().create_time()))
