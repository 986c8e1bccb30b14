"""Metric export that survives a fork taken in the middle of an export or a collection.

Under ``opentelemetry-instrument gunicorn`` (and uWSGI) the master process is
configured too, and its reader thread exports the master's own metrics every
interval. A worker forked while that thread holds a lock inherits the lock
held, with no thread left to release it:

- the reader's export lock, held for the whole HTTP export (and, while the
  Collector is down, for the whole retry period): the worker serves requests
  but never exports a metric, and at exit waits 30 s for its export thread;
- the measurement consumer's lock and the storages' locks, held while a
  collection runs the observable callbacks: the same, and a worker whose
  storage lock is held would block its first request that records.

The SDK renews the span and log batch processors' locks after a fork
(``BatchProcessor._at_fork_reinit``) but not the metric reader's
(open-telemetry/opentelemetry-python#4345). This module renews them in the
child, before the reader's thread restarts. The child also starts from empty
storages: what the master had aggregated (its own process and exporter
metrics) belongs to the master's ``service.instance.id``, not to the worker's.

What is renewed are SDK internals, so :func:`sdk_supported` tells whether the
installed SDK still has them; the tests fail when an SDK upgrade removes one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics._internal.metric_reader_storage import MetricReaderStorage
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader


class ForkSafeMetricReader(PeriodicExportingMetricReader):
    """A periodic reader whose forked copy starts with free locks.

    ``renew_consumer`` is called in the child before the export thread
    restarts: :func:`renew_consumer_after_fork` for the provider the reader
    belongs to, set by :func:`fork_safe_provider`.
    """

    def __init__(self, exporter: MetricExporter) -> None:
        self.renew_consumer: Callable[[], None] | None = None
        super().__init__(exporter)

    def _at_fork_reinit(self) -> None:
        # Runs in the child only (the SDK registers it with
        # os.register_at_fork(after_in_child=...)), with one thread alive.
        self._export_lock = threading.Lock()
        if self.renew_consumer is not None:
            self.renew_consumer()
        super()._at_fork_reinit()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped


def fork_safe_provider(provider: MeterProvider) -> MeterProvider:
    """Make every :class:`ForkSafeMetricReader` of ``provider`` renew its consumer after a fork.

    Several readers share one consumer; renewing it once per reader is
    harmless, as no thread has touched the new one yet.
    """
    if not sdk_supported(provider):
        return provider
    for reader in _readers(provider):
        if isinstance(reader, ForkSafeMetricReader):
            reader.renew_consumer = lambda: renew_consumer_after_fork(provider)
    return provider


def renew_consumer_after_fork(provider: MeterProvider) -> None:
    """Give ``provider``'s measurement consumer a free lock and empty storages.

    Instruments hold the consumer, not the storages, and the storages create
    their per-instrument state on the first measurement, so the child records
    into the new ones from its first request on. Observable instruments stay
    registered: their callbacks run in the child at its first collection.
    """
    consumer: Any = provider._measurement_consumer
    consumer._lock = threading.Lock()
    consumer._reader_storages = {
        reader: MetricReaderStorage(
            consumer._sdk_config,
            reader._instrument_class_temporality,
            reader._instrument_class_aggregation,
        )
        for reader in consumer._reader_storages
    }


def sdk_supported(provider: MeterProvider) -> bool:
    """Whether the installed SDK has the internals this module renews."""
    consumer = getattr(provider, "_measurement_consumer", None)
    return (
        all(hasattr(consumer, name) for name in ("_lock", "_reader_storages", "_sdk_config"))
        and hasattr(PeriodicExportingMetricReader, "_at_fork_reinit")
        and all(hasattr(reader, "_export_lock") for reader in _readers(provider))
    )


def _readers(provider: MeterProvider) -> list[Any]:
    consumer: Any = getattr(provider, "_measurement_consumer", None)
    return list(getattr(consumer, "_reader_storages", {}))
