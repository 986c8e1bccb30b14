"""Redaction of secrets and personal data before telemetry leaves the process.

Telemetry is copied to places with weaker access control than the API itself
(a Collector, Prometheus, Grafana, whoever reads the traces), so anything that
authenticates a caller or identifies a person must be masked *in process*,
before an exporter serialises it. This module is that last line:

* :class:`RedactionRules` is the data: denied keys, an optional allowlist for
  captured payloads, value patterns, the marker and an optional hash key.
  The defaults (:data:`DEFAULT_DENIED_KEYS`, :data:`DEFAULT_VALUE_PATTERNS`)
  are module-level lists compiled once; users extend or replace them by explicit
  choice with :meth:`RedactionRules.build`.
* :class:`Redactor` applies the rules to text, attribute values, URLs, JSON,
  forms and headers. It never raises: on an internal error the value in hand
  becomes the marker (fail closed).
* :class:`RedactingSpanProcessor` and :class:`RedactingLogRecordProcessor` wrap
  the exporting processor, so every span and log record is redacted on the way
  out whatever instrumentation produced it.

Key matching is by *words*: a key is split on ``-``, ``_``, ``.``, other
punctuation and camelCase humps, lower-cased, and it is denied when any run of
its trailing words, joined, equals a denied key with its separators removed.
So the denied key ``api_key`` catches ``api-key``, ``API_KEY``, ``apiKey`` and
``http.request.header.x-api-key``; ``password`` catches ``db_password`` and
``newPassword``; but ``cc`` does not catch ``bcc`` and ``token`` does not catch
``input_tokens``.

Value patterns may use two named groups: ``secret`` (only that group is
masked, e.g. the password in ``https://user:pass@host`` or the token after
``Bearer``) and ``luhn`` (the group is masked only when its digits pass the Luhn
check, so payment card numbers are masked and other long numbers are kept).
Without either group the whole match is masked.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import unquote_plus

from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.status import Status
from opentelemetry.util.types import AnyValue, AttributeValue

__all__ = [
    "DEFAULT_DENIED_KEYS",
    "DEFAULT_MARKER",
    "DEFAULT_VALUE_PATTERNS",
    "RedactingLogRecordProcessor",
    "RedactingSpanProcessor",
    "RedactionRules",
    "Redactor",
    "pseudonymize",
]

_logger = logging.getLogger(__name__)

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


class Redactor:
    """Applies :class:`RedactionRules`; thread-safe and never raising.

    Every method returns its input object unchanged (the same object) when
    nothing had to be masked, so callers can skip copies with an ``is`` check.

    :param rules: the rules; :meth:`RedactionRules.default` if omitted.
    """

    def __init__(self, rules: RedactionRules | None = None) -> None:
        self.rules = rules if rules is not None else RedactionRules.default()
        self._denied = frozenset(_normalise(k) for k in self.rules.denied_keys) - {""}
        self._allowed = (
            None
            if self.rules.allowed_keys is None
            else frozenset(_normalise(k) for k in self.rules.allowed_keys)
        )
        self._patterns = self.rules.value_patterns
        triggers = dict.fromkeys(
            _DEFAULT_TRIGGERS[p] for p in self._patterns if p in _DEFAULT_TRIGGERS
        )
        self._trigger = re.compile("|".join(triggers)) if triggers else None
        # Each pattern with its own trigger (None: the user's patterns, which
        # are their own precheck), so a text with a candidate runs only the
        # patterns that can match it.
        # A trigger made of literals is checked with ``in`` (faster than a search).
        compiled: dict[str, tuple[str, ...] | re.Pattern[str]] = {
            t: tuple(t.split("|")) if _LITERALS.fullmatch(t) else re.compile(t) for t in triggers
        }
        self._plan = tuple(
            (p, compiled[_DEFAULT_TRIGGERS[p]] if p in _DEFAULT_TRIGGERS else None)
            for p in self._patterns
        )
        self._untriggered = tuple(p for p in self._patterns if p not in _DEFAULT_TRIGGERS)
        self._key_cache: dict[str, int] = {}
        # Plain attribute strings known to need no masking (never a secret:
        # only unchanged values under keys that are neither denied, URLs nor
        # queries go in). Emptied when full, so it stays bounded.
        self._clean: set[str | tuple[str, ...]] = set()

    # -- keys ---------------------------------------------------------------

    def is_denied(self, key: str) -> bool:
        """Whether values under ``key`` are always masked."""
        return bool(self._key_kind(key) & _DENIED)

    def _key_kind(self, key: str) -> int:
        """What a key says about its values (``_DENIED``, ``_QUERY``, ``_URL``
        bits), cached because the same few attribute keys recur on every span."""
        kind = self._key_cache.get(key)
        if kind is not None:
            return kind
        words = _words(key)
        kind = 0
        joined = ""
        for word in reversed(words):
            joined = word + joined
            if joined in self._denied:
                kind |= _DENIED
                break
        if words and words[-1] == "query":
            kind |= _QUERY
        if _URL_KEY_WORDS.intersection(words):
            kind |= _URL
        if len(self._key_cache) < _KEY_CACHE_SIZE:
            self._key_cache[key] = kind
        return kind

    def _keeps(self, key: str) -> bool:
        """Whether the allowlist (if any) keeps values under ``key``."""
        return self._allowed is None or _normalise(key) in self._allowed

    def mask(self, value: str) -> str:
        """The marker that replaces ``value`` (pseudonymous if a hash key is set)."""
        key = self.rules.hash_key
        marker = self.rules.marker
        if key is None:
            return marker
        pseudonym = pseudonymize(value, key)
        if marker.startswith("[") and marker.endswith("]"):
            return f"{marker[:-1]}:{pseudonym}]"
        return f"{marker}:{pseudonym}"

    def _mask_any(self, value: Any, depth: int = 0) -> Any:
        """Mask a value under a denied key, keeping sequences sequences."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, (list, tuple)) and depth < _MAX_DEPTH:
            masked = [self._mask_any(v, depth + 1) for v in value]
            return tuple(masked) if isinstance(value, tuple) else masked
        if isinstance(value, bytes):
            return self.mask(value.hex())
        return self.mask(str(value))

    # -- text ---------------------------------------------------------------

    def redact_text(self, s: str) -> str:
        """Mask every value-pattern match in ``s``.

        A cheap precheck (one search for the default patterns' trigger words,
        plus the user's patterns) rules out the common case before any
        per-pattern work. Overlapping matches are resolved in pattern order
        on the original text, so a marker is never re-matched.
        """
        try:
            return self._text(s)
        except Exception:
            _log_once("text", logging.DEBUG, "redaction of a text value failed; masked it whole")
            return self.mask(s) if isinstance(s, str) else self.rules.marker

    def _text(self, s: str) -> str:
        if not s:
            return s
        lower = s.lower()
        if not (
            (self._trigger is not None and self._trigger.search(lower) is not None)
            or (self._untriggered and any(p.search(s) is not None for p in self._untriggered))
        ):
            return s
        # Accepted matches, as sorted, non-overlapping (start, end) bounds.
        starts: list[int] = []
        ends: list[int] = []
        spans: list[tuple[int, int]] = []
        for pattern, trigger in self._plan:
            if trigger is not None:
                if isinstance(trigger, tuple):
                    # A plain loop: a generator per pattern costs more than the checks.
                    for literal in trigger:
                        if literal in lower:
                            break
                    else:
                        continue
                elif trigger.search(lower) is None:
                    continue
            for m in pattern.finditer(s):
                start, end = m.span()
                at = bisect.bisect_right(starts, start)
                if (
                    start == end
                    or (at and ends[at - 1] > start)
                    or (at < len(starts) and starts[at] < end)
                ):
                    continue
                group = m.groupdict()
                if group.get("luhn") is not None:
                    digits = re.sub(r"\D", "", group["luhn"])
                    if not (13 <= len(digits) <= 19 and _luhn_ok(digits)):
                        continue
                    spans.append(m.span("luhn"))
                elif group.get("secret") is not None:
                    spans.append(m.span("secret"))
                else:
                    spans.append((start, end))
                starts.insert(at, start)
                ends.insert(at, end)
        if not spans:
            return s
        spans.sort()
        out: list[str] = []
        pos = 0
        for start, end in spans:
            out.append(s[pos:start])
            out.append(self.mask(s[start:end]))
            pos = end
        out.append(s[pos:])
        return "".join(out)

    # -- attribute values -----------------------------------------------------

    def redact_value(self, key: str, value: AttributeValue) -> AttributeValue:
        """Redact one attribute value given its key.

        A denied key masks the value (each element of a sequence, so a header
        captured as a tuple of strings stays a tuple). Otherwise strings get the
        value patterns; strings that look like URLs or query strings also get
        query-parameter masking, and JSON-looking strings get key masking
        (denylist only). Mappings are walked by their own keys. Other values
        (numbers, booleans, bytes) pass unchanged.
        """
        try:
            return cast(AttributeValue, self._value(key, value, 0))
        except Exception:
            _log_once("value", logging.DEBUG, "redaction of an attribute value failed; masked it")
            return self.rules.marker

    def _value(self, key: str, value: Any, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return self.rules.marker
        kind = self._key_kind(key)
        if kind & _DENIED:
            if isinstance(value, Mapping):
                return {k: self._mask_any(v) for k, v in value.items()}
            return self._mask_any(value)
        if isinstance(value, str):
            return self._string(kind, value)
        if isinstance(value, (bytes, int, float)) or value is None:
            return value
        if isinstance(value, Mapping):
            changed = False
            out: dict[str, Any] = {}
            for k, v in value.items():
                nv = self._value(str(k), v, depth + 1)
                changed = changed or nv is not v
                out[k] = nv
            return out if changed else value
        if isinstance(value, Sequence):
            items = [self._value(key, v, depth + 1) for v in value]
            if all(n is o for n, o in zip(items, value, strict=True)):
                return value
            return tuple(items) if isinstance(value, tuple) else items
        return value

    def _string(self, kind: int, s: str) -> str:
        """A string under a key that is not denied (``kind`` from
        :meth:`_key_kind`): the value patterns plus whatever structure the
        string evidently has (URL, query, JSON)."""
        if not s:
            return s
        first = s[0]
        if first.isspace():
            first = s.lstrip()[:1]
        if first == "{" or first == "[":
            return self._json(s, use_allowlist=False)
        if "=" in s:
            if kind & _QUERY and "://" not in s:
                return self._query(self._text(s), use_allowlist=False)
            if "?" in s and (kind & _URL or "://" in s or first == "/"):
                return self._url(s, use_allowlist=False)
        return self._text(s)

    def redact_attributes(
        self, attrs: Mapping[str, AttributeValue] | None
    ) -> dict[str, AttributeValue] | None:
        """Redact a whole attribute mapping.

        :returns: a new dict if any value changed, else ``None`` so callers can
            keep the original without copying.
        """
        if not attrs:
            return None
        out: dict[str, AttributeValue] | None = None
        clean = self._clean
        for key, value in attrs.items():
            kind = self._key_kind(key)
            value_type = type(value)
            # Fast paths: numbers, booleans and the like under keys that are not
            # denied; plain strings already seen to need nothing (method, route,
            # host, user agent... recur on every span).
            if not kind & _DENIED and (
                value_type in _PASS_TYPES
                or ((value_type is str or value_type is tuple) and value in clean)
            ):
                continue
            new = self.redact_value(key, value)
            if new is value:
                if not kind and (
                    (isinstance(value, str) and len(value) <= _CLEAN_MAX_CHARS)
                    or (isinstance(value, tuple) and _short_strings(value))
                ):
                    if len(clean) >= _CLEAN_CACHE_SIZE:
                        clean.clear()
                    clean.add(value)
                continue
            if out is None:
                out = dict(attrs)
            out[key] = new
        return out

    # -- URLs -----------------------------------------------------------------

    def redact_url(self, url: str) -> str:
        """Redact a URL (absolute, or a request target such as ``/path?q=1``).

        The password in the userinfo is masked (the user is kept), query
        parameters whose names are denied (or not allowed, with an allowlist)
        get a masked value, then the value patterns run over the rest.
        Percent-encoding of the parts that are kept is left as it was.
        """
        try:
            return self._url(url, use_allowlist=True)
        except Exception:
            _log_once("url", logging.DEBUG, "redaction of a URL failed; masked it whole")
            return self.rules.marker

    def redact_query(self, query: str) -> str:
        """Redact a query string (without the leading ``?``), as in :meth:`redact_url`."""
        try:
            return self._query(self._text(query), use_allowlist=True)
        except Exception:
            _log_once("query", logging.DEBUG, "redaction of a query string failed; masked it")
            return self.rules.marker

    def _url(self, url: str, *, use_allowlist: bool) -> str:
        # Patterns first (they mask the userinfo password); the query split
        # below then masks denied parameters whole, marker or not.
        text = self._text(url)
        base, sep, rest = text.partition("?")
        if not sep:
            return text
        query, hash_sep, fragment = rest.partition("#")
        new_query = self._query(query, use_allowlist=use_allowlist)
        if text is url and new_query is query:
            return url
        return f"{base}?{new_query}{hash_sep}{fragment}"

    def _query(self, query: str, *, use_allowlist: bool) -> str:
        if not query:
            return query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            name, eq, value = part.partition("=")
            if not eq or not value:
                continue
            decoded = unquote_plus(name) if "%" in name or "+" in name else name
            if self.is_denied(decoded) or (use_allowlist and not self._keeps(decoded)):
                masked = self.mask(unquote_plus(value))
                if masked != value:
                    parts[i] = f"{name}={masked}"
                    changed = True
        return "&".join(parts) if changed else query

    # -- structured payloads --------------------------------------------------

    def redact_json(self, data: str | bytes | Any) -> str:
        """Redact JSON at any depth and return it as a JSON string.

        Values under denied keys are masked at every depth; with an allowlist
        only allowed keys' values (and their subtrees) are kept; value patterns
        run over every string kept. Text that is not valid JSON (often a body
        cut off by a size limit) still has ``"key": value`` pairs under denied
        keys masked and the value patterns applied.

        :param data: JSON text (``str`` or UTF-8 ``bytes``) or a parsed object.
        :returns: JSON text; the input string itself when nothing changed.
        """
        try:
            if isinstance(data, bytes):
                data = data.decode("utf-8", "replace")
            if isinstance(data, str):
                return self._json(data, use_allowlist=True)
            walked, _ = self._walk(data, False, 0, use_allowlist=True)
            return json.dumps(walked, ensure_ascii=False, default=str)
        except Exception:
            _log_once("json", logging.DEBUG, "redaction of JSON failed; masked it whole")
            return json.dumps(self.rules.marker)

    def _json(self, text: str, *, use_allowlist: bool) -> str:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return self._json_fallback(text, use_allowlist=use_allowlist)
        walked, changed = self._walk(obj, False, 0, use_allowlist=use_allowlist)
        if not changed:
            return text
        return json.dumps(walked, ensure_ascii=False, default=str)

    def _json_fallback(self, text: str, *, use_allowlist: bool) -> str:
        def repl(m: re.Match[str]) -> str:
            key = m.group(1)
            if self.is_denied(key) or (use_allowlist and not self._keeps(key)):
                value = m.group(2)
                return f'"{key}": ' + json.dumps(self.mask(value.strip('"')))
            return m.group(0)

        masked = _JSON_PAIR.sub(repl, text)
        result = self._text(masked)
        return text if result == text else result

    def _walk(self, obj: Any, kept: bool, depth: int, *, use_allowlist: bool) -> tuple[Any, bool]:
        """Walk parsed JSON; ``kept`` says an enclosing key is allowed (or
        there is no allowlist in force). Returns the new object and whether
        anything changed."""
        if depth > _MAX_DEPTH:
            return self.rules.marker, True
        allow_all = not use_allowlist or self._allowed is None
        if isinstance(obj, dict):
            changed = False
            out: dict[Any, Any] = {}
            for k, v in obj.items():
                key = str(k)
                if self.is_denied(key):
                    out[k] = self._mask_json(v)
                    changed = True
                    continue
                child_kept = allow_all or kept or self._keeps(key)
                nv, c = self._walk(v, child_kept, depth + 1, use_allowlist=use_allowlist)
                out[k] = nv
                changed = changed or c
            return (out, True) if changed else (obj, False)
        if isinstance(obj, list):
            results = [self._walk(v, kept, depth + 1, use_allowlist=use_allowlist) for v in obj]
            if any(c for _, c in results):
                return [v for v, _ in results], True
            return obj, False
        if obj is None:
            return obj, False
        if not (allow_all or kept):
            return self._mask_json(obj), True
        if isinstance(obj, str):
            new = self._text(obj)
            return new, new is not obj
        return obj, False

    def _mask_json(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._mask_json(v) for v in value]
        if isinstance(value, dict):
            return self.mask(json.dumps(value, sort_keys=True, default=str))
        if value is None:
            return None
        return self.mask(value if isinstance(value, str) else json.dumps(value))

    def redact_form(
        self, form: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]
    ) -> dict[str, str | list[str]]:
        """Redact form fields (denied keys masked; allowlist applied).

        For a Werkzeug ``MultiDict`` pass ``form.to_dict(flat=False)`` or
        ``form.items(multi=True)`` so repeated fields are all redacted.

        :returns: a new dict; repeated names (from pairs or sequence values)
            map to a list.
        """
        return self._pairs(form, "form")

    def redact_headers(
        self, headers: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]
    ) -> dict[str, str | list[str]]:
        """Redact HTTP headers (denied names masked; allowlist applied;
        value patterns and URL query masking on kept values).

        Accepts a mapping or ``(name, value)`` pairs such as Werkzeug's
        ``Headers`` or a WSGI ``headers`` list.
        """
        return self._pairs(headers, "headers")

    def _pairs(
        self, data: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]], site: str
    ) -> dict[str, str | list[str]]:
        out: dict[str, str | list[str]] = {}
        items: Iterable[tuple[str, str | Sequence[str]]] = (
            data.items() if isinstance(data, Mapping) else data
        )
        for name, value in items:
            try:
                new = self._pair_value(str(name), value)
            except Exception:
                _log_once(site, logging.DEBUG, f"redaction of {site} failed; masked a value")
                new = self.rules.marker
            previous = out.get(name)
            if previous is None:
                out[name] = new
            else:
                merged = previous if isinstance(previous, list) else [previous]
                merged.extend([new] if isinstance(new, str) else new)
                out[name] = merged
        return out

    def _pair_value(self, name: str, value: str | Sequence[str]) -> str | list[str]:
        kind = self._key_kind(name)
        masked = bool(kind & _DENIED) or not self._keeps(name)
        if isinstance(value, str):
            return self.mask(value) if masked else self._string(kind, value)
        return [self.mask(str(v)) if masked else self._string(kind, str(v)) for v in value]


