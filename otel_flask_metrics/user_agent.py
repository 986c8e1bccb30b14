"""Browser and OS names from a User-Agent header (Flask-Statistics' browser/platform).

Parsing is done by ua-parser (the maintained uap-core rules) with its pure
Python resolver: the Rust accelerator parses faster but adds about 50 MiB per
process, and real traffic repeats a few hundred user agents, so results are
kept in a small bounded cache in front of the parser instead. A hit is a dict
lookup; the cache is emptied when full, so a client cycling user agents cannot
grow memory. Only recorded (sampled) spans ask for a parse.
"""

from __future__ import annotations

import threading

from ua_parser import BasicResolver, Parser, load_builtins

_CACHE_SIZE = 2048  # entries
_cache: dict[str, tuple[str | None, str | None]] = {}
_lock = threading.Lock()
_parser: Parser | None = None


def _get_parser() -> Parser:
    global _parser
    if _parser is None:
        with _lock:
            if _parser is None:
                _parser = Parser(BasicResolver(load_builtins()))
    return _parser


def parse_user_agent(header: str) -> tuple[str | None, str | None]:
    """Return ``(browser family, OS family)``; ``None`` for what is unknown."""
    cached = _cache.get(header)
    if cached is not None:
        return cached
    result = _get_parser().parse(header[:512])
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
