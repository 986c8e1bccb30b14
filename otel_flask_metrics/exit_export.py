"""A bound on how long the last exports keep a process from exiting.

At exit the SDK's providers flush what they hold, one signal after another,
and each OTLP exporter retries a failed send with backoff until its timeout
(``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s). With the Collector down, a gunicorn
worker took about 28 s to exit after SIGTERM (traces, metrics, logs in turn)
and the whole server 36 s, past gunicorn's 30 s graceful timeout and most
orchestrators' grace periods, where bare Flask took 0.4 s.

So once the interpreter starts exiting, the exporters retry for at most
:data:`EXIT_RETRY_SECONDS` in all: each export still makes its attempt (a
Collector that is up gets everything), and a retry after that budget is
given up as the SDK gives it up at shutdown. The budget is started by an
``atexit`` handler registered after the providers', so it runs before their
shutdown does.

The retry loops wait on a private ``threading.Event`` of each exporter (the
HTTP client's ``_shutdown_event``, the gRPC exporter's
``_shutdown_in_progress``): it is replaced by one that also counts as set
once the budget is spent. No thread is started at exit (Python 3.12 refuses
that). An exporter without such an event keeps the SDK's behaviour.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any

#: The retries of all exports at exit stop this long after exit begins.
EXIT_RETRY_SECONDS = 2.0

_deadline: float | None = None
_registered = False


class ExitBoundEvent(threading.Event):
    """An event that is also set once the exit budget is spent."""

    def is_set(self) -> bool:
        return super().is_set() or (_deadline is not None and time.monotonic() >= _deadline)

    isSet = is_set  # threading.Event's old alias

    def wait(self, timeout: float | None = None) -> bool:
        if _deadline is not None:
            remaining = max(0.0, _deadline - time.monotonic())
            timeout = remaining if timeout is None else min(timeout, remaining)
        return super().wait(timeout) or self.is_set()


_HOLDERS = (("_client", "_shutdown_event"), ("", "_shutdown_in_progress"))


def watch(exporter: Any) -> bool:
    """Bound ``exporter``'s retries once the process exits; whether it could be."""
    for path, name in _HOLDERS:
        holder = getattr(exporter, path, None) if path else exporter
        event = getattr(holder, name, None)
        if isinstance(event, ExitBoundEvent):
            return True
        if type(event) is threading.Event:
            bounded = ExitBoundEvent()
            if event.is_set():
                bounded.set()
            setattr(holder, name, bounded)
            return True
    return False


def register() -> None:
    """Start the budget at exit; call after the providers exist (atexit runs last first)."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(start_budget)


def start_budget(seconds: float = EXIT_RETRY_SECONDS) -> None:
    """From now, every watched exporter retries for at most ``seconds`` in all."""
    global _deadline
    _deadline = time.monotonic() + seconds


def _reset_for_tests() -> None:
    global _deadline
    _deadline = None