def _bounded(new: dict[str, AttributeValue], dropped: int) -> Mapping[str, AttributeValue]:
    """Read-only attributes for the copy. If the original dropped some (over
    the span limits), a ``BoundedAttributes`` carrying that count, so the copy
    exports the same ``dropped_attributes_count``; otherwise a cheap read-only
    view (building ``BoundedAttributes`` re-validates every value)."""
    if not dropped:
        return MappingProxyType(new)
    attrs = BoundedAttributes(attributes=new, immutable=True)
    attrs.dropped = dropped
    return attrs


class RedactingSpanProcessor(SpanProcessor):
    """A span processor that redacts ended spans before the wrapped one sees them.

    Wrap the exporting processor (typically a ``BatchSpanProcessor``) rather
    than adding this next to it: processors run in registration order on the
    same span object, and only wrapping guarantees the exporter never sees the
    unredacted span. Span attributes, event attributes (including
    ``exception.message`` and ``exception.stacktrace``), link attributes and
    the status description are redacted; names and the resource are not.
    An unchanged span is forwarded as the same object (no copy); a changed one
    is rebuilt with the public :class:`~opentelemetry.sdk.trace.ReadableSpan`
    constructor. If redaction fails the span is dropped (fail closed) and a
    warning is logged once.

    :param processor: the processor to forward to.
    :param redactor: the redactor; one with the default rules if omitted.
    """

    def __init__(self, processor: SpanProcessor, redactor: Redactor | None = None) -> None:
        self._processor = processor
        self._redactor = redactor if redactor is not None else Redactor()

    @property
    def processor(self) -> SpanProcessor:
        """The wrapped processor."""
        return self._processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        # Private SDK hook, forwarded so wrapping changes nothing but redaction.
        self._processor._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            redacted = self.redact_span(span)
        except Exception:
            _log_once(
                "span",
                logging.WARNING,
                "otel_flask_metrics: redacting a span failed; dropped it rather than export "
                "unredacted data",
            )
            return
        self._processor.on_end(redacted)

    def redact_span(self, span: ReadableSpan) -> ReadableSpan:
        """Return ``span`` itself if nothing needs masking, else a redacted copy."""
        return redact_span(span, self._redactor)

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)


