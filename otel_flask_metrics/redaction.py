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

The code lives in three modules, one per part above, and this one names them
all (import from here): :mod:`.redaction_rules` (the rules, the defaults and
:func:`pseudonymize`), :mod:`.redactor` (:class:`Redactor`) and
:mod:`.redacting_processors` (the span and log record processors and
:class:`RedactingSpanExporter`).
"""

from __future__ import annotations

from .redacting_processors import (
    RedactingLogRecordProcessor,
    RedactingSpanExporter,
    RedactingSpanProcessor,
    redact_span,
)
from .redaction_rules import (
    DEFAULT_DENIED_KEYS,
    DEFAULT_MARKER,
    DEFAULT_VALUE_PATTERNS,
    RedactionRules,
    pseudonymize,
)
from .redactor import Redactor

__all__ = [
    "DEFAULT_DENIED_KEYS",
    "DEFAULT_MARKER",
    "DEFAULT_VALUE_PATTERNS",
    "RedactingLogRecordProcessor",
    "RedactingSpanExporter",
    "RedactingSpanProcessor",
    "RedactionRules",
    "Redactor",
    "pseudonymize",
    "redact_span",
]
