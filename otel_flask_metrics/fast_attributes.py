"""A faster path for the metrics SDK's per-measurement attribute work, with identical results.

Every ``Histogram.record`` in the OpenTelemetry Python SDK handles its
attribute dict twice: ``Measurement`` cleans it (``_clean_attribute_value``)
and the view storage hashes it into an aggregation key (``_hash_attributes``).
Both are written for any attribute value, nested sequences and mappings
included, and pay for that on every call: abstract-base-class ``isinstance``
checks, one Python call per value, a sort with a Python key function. In a
gunicorn worker under load this was about 40 µs of the 87 µs that the 2.25
records of an average request cost (``benchmarks/``, README "Performance").

HTTP metric attributes are flat: ``str`` keys and ``str``/``int``/``float``/
``bool`` values. For exactly that shape the functions below compute the same
result in one loop; anything else goes to the SDK's own function, unchanged.

Span attributes go through the same cleaning function (``BoundedAttributes``
in the API calls it on every ``set_attributes``), with tuples of ``str``
(captured headers, content type) beside the flat values: the same copy serves
them. The OTLP encoder's attribute encoding is memoised too
(:mod:`.attribute_encoding`), span and metric attributes alike.

They replace the SDK's module-level names only if the SDK still has them
and, on a set of probe inputs, each gives results equal to the original's. An
SDK whose key format changed is left alone. The patch belongs upstream; until
it is there, ``OTEL_FLASK_METRICS_SDK_FAST_PATH=false`` turns it off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import attribute_encoding

_logger = logging.getLogger(__name__)

# Exact types: a subclass (an IntEnum, a str Enum) takes the SDK's path, which
# names the subclass in the key.
_FLAT_TYPES = frozenset((str, int, float, bool))
# Their names, as the SDK's key spells them: ``type(v).__name__`` builds a new
# string on every call for a built-in type, a lookup here does not.
_FLAT_TYPE_NAMES = {kind: kind.__name__ for kind in _FLAT_TYPES}


def _is_str_tuple(item: Any) -> bool:
    """A tuple of exact ``str``: span attributes such as captured headers; the SDK copies it."""
    if type(item) is not tuple:
        return False
    for element in item:
        if type(element) is not str:
            return False
    return True


def _is_flat(attributes: dict[str, Any]) -> bool:
    for key, item in attributes.items():
        if type(item) not in _FLAT_TYPES or type(key) is not str or not key:
            return False
    return True


class FrozenAttributes(dict):  # type: ignore[type-arg]  # dict[str, str | int | float | bool]
    """Flat metric attributes, checked once and never changed afterwards.

    The HTTP metrics record the same few attribute sets on every request: one
    of these is made per set (:meth:`of`) and passed to every record, so the
    fast path's cleaning copies it without checking each value again. Any code
    that cannot tell it from a ``dict`` gets exactly what a ``dict`` gives,
    and the SDK's own path (fast path off) reads it as the mapping it is.
    """

    __slots__ = ("sdk_key",)

    def __init__(self, attributes: dict[str, Any]) -> None:
        if not _is_flat(attributes):
            raise TypeError("FrozenAttributes takes str keys and str, int, float or bool values")
        super().__init__(attributes)
        #: The SDK's aggregation key of these attributes, once the fast path computed it.
        self.sdk_key: Any = None

    @classmethod
    def of(cls, attributes: dict[str, Any]) -> dict[str, Any]:
        """``attributes`` frozen, or as they are when not flat (the SDK checks those)."""
        return cls(attributes) if _is_flat(attributes) else attributes

    def _frozen(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("FrozenAttributes cannot be changed")

    __setitem__ = __delitem__ = __ior__ = _frozen
    clear = pop = popitem = setdefault = update = _frozen


_PROBES: tuple[dict[str, Any], ...] = (
    {},
    {"http.request.method": "GET", "url.scheme": "http", "http.response.status_code": 200},
    {"z": True, "a": 1.5, "m": "x", "b": 0, "é": "ü"},
    {"b": False, "a": 1},  # bool and int must stay apart
    {"a": 1.0},  # and so must float and int
    FrozenAttributes({"http.request.method": "POST", "http.response.status_code": 201}),
)

# What a server span's attributes hold beyond the metric ones.
_SPAN_PROBES: tuple[dict[str, Any], ...] = (
    {"http.response.header.content-type": ("application/json",), "url.path": "/items/1"},
    {"http.request.header.x-forwarded-for": ("a", "b"), "empty": ()},
)

# The FrozenAttributes the fast path cleaned last (any thread): the dict the
# SDK hashes next is usually a copy of it.
_last_frozen: list[FrozenAttributes | None] = [None]
_MISSING = object()

_lock = threading.Lock()
_installed: dict[str, tuple[ModuleType, str, Callable[..., Any]]] = {}


def install() -> bool:
    """Use the fast path from now on, in the whole process; True if it is in use.

    Idempotent. Returns False (and changes nothing) when the SDK does not have
    the expected functions or they disagree with ours on the probes.
    """
    with _lock:
        if _installed:
            return True
        plan = _plan()
        if plan is None:
            return False
        for key, (module, name, original, fast) in plan.items():
            _installed[key] = (module, name, original)
            setattr(module, name, fast)
        return True


def available() -> bool:
    """Whether this SDK can take the fast path (checked, nothing changed)."""
    return bool(_installed) or _plan() is not None


def _plan() -> dict[str, tuple[ModuleType, str, Callable[..., Any], Callable[..., Any]]] | None:
    """The replacements by name, or None when the SDK is not the one they were checked on.

    The encoders' (:mod:`.attribute_encoding`) join only where their own check passes.
    """
    try:
        from opentelemetry import attributes
        from opentelemetry.sdk.metrics._internal import _view_instrument_match, measurement
    except ImportError:
        return None
    original_hash = getattr(_view_instrument_match, "_hash_attributes", None)
    original_clean = getattr(measurement, "_clean_attribute_value", None)
    # The same function, as span attributes (BoundedAttributes) call it.
    original_span_clean = getattr(attributes, "_clean_attribute_value", None)
    if not (callable(original_hash) and callable(original_clean) and callable(original_span_clean)):
        _logger.debug("otel-flask-metrics: this SDK has no attribute hashing to speed up")
        return None
    fast_hash = flat_hash(original_hash)
    fast_clean = flat_clean(original_clean)
    fast_span_clean = flat_clean(original_span_clean)
    try:
        agrees = all(
            fast_hash(dict(p)) == original_hash(dict(p))
            and fast_clean(p, None) == original_clean(p, None)
            and type(fast_clean(p, None)) is type(original_clean(p, None))
            for p in _PROBES
        ) and all(
            fast_span_clean(p, None) == original_span_clean(p, None)
            and type(fast_span_clean(p, None)) is type(original_span_clean(p, None))
            for p in (*_PROBES, *_SPAN_PROBES)
        )
    except Exception:
        agrees = False
    if not agrees:
        _logger.debug("otel-flask-metrics: the SDK's attribute handling changed; keeping it")
        return None
    replacements: dict[str, tuple[ModuleType, str, Callable[..., Any], Callable[..., Any]]] = {
        "hash": (_view_instrument_match, "_hash_attributes", original_hash, fast_hash),
        "clean": (measurement, "_clean_attribute_value", original_clean, fast_clean),
        "span clean": (attributes, "_clean_attribute_value", original_span_clean, fast_span_clean),
    }
    for module, name, original, fast in attribute_encoding.plan():
        replacements[f"{module.__name__} encoding"] = (module, name, original, fast)
    return replacements


def uninstall() -> None:
    """Give the SDK its own functions back (for tests and for comparisons)."""
    with _lock:
        for module, name, original in _installed.values():
            setattr(module, name, original)
        _installed.clear()


def is_installed() -> bool:
    return bool(_installed)


def flat_hash(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``_hash_attributes`` with a one-loop path for flat dicts.

    The SDK's key for a mapping is ``("mapping", ((key, (type name, value)),
    ...))`` in sorted key order; its ``sorted`` key function is the identity
    for ``str`` keys, which are the only keys this path takes.

    The SDK hashes a copy of what it cleaned. When that was a
    :class:`FrozenAttributes`, a dict with the same keys holding the very
    same value objects has its key, computed once: the same objects have the
    same types and values, so the key cannot differ (whichever thread cleaned
    it last, the identity check decides).
    """

    def flat_key(value: dict[Any, Any]) -> Any:
        try:
            keys = sorted(value)
        except TypeError:  # keys of mixed types
            return original(value)
        names = _FLAT_TYPE_NAMES
        items = []
        for key in keys:
            item = value[key]
            name = names.get(type(item))
            if name is None or type(key) is not str:
                return original(value)
            items.append((key, (name, item)))
        return ("mapping", tuple(items))

    def hash_attributes(value: Any) -> Any:
        if type(value) is dict:
            frozen = _last_frozen[0]
            if frozen is not None and len(value) == len(frozen):
                get = value.get
                for key, item in frozen.items():
                    if get(key, _MISSING) is not item:
                        break
                else:
                    sdk_key = frozen.sdk_key
                    if sdk_key is None:
                        sdk_key = frozen.sdk_key = flat_key(dict(frozen))
                    return sdk_key
            return flat_key(value)
        return original(value)

    hash_attributes.__wrapped__ = original  # type: ignore[attr-defined]
    return hash_attributes


def flat_clean(original: Callable[[Any, int | None], Any]) -> Callable[[Any, int | None], Any]:
    """``_clean_attribute_value`` with a one-loop path for flat dicts.

    For a dict with non-empty ``str`` keys and flat values, and no length
    limit (what ``Measurement`` passes), cleaning is a copy; a
    :class:`FrozenAttributes` is one without a second look.
    """

    def clean_attribute_value(value: Any, max_string_value_length: int | None) -> Any:
        if type(value) is FrozenAttributes and max_string_value_length is None:
            _last_frozen[0] = value
            return dict(value)  # checked when it was made, unchanged since
        if type(value) is dict and max_string_value_length is None:
            for key, item in value.items():
                if type(key) is not str or not key:
                    return original(value, max_string_value_length)
                if type(item) not in _FLAT_TYPES and not _is_str_tuple(item):
                    return original(value, max_string_value_length)
            return dict(value)
        return original(value, max_string_value_length)

    clean_attribute_value.__wrapped__ = original  # type: ignore[attr-defined]
    return clean_attribute_value