def redact_span(span: ReadableSpan, r: Redactor) -> ReadableSpan:
    """Return ``span`` itself if nothing needs masking, else a redacted copy.

    :raises Exception: whatever fails; callers turn that into a drop.
    """
    changed = False
    attributes: Any = span.attributes
    new_attrs = r.redact_attributes(attributes)
    if new_attrs is not None:
        attributes = _bounded(new_attrs, span.dropped_attributes)
        changed = True

    new_events, events_changed = _redact_items(
        span.events, r, lambda event, attrs: Event(event.name, attrs, event.timestamp)
    )
    new_links, links_changed = _redact_items(
        span.links, r, lambda link, attrs: trace_api.Link(link.context, attrs)
    )
    changed = changed or events_changed or links_changed

    status = span.status
    if status.description:
        description = r.redact_text(status.description)
        if description is not status.description:
            status = Status(status.status_code, description)
            changed = True

    if not changed:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=_bounded_list(new_events, span.dropped_events),
        links=_bounded_list(new_links, span.dropped_links),
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingSpanExporter(SpanExporter):
    """An exporter that redacts each batch before the wrapped exporter sends it.

    This is how the distro redacts: a ``BatchSpanProcessor`` calls ``export``
    from its worker thread, so the work is done in the export path, not on
    the request thread, and still nothing reaches the wrapped exporter
    unredacted. A span that fails to redact is dropped (fail closed) and a
    warning is logged once.
    """

    def __init__(self, exporter: SpanExporter, redactor: Redactor | None = None) -> None:
        self._exporter = exporter
        self._redactor = redactor if redactor is not None else Redactor()

    @property
    def exporter(self) -> SpanExporter:
        """The wrapped exporter."""
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        redacted: list[ReadableSpan] = []
        for span in spans:
            try:
                redacted.append(redact_span(_with_plain_attributes(span), self._redactor))
            except Exception:
                _log_once(
                    "span",
                    logging.WARNING,
                    "otel_flask_metrics: redacting a span failed; dropped it rather than "
                    "export unredacted data",
                )
        return self._exporter.export(redacted)

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


