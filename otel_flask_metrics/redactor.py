"""The :class:`Redactor`: the rules applied to text, attribute values, URLs, JSON,
forms and headers, never raising (on an internal error the value in hand
becomes the marker: fail closed).
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import unquote_plus

from opentelemetry.util.types import AttributeValue

from .redaction_rules import (
    _CLEAN_CACHE_SIZE,
    _CLEAN_MAX_CHARS,
    _DEFAULT_TRIGGERS,
    _DENIED,
    _JSON_PAIR,
    _KEY_CACHE_SIZE,
    _LITERALS,
    _MAX_DEPTH,
    _PASS_TYPES,
    _QUERY,
    _URL,
    _URL_KEY_WORDS,
    RedactionRules,
    _log_once,
    _luhn_ok,
    _normalise,
    _short_strings,
    _words,
    pseudonymize,
)


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
