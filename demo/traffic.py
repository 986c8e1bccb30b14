"""Sends a realistic mix of requests to the demo API (standard library only).

    python demo/traffic.py --target http://127.0.0.1:8000 [--rate 5]
                           [--duration SECONDS | --requests N]

Requests go to the given target only: redirects are not followed and proxy
variables are ignored. Three known consumers (their API keys are the demo's),
anonymous callers and a caller with a revoked key share a weighted mix of the
demo's routes, including invalid bodies (400) and unknown ids (404). Every
request has a bounded timeout; the run stops after ``--requests`` requests, after
``--duration`` seconds, or on SIGINT/SIGTERM, and prints a one-line summary:
the requests per status class, then per caller (the key's name,
``anonymous`` for no key) those the demo counts, which the dashboards'
per-consumer figures can be checked against: its /health calls are apart,
as the demo keeps /health out of its metrics.

Exit status: 0 when every request got an HTTP response (whatever its status),
1 when some failed to connect or timed out, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

API_KEY_HEADER = "X-API-Key"
DEFAULT_TIMEOUT = 5.0  # seconds, for one request
USER_AGENT = "otel-flask-metrics-demo-traffic/1.0"

# (API key or None for anonymous, weight)
CALLERS: list[tuple[str | None, int]] = [
    ("demo-key-acme", 40),
    ("demo-key-globex", 25),
    ("demo-key-initech", 15),
    (None, 17),
    ("demo-key-revoked", 3),  # refused with 401
]

KNOWN_ITEM_IDS = range(1, 6)
HEALTH = "/health"  # excluded from the demo's metrics (OTEL_PYTHON_FLASK_EXCLUDED_URLS)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None


def _json_call(payload: object) -> Call:
    return Call("POST", "/api/items", json.dumps(payload).encode(), "application/json")


def _new_item(rng: random.Random) -> Call:
    name = rng.choice(["Anvil", "Jet pack", "Tornado seeds", "Earthquake pills"])
    tags = rng.sample(["hardware", "sale", "new", "outdoor"], k=rng.randint(0, 2))
    price = rng.randint(1, 500)
    return _json_call({"name": f"{name} {rng.randint(1, 999)}", "price": price, "tags": tags})


def _invalid_item(rng: random.Random) -> Call:
    return rng.choice(
        [
            _json_call({"price": 10}),  # no name
            _json_call({"name": "Broken", "price": -1}),
            _json_call(["not", "an", "object"]),
            Call("POST", "/api/items", b"name=form-encoded", "application/x-www-form-urlencoded"),
        ]
    )


# (call factory, weight)
ROUTES: list[tuple[Callable[[random.Random], Call], int]] = [
    (lambda rng: Call("GET", "/api/items"), 25),
    (lambda rng: Call("GET", "/api/items?tag=hardware"), 5),
    (lambda rng: Call("GET", f"/api/items/{rng.choice(KNOWN_ITEM_IDS)}"), 20),
    (lambda rng: Call("GET", f"/api/items/{rng.randint(1000, 9999)}"), 5),  # 404
    (_new_item, 8),
    (_invalid_item, 4),  # 400
    (lambda rng: Call("GET", "/api/reports/export"), 3),
    (lambda rng: Call("GET", "/api/slow"), 12),
    (lambda rng: Call("GET", "/api/flaky"), 15),
    (lambda rng: Call("GET", HEALTH), 3),
]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Keeps every request on the target: a redirect is reported, never followed."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _opener() -> urllib.request.OpenerDirector:
    # An empty ProxyHandler ignores http_proxy and friends.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _send(
    opener: urllib.request.OpenerDirector, target: str, call: Call, key: str | None, timeout: float
) -> int | None:
    """The response status, or None when no HTTP response came back."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if key is not None:
        headers[API_KEY_HEADER] = key
    if call.content_type:
        headers["Content-Type"] = call.content_type
    request = urllib.request.Request(
        target + call.path, data=call.body, headers=headers, method=call.method
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        error.close()
        return error.code
    except (OSError, urllib.error.URLError):  # refused, reset, timed out
        return None


def _target(value: str) -> str:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {value!r}")
    if parsed.query or parsed.fragment:
        raise argparse.ArgumentTypeError(f"the target takes no query or fragment: {value!r}")
    return value.rstrip("/")


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(value: str) -> float | int:
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {value}")
        return number

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        type=_target,
        default="http://127.0.0.1:8000",
        help="base URL of the demo API (default: %(default)s)",
    )
    parser.add_argument(
        "--rate",
        type=_positive(float),
        default=5.0,
        help="requests per second at most (default: %(default)s)",
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=_positive(float), help="stop after SECONDS")
    stop.add_argument("--requests", type=_positive(int), help="stop after N requests")
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        default=DEFAULT_TIMEOUT,
        help="seconds for one request (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, help="seed of the request mix, for repeatable runs")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stop: threading.Event) -> Counter[str]:
    """Sends requests until a limit is reached or ``stop`` is set; counts outcomes."""
    rng = random.Random(args.seed)
    opener = _opener()
    factories, route_weights = zip(*ROUTES, strict=True)
    keys, caller_weights = zip(*CALLERS, strict=True)
    interval = 1.0 / args.rate
    deadline = time.monotonic() + args.duration if args.duration else None
    counts: Counter[str] = Counter()
    next_at = time.monotonic()
    while not stop.is_set():
        if args.requests is not None and counts["requests"] >= args.requests:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if next_at > now:
            pause = next_at - now if deadline is None else min(next_at, deadline) - now
            stop.wait(pause)  # returns at once on SIGINT/SIGTERM
            continue
        call = rng.choices(factories, route_weights)[0](rng)
        key = rng.choices(keys, caller_weights)[0]
        status = _send(opener, args.target, call, key, args.timeout)
        counts["requests"] += 1
        counts[f"{status // 100}xx" if status is not None else "errors"] += 1
        counts["health" if call.path == HEALTH else f"caller:{caller_name(key)}"] += 1
        # Paced from the schedule, not from the response: a slow response
        # does not lower the rate unless it is longer than the interval.
        next_at = max(next_at + interval, time.monotonic() - interval)
    return counts


def caller_name(key: str | None) -> str:
    """How the summary names a caller: never the key itself, which is a credential."""
    return "anonymous" if key is None else key.removeprefix("demo-key-")


def summary(counts: Counter[str], elapsed: float, target: str) -> str:
    total = counts["requests"]
    rate = total / elapsed if elapsed > 0 else 0.0
    classes = " ".join(f"{name}={counts[name]}" for name in ("2xx", "3xx", "4xx", "5xx", "errors"))
    callers = " ".join(
        f"{caller_name(key)}={counts[f'caller:{caller_name(key)}']}" for key, _ in CALLERS
    )
    return (
        f"traffic: {total} requests in {elapsed:.1f}s ({rate:.1f}/s) to {target}: {classes}"
        f"; by caller: {callers} health={counts['health']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    counts = run(args, stop)
    print(summary(counts, time.monotonic() - started, args.target), flush=True)
    return 1 if counts["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