def _with_plain_attributes(span: ReadableSpan) -> ReadableSpan:
    """``span``, or the same span read over its attributes' plain dict.

    An SDK span keeps its attributes in a ``BoundedAttributes``, a Python
    mapping: each pass over it (redaction's, then the OTLP encoder's) runs a
    Python generator and a ``__getitem__`` call per attribute, about five times
    a pass over a dict. An ended span's attributes no longer change, so the
    exported copy reads them from the dict inside, in the same order. Spans
    that dropped attributes, events or links (their counts live in the
    bounded containers), and anything not built as expected, go as they are.
    """
    bounded = getattr(span, "_attributes", None)
    if type(bounded) is not BoundedAttributes or bounded.dropped or span.end_time is None:
        return span
    plain = getattr(bounded, "_dict", None)
    if type(plain) is not dict or span.dropped_events or span.dropped_links:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.get_span_context(),
        parent=span.parent,
        resource=span.resource,
        attributes=MappingProxyType(plain),
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _redact_items(
    items: Sequence[Any], r: Redactor, rebuild: Callable[[Any, Mapping[str, AttributeValue]], Any]
) -> tuple[list[Any], bool]:
    """Events or links with redacted attributes: each one kept as it is when
    nothing in it changed, else rebuilt (keeping its dropped-attribute count)."""
    out: list[Any] = []
    changed = False
    for item in items:
        attrs = r.redact_attributes(item.attributes)
        if attrs is None:
            out.append(item)
        else:
            changed = True
            out.append(rebuild(item, _bounded(attrs, item.dropped_attributes)))
    return out, changed


