"""Browser and OS names from a User-Agent header (Flask-Statistics' browser/platform).

Parsing is done by ua-parser (the maintained uap-core rules). Real traffic
repeats a few hundred user agents, so results are kept in a small bounded
cache in front of it: a hit is a dict lookup, and the cache is simply emptied
when full so a client cycling user agents cannot grow memory.
"""

from __future__ import annotations

import threading

import ua_parser

_CACHE_SIZE = 2048  # entries
_cache: dict[str, tuple[str | None, str | None]] = {}
_lock = threading.Lock()


def parse_user_agent(header: str) -> tuple[str | None, str | None]:
    """Return ``(browser family, OS family)``; ``None`` for what is unknown."""
    cached = _cache.get(header)
    if cached is not None:
        return cached
    result = ua_parser.parse(header[:512])
    browser = result.user_agent.family if result.user_agent else None
    os_name = result.os.family if result.os else None
    names = (
        None if browser in (None, "Other") else browser,
        None if os_name in (None, "Other") else os_name,
    )
    with _lock:
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[header] = names
    return names


def warm_up() -> None:
    """Load the parser's rules now (about 0.3 s) rather than on a first request."""
    parse_user_agent("Mozilla/5.0 (X11; Linux x86_64) otel-flask-metrics warm-up")
