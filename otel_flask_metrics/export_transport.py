"""The HTTP client the OTLP/HTTP exporters send with: urllib3 where it changes nothing.

opentelemetry-exporter-otlp-proto-http sends through ``requests`` by default,
and importing ``requests`` costs a worker about 4 MiB of RSS (``requests``,
``charset_normalizer``, ``idna``, ``certifi``), a quarter of everything the
instrumentation adds. The exporters already ship the alternative: the
``urllib3`` transport of opentelemetry-exporter-http-transport, which
upstream is making the default (open-telemetry/opentelemetry-python#5219),
taken through the exporters' ``_transport`` argument until it is.

It is used only where it sends exactly what ``requests`` would:

- the endpoint is plain ``http://``: TLS trust (``requests`` takes certifi's
  bundle and ``REQUESTS_CA_BUNDLE``, urllib3 the system's) never comes into it;
- no proxy variable (``HTTP_PROXY``, ``ALL_PROXY``) applies to the endpoint's
  host: ``requests`` honours them, a bare urllib3 pool does not;
- no ``OTEL_PYTHON_EXPORTER_OTLP_HTTP_*CREDENTIAL_PROVIDER`` is set: those
  hand the exporter a ``requests.Session``.

Everywhere else, and with an exporter release that no longer takes
``_transport``, the exporter is built exactly as the SDK builds it.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

#: The default endpoint of the OTLP/HTTP exporters, as they resolve it.
DEFAULT_ENDPOINT = "http://localhost:4318"
#: The entry point of the exporters this applies to (``otlp`` with http/protobuf).
HTTP_EXPORTER_ENTRY = "otlp_proto_http"
_CREDENTIAL_PREFIX = "OTEL_PYTHON_EXPORTER_OTLP_HTTP"


def signal_endpoint(signal: str, env: Mapping[str, str]) -> str:
    """The URL base the exporter of ``signal`` sends to (its own variable first)."""
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or DEFAULT_ENDPOINT
    )


def urllib3_sends_the_same(signal: str, env: Mapping[str, str]) -> bool:
    """Whether the urllib3 transport sends what ``requests`` would (module docstring)."""
    if any(
        name.startswith(_CREDENTIAL_PREFIX) and name.endswith("CREDENTIAL_PROVIDER") and value
        for name, value in env.items()
    ):
        return False
    endpoint = signal_endpoint(signal, env)
    url = urllib.parse.urlsplit(endpoint.strip())
    if url.scheme.lower() != "http" or not url.hostname:
        return False
    return applicable_proxy(endpoint, env) is None


def applicable_proxy(endpoint: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The proxy variable ``requests`` would send to ``endpoint`` through: (name, value).

    ``HTTP_PROXY`` (any case) or ``ALL_PROXY`` for an ``http://`` endpoint,
    ``HTTPS_PROXY`` or ``ALL_PROXY`` for ``https://``, unless ``NO_PROXY``
    names its host.
    """
    url = urllib.parse.urlsplit(endpoint.strip())
    scheme = url.scheme.lower()
    if scheme not in ("http", "https") or not url.hostname:
        return None
    proxies = sorted(
        (_proxy_scheme(name) != scheme, name, proxy)  # the scheme's own variable first
        for name, proxy in env.items()
        if proxy and _proxy_scheme(name) in (scheme, "all")
    )
    if not proxies:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if _bypassed(url.hostname, url.port, no_proxy):
        return None
    _, name, proxy = proxies[0]
    return name, proxy


def _proxy_scheme(name: str) -> str | None:
    lowered = name.lower()
    return lowered.removesuffix("_proxy") if lowered.endswith("_proxy") else None


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """``NO_PROXY`` read as ``requests`` reads it (through the standard library)."""
    if no_proxy.strip() == "*":
        return True
    address = f"{host}:{port}" if port else host
    proxy_bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    return bool(proxy_bypass(address, {"no": no_proxy}))


def build_exporter(factory: Callable[..., Any], signal: str, env: Mapping[str, str]) -> Any:
    """The OTLP/HTTP exporter of ``signal``, on urllib3 where that sends the same."""
    if not urllib3_sends_the_same(signal, env):
        return factory()
    try:
        from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
    except ImportError:  # a release without it: upstream's default
        return factory()
    try:
        return factory(_transport=Urllib3HTTPTransport(verify=True, cert=None))
    except TypeError:  # an exporter release without the argument
        return factory()