def _bounded_list(items: list[Any], dropped: int) -> Sequence[Any]:
    """Keep the original's dropped count (events/links over the span limits)."""
    if not dropped:
        return tuple(items)
    bounded: BoundedList[Any] = BoundedList(None)
    # BoundedList.extend is unannotated in the SDK.
    cast(Any, bounded).extend(items)
    bounded.dropped = dropped
    return bounded


class RedactingLogRecordProcessor(LogRecordProcessor):
    """A log record processor that redacts records before the wrapped one sees them.

    In SDK 1.45 the :class:`~opentelemetry.sdk._logs.ReadWriteLogRecord` is
    mutable at emit time, so the body (a string, or a structured value) and the
    attributes (including ``exception.*``) are redacted in place. As with spans,
    wrap the exporting processor: the record object is shared by every
    processor on the provider. If redaction fails the record is dropped
    (fail closed) and a warning is logged once.

    :param processor: the processor to forward to.
    :param redactor: the redactor; one with the default rules if omitted.
    """

    def __init__(self, processor: LogRecordProcessor, redactor: Redactor | None = None) -> None:
        self._processor = processor
        self._redactor = redactor if redactor is not None else Redactor()

    @property
    def processor(self) -> LogRecordProcessor:
        """The wrapped processor."""
        return self._processor

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            self.redact_record(log_record)
        except Exception:
            _log_once(
                "log",
                logging.WARNING,
                "otel_flask_metrics: redacting a log record failed; dropped it rather than "
                "export unredacted data",
            )
            return
        self._processor.on_emit(log_record)

    def redact_record(self, log_record: ReadWriteLogRecord) -> None:
        """Redact ``log_record`` in place.

        :raises Exception: whatever fails; :meth:`on_emit` turns that into a drop.
        """
        r = self._redactor
        record = log_record.log_record
        body: AnyValue = record.body
        if body is not None:
            record.body = r.redact_value("body", body)
        attrs = record.attributes
        new_attrs = r.redact_attributes(attrs)
        if new_attrs is None or attrs is None:
            return
        if isinstance(attrs, BoundedAttributes):
            try:
                # In place keeps the SDK's limits and dropped count on the record.
                for key, value in new_attrs.items():
                    if value is not attrs.get(key):
                        attrs[key] = value
                return
            except TypeError:  # an immutable BoundedAttributes
                pass
        record.attributes = _bounded(new_attrs, getattr(attrs, "dropped", 0))

    def enabled(
        self,
        *,
        context: Context | None = None,
        instrumentation_scope: InstrumentationScope | None = None,
        severity_number: SeverityNumber | None = None,
        event_name: str | None = None,
    ) -> bool:
        return self._processor.enabled(
            context=context,
            instrumentation_scope=instrumentation_scope,
            severity_number=severity_number,
            event_name=event_name,
        )

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)
