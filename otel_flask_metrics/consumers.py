"""Who is calling: the API consumer of a request.

Four ways identify a consumer; a later one overrides an earlier one:

1. a request header (``OTEL_FLASK_METRICS_CONSUMER_HEADER``), pseudonymised by a
   keyed hash unless raw values are opted in, since it usually is a credential;
2. ``flask.g.consumer_identifier`` (what Apitally users already set);
3. :func:`set_consumer` called during the request;
4. a callback, called once after the view ran, so it sees what the app's own
   authentication put on ``g`` (ReadMe's grouping function has this shape).

Whatever the app hands us is cleaned (control characters removed, trimmed,
capped) and never raises into the request: a value we cannot use is dropped
with a debug log.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import g

from .config import Settings
from .redaction import pseudonymize

_logger = logging.getLogger(__name__)

# Stored on flask.g by set_consumer(); private to this package.
_G_ATTRIBUTE = "_otel_flask_metrics_consumer"

#: The metric label value that stands for every consumer past ``max_consumers``.
OVERFLOW_CONSUMER_ID = "_other"

# Without a configured key, pseudonyms are still stable across workers and
# restarts, but anyone can recompute them: check warns about it.
DEFAULT_HASH_KEY = b"otel-flask-metrics/default-consumer-key"

# C0 and C1 control characters (Unicode category Cc).
_PSEUDONYM_CACHE_SIZE = 4096  # entries

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class Consumer:
    """An API consumer: a stable id, and optionally a display name and a group."""

    id: str
    name: str | None = None
    group: str | None = None


def set_consumer(id: Any, name: Any = None, group: Any = None) -> None:
    """Attribute the current request to an API consumer.

    Call it anywhere while the request is handled (a view, a ``before_request``
    function, an auth decorator). It overrides the consumer header and
    ``g.consumer_identifier``; a consumer callback, when configured and not
    returning None, overrides it.

    :param id: a stable identifier such as ``"customer-123"``; never a secret.
    :param name: a display name.
    :param group: a group such as a plan or a tenant, used as a metric label.
    """
    setattr(g, _G_ATTRIBUTE, (id, name, group))


class ConsumerResolver:
    """Decides the consumer of a request from the settings' sources."""

    def __init__(self, settings: Settings) -> None:
        self._max_length = settings.consumer_id_max_length
        self._callback = settings.consumer_callback
        self._header_key: str | None = None
        if settings.consumer_header:
            self._header_key = "HTTP_" + settings.consumer_header.upper().replace("-", "_")
        self._header_raw = settings.consumer_header_raw
        key = settings.consumer_hash_key
        self._hash_key = key.encode() if key else DEFAULT_HASH_KEY
        # Credentials repeat on every request of a consumer: an HMAC (and a
        # cleaned Consumer) per request is avoidable. Bounded, emptied when full.
        self._pseudonyms: dict[str, str] = {}
        self._header_consumers: dict[str, Consumer | None] = {}

    def resolve(self, request: Any, *, use_callback: bool = True) -> Consumer | None:
        """The consumer of ``request``, or None when nothing identifies one.

        :param use_callback: False while the view still runs: the callback is
            promised one call per request, after the view.
        """
        if use_callback and self._callback is not None:
            consumer = self._from_callback(request)
            if consumer is not None:
                return consumer
        app_globals = g._get_current_object()  # one context lookup, not two
        explicit = app_globals.get(_G_ATTRIBUTE)
        if explicit is not None:
            consumer = self._consumer(*explicit)
            if consumer is not None:
                return consumer
        identifier = app_globals.get("consumer_identifier")
        if identifier is not None:
            consumer = self._from_identifier(identifier)
            if consumer is not None:
                return consumer
        if self._header_key is not None:
            value = request.environ.get(self._header_key)
            if value:
                cache = self._header_consumers
                if value in cache:
                    return cache[value]
                return self._from_credential(value)
        return None

    def pseudonym(self, credential: str) -> str:
        cached = self._pseudonyms.get(credential)
        if cached is None:
            cached = pseudonymize(credential, self._hash_key)
            if len(self._pseudonyms) >= _PSEUDONYM_CACHE_SIZE:
                self._pseudonyms.clear()
            self._pseudonyms[credential] = cached
        return cached

    def _from_credential(self, value: str) -> Consumer | None:
        cache = self._header_consumers
        if value in cache:
            return cache[value]
        if self._header_raw:
            consumer = self._consumer(value)
        else:
            consumer = self._consumer(self.pseudonym(value.strip()))
        if len(cache) >= _PSEUDONYM_CACHE_SIZE:
            cache.clear()
        cache[value] = consumer
        return consumer

    def _from_identifier(self, identifier: Any) -> Consumer | None:
        # Apitally also accepts an object with identifier/name/group attributes.
        if hasattr(identifier, "identifier"):
            return self._consumer(
                identifier.identifier,
                getattr(identifier, "name", None),
                getattr(identifier, "group", None),
            )
        return self._consumer(identifier)

    def _from_callback(self, request: Any) -> Consumer | None:
        assert self._callback is not None
        try:
            result = self._callback(request)
        except Exception:
            _logger.debug("the consumer callback raised; ignoring it", exc_info=True)
            return None
        if result is None:
            return None
        if isinstance(result, Mapping):
            if "id" in result:
                return self._consumer(result["id"], result.get("name"), result.get("group"))
            if "api_key" in result:
                # ReadMe's shape: api_key is a credential; label is the display
                # name. The email is personal data and never exported.
                key = self._clean(result["api_key"])
                if key is None:
                    return None
                return self._consumer(self.pseudonym(key), result.get("label"))
            _logger.debug("the consumer callback returned a mapping with no id; ignoring it")
            return None
        return self._consumer(result)

    def _consumer(self, id: Any, name: Any = None, group: Any = None) -> Consumer | None:
        clean_id = self._clean(id)
        if clean_id is None:
            return None
        return Consumer(clean_id, self._clean(name), self._clean(group))

    def _clean(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            text = value
        elif isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
        else:
            _logger.debug("ignoring a consumer value of type %s", type(value).__name__)
            return None
        if not text.isprintable():
            text = _CONTROL_CHARACTERS.sub("", text)
        text = text.strip()[: self._max_length]
        return text or None


class ConsumerLabelLimiter:
    """Keeps the number of distinct consumer labels per process bounded.

    The first ``limit`` consumer ids seen keep their own label; later ones are
    folded into :data:`OVERFLOW_CONSUMER_ID`, so a client inventing ids cannot
    explode the number of series. Spans always keep the real id.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def label(self, consumer_id: str) -> str:
        if consumer_id in self._known:
            return consumer_id
        with self._lock:
            if len(self._known) < self._limit:
                self._known.add(consumer_id)
                return consumer_id
        return OVERFLOW_CONSUMER_ID
