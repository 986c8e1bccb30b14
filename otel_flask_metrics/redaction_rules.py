"""The rules of redaction: denied keys, value patterns, the marker, pseudonyms.

The data half of :mod:`otel_flask_metrics.redaction` (matching is described
there), with the small helpers the redactor shares: a key's words, the
Luhn check, logging an internal failure once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# One logger name for all of redaction, as before it was split in modules.
_logger = logging.getLogger("otel_flask_metrics.redaction")

DEFAULT_MARKER = "[REDACTED]"

#: Keys whose values are always masked (see the module docstring for matching).
DEFAULT_DENIED_KEYS: tuple[str, ...] = (
    # HTTP credentials and sessions carried in headers.
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    # API keys, however the API spells the header or parameter.
    "x-api-key",
    "api-key",
    "apikey",
    "api_key",
    "x-auth-token",
    # Passwords and shared secrets.
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "secret_key",
    "secret_access_key",
    "private_key",
    # Bearer, OAuth and OpenID tokens; session identifiers.
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "session",
    "sessionid",
    # Payment cards (PCI DSS) and national identity numbers.
    "card",
    "card_number",
    "cardnumber",
    "cc",
    "cvv",
    "cvc",
    "ssn",
)

# User patterns given as strings are compiled case-insensitively.
_FLAGS = re.IGNORECASE


def _ci(word: str) -> str:
    """``word`` as a case-insensitive regex ("Key" -> "[kK][eE][yY]").

    The default patterns spell case-insensitivity out instead of using
    ``re.IGNORECASE``: ``re`` then keeps its fast first-character scan, which
    made the ``key=value`` pattern about 2.5 times faster.
    """
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha() else c for c in word)


#: Value patterns, tried in this order; an earlier match wins over an
#: overlapping later one. Quantifiers are bounded so that long bodies without
#: secrets are scanned in linear time. Keywords (``Bearer``, ``password=``,
#: URL schemes, email addresses) match in any case; token formats whose case is
#: part of the format (``AKIA``, ``eyJ``, ``ghp_``, ``sk_live_``) match as issued,
#: which avoids masking ordinary words that happen to look like them.
DEFAULT_VALUE_PATTERNS: tuple[re.Pattern[str], ...] = (
    # Password in a URL's userinfo: keep the scheme and user, mask the password.
    re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^:@/\s]{0,256}:(?P<secret>[^\s/?#]{1,256})@"),
    # JSON Web Tokens (header and payload are base64url JSON, so start with "eyJ").
    # The lookbehind (not \b) allows one start per base64url run: linear time.
    re.compile(
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
        r"(?:\.[A-Za-z0-9_-]*){0,2}"
    ),
    # Authorization header values: keep the scheme so the trace still says which.
    re.compile(rf"\b(?:{_ci('bearer')}|{_ci('basic')})\s+(?P<secret>[A-Za-z0-9._~+/-]{{8,}}=*)"),
    # AWS access key ids.
    re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    # GitHub tokens: classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained.
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
    # Slack tokens.
    re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    # Stripe secret and restricted keys, webhook signing secrets.
    re.compile(r"\b(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{10,})"),
    # Google API keys.
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    # key=value / key: value pairs in query strings, logs and messages (no
    # leading \b, so x_api_key=, client_secret= and refresh_token= match too).
    re.compile(
        rf"(?:{_ci('api')}[_-]?{_ci('key')}|{_ci('token')}|{_ci('secret')}|{_ci('passw')}"
        rf"(?:{_ci('or')})?{_ci('d')}|{_ci('pwd')}|{_ci('session')}[_-]?{_ci('id')})"
        r"[\"']?\s{0,3}[=:]\s{0,3}[\"']?(?P<secret>[^&\s#\"',;]{1,1024})"
    ),
    # Email addresses (one start per run of local-part characters: linear time).
    re.compile(
        r"(?<![A-Za-z0-9_.%+-])[A-Za-z0-9_.%+-]{1,64}"
        r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"
    ),
    # Payment card numbers: 13-19 digits, optional single spaces or dashes,
    # issuer prefix 2-6, Luhn-checked (see the ``luhn`` group).
    re.compile(r"(?<![\d])(?P<luhn>[2-6](?:[ -]?\d){12,18})(?!\d)"),
)

# For each default pattern, a literal-ish regex that must match the
# lower-cased text for the pattern to have any chance. One search of their
# alternation, without IGNORECASE (several times faster in ``re``), rules out
# most attribute values before any pattern runs.
_DEFAULT_TRIGGERS: dict[re.Pattern[str], str] = dict(
    zip(
        DEFAULT_VALUE_PATTERNS,
        (
            "@",  # userinfo password
            "eyj",  # JWT
            "bearer|basic",
            "akia|asia|abia|acca",
            "ghp_|gho_|ghu_|ghs_|ghr_|github_pat_",
            "xoxb-|xoxa-|xoxp-|xoxr-|xoxs-",
            "sk_live_|sk_test_|rk_live_|rk_test_|whsec_",
            "aiza",
            "key|token|secret|passw|pwd|session",  # key=value
            "@",  # email
            r"[2-6](?:[ -]?\d){12}",  # payment card
        ),
        strict=True,
    )
)

# Depth beyond which nested JSON or attribute values are masked whole rather
# than walked, so hostile input cannot exhaust the stack.
_MAX_DEPTH = 64
# Entries: the per-Redactor cache of key decisions stops growing here (JSON
# bodies can carry arbitrary keys).
_KEY_CACHE_SIZE = 4096
# Entries and characters: the cache of attribute strings known to be clean.
_CLEAN_CACHE_SIZE = 4096
_CLEAN_MAX_CHARS = 512

_LITERALS = re.compile(r"[a-z0-9_@-]+(?:\|[a-z0-9_@-]+)*")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[a-z]+")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
# A "key": value pair in text that is not valid JSON (typically a body
# truncated by a capture limit); the value may be an unterminated string.
_JSON_PAIR = re.compile(
    r"\"((?:[^\"\\]|\\.){1,256})\"\s*:\s*(\"(?:[^\"\\]|\\.)*(?:\"|$)|-?[A-Za-z0-9.+-]+)"
)
# Bits of Redactor._key_kind.
_DENIED = 1
_QUERY = 2  # the value is a query string (url.query)
_URL = 4  # the value is a URL or request target (url.full, http.target, referer)
_PASS_TYPES = frozenset({int, float, bool, bytes, type(None)})
_URL_KEY_WORDS = frozenset({"url", "target", "full", "referer", "referrer", "location", "uri"})


def _normalise(key: str) -> str:
    return _NON_ALNUM.sub("", key.lower())


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(key)]


def _short_strings(values: tuple[Any, ...]) -> bool:
    """Whether a tuple attribute (e.g. a header's values) may be cached as clean."""
    return len(values) <= 8 and all(
        isinstance(v, str) and len(v) <= _CLEAN_MAX_CHARS for v in values
    )


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_logged: set[str] = set()


def _log_once(site: str, level: int, message: str) -> None:
    """Log an internal failure once per site: redaction runs per span, and a
    repeating error must not flood the logs (or itself become telemetry)."""
    if site in _logged:
        return
    _logged.add(site)
    _logger.log(level, message, exc_info=True)


def pseudonymize(value: str, key: bytes) -> str:
    """Return a short, stable, keyed pseudonym of ``value``.

    HMAC-SHA256 rather than a bare hash because the inputs (emails, card
    numbers, API keys) have little entropy and a plain hash could be reversed
    by enumeration; without the key the pseudonym reveals nothing, with it the
    same input always maps to the same pseudonym, so values can still be
    correlated across spans.

    :param value: the text to pseudonymise (encoded as UTF-8).
    :param key: the secret HMAC key; keep it out of telemetry and source.
    :returns: the first 16 hex characters (64 bits) of the HMAC.
    """
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class RedactionRules:
    """What to redact and how to mark it.

    :param denied_keys: keys whose values are always masked, at any depth and
        in every kind of data (see the module docstring for how keys match).
    :param allowed_keys: if set, in captured structured data (headers, query
        parameters, forms, JSON) only these keys' values are kept and all
        others are masked; a denied key is masked even when allowed. Matched
        case-insensitively, ignoring ``-``, ``_`` and ``.``; an allowed JSON key
        keeps its whole subtree (minus denied keys). Span and log attributes
        are not subject to the allowlist.
    :param value_patterns: compiled regexes masked wherever they match in text.
    :param marker: what a masked value becomes.
    :param hash_key: if set, a masked value becomes ``[REDACTED:<pseudonym>]``
        (see :func:`pseudonymize`) so equal secrets stay correlatable.
    """

    denied_keys: tuple[str, ...] = DEFAULT_DENIED_KEYS
    allowed_keys: tuple[str, ...] | None = None
    value_patterns: tuple[re.Pattern[str], ...] = DEFAULT_VALUE_PATTERNS
    marker: str = DEFAULT_MARKER
    # Not in repr: the key must not end up in a log line or a debug dump.
    hash_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.marker, str) or not self.marker:
            raise ValueError("the redaction marker must be a non-empty string")
        if self.hash_key is not None and not self.hash_key:
            raise ValueError("hash_key must be non-empty bytes or None")
        for pattern in self.value_patterns:
            if not isinstance(pattern, re.Pattern):
                raise TypeError(f"value_patterns must be compiled regexes, got {pattern!r}")

    @classmethod
    def default(cls) -> RedactionRules:
        """The built-in rules: :data:`DEFAULT_DENIED_KEYS`,
        :data:`DEFAULT_VALUE_PATTERNS`, no allowlist, ``[REDACTED]``."""
        return cls()

    @classmethod
    def build(
        cls,
        *,
        extra_keys: Iterable[str] = (),
        replace_keys: bool = False,
        extra_patterns: Iterable[str | re.Pattern[str]] = (),
        replace_patterns: bool = False,
        allowed_keys: Iterable[str] | None = None,
        marker: str = DEFAULT_MARKER,
        hash_key: bytes | None = None,
    ) -> RedactionRules:
        """Rules from user settings, extending the defaults unless told otherwise.

        Extending is the default because replacing silently drops protection
        for ``authorization``, cookies and card numbers; replacing must be an
        explicit choice.

        :param extra_keys: denied keys added to (or, with ``replace_keys``,
            used instead of) :data:`DEFAULT_DENIED_KEYS`.
        :param replace_keys: use only ``extra_keys``.
        :param extra_patterns: regexes (strings are compiled case-insensitively)
            added after, or with ``replace_patterns`` used instead of,
            :data:`DEFAULT_VALUE_PATTERNS`.
        :param replace_patterns: use only ``extra_patterns``.
        :param allowed_keys: the allowlist for captured structured data.
        :param marker: the replacement text.
        :param hash_key: the HMAC key for pseudonymous markers.
        :raises re.error: if a pattern string does not compile.
        """
        keys = tuple(k.strip() for k in extra_keys if k and k.strip())
        compiled = tuple(
            p if isinstance(p, re.Pattern) else re.compile(p, _FLAGS) for p in extra_patterns
        )
        denied = keys if replace_keys else _dedupe(DEFAULT_DENIED_KEYS + keys)
        patterns = compiled if replace_patterns else DEFAULT_VALUE_PATTERNS + compiled
        allowed = None if allowed_keys is None else tuple(k.strip() for k in allowed_keys)
        return cls(
            denied_keys=denied,
            allowed_keys=allowed,
            value_patterns=patterns,
            marker=marker,
            hash_key=hash_key,
        )


def _dedupe(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
