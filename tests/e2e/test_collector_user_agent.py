"""The bundled Collector names browsers and operating systems from user_agent.original.

The distro sends only ``user_agent.original`` unless an app opts into in-process
parsing, so the shipped Collector config (``transform/user-agent``) derives
``user_agent.name`` and ``user_agent.os.name`` for traces. It must keep the
names a span already carries, add nothing it cannot name ("Other"), and never
drop a span over a statement that fails.

The Collector is built from the manifest and runs the shipped config plus the
file exporter; spans go in over OTLP/HTTP from the Python SDK, in one request,
and the test reads back what the Collector exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.e2e.file_export import exported_spans, file_export_stack

from stack_processes import wait_until  # type: ignore[import-not-found]

pytestmark = pytest.mark.e2e

ORIGINAL = "user_agent.original"
NAME = "user_agent.name"
OS_NAME = "user_agent.os.name"

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)

# Span name -> (attributes sent, (user_agent.name, user_agent.os.name) exported;
# None: absent).
CASES: dict[str, tuple[dict[str, Any], tuple[str | None, str | None]]] = {
    "chrome-on-linux": ({ORIGINAL: CHROME_LINUX}, ("Chrome", "Linux")),
    "iphone-safari": ({ORIGINAL: IPHONE_SAFARI}, ("Mobile Safari", "iOS")),
    # An app that parses in process: its names win, and the Collector adds none.
    "parsed-in-process": ({ORIGINAL: CHROME_LINUX, NAME: "Keep"}, ("Keep", None)),
    # uap-core's curl rule names the client; no OS is known, so none is set.
    "curl-ish": ({ORIGINAL: "curl-ish/1.0 ???"}, ("curl", None)),
    # Nothing known: the parser says "Other" for both, and nothing is set.
    "unknown": ({ORIGINAL: "???"}, (None, None)),
    # Only the first 512 bytes are parsed (as in the distro): this browser is
    # named too late; the attribute itself arrives whole.
    "long": ({ORIGINAL: "x" * 512 + " " + CHROME_LINUX}, (None, None)),
    "no-user-agent": ({"http.route": "/items"}, (None, None)),
    # UserAgent() fails on a non-string; the span (and its batch) still arrives.
    "not-a-string": ({ORIGINAL: 42}, (None, None)),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Attributes of each case's span as the Collector exported it, by span name."""
    work = tmp_path_factory.mktemp("user-agent")
    stack, export_dir = file_export_stack(work, with_alertmanager=False)
    stack.start()
    try:
        yield _send_and_read_back(stack.otlp_http_endpoint, export_dir)
    finally:
        stack.stop()


def _send_and_read_back(otlp_http_endpoint: str, export_dir: Path) -> dict[str, dict[str, Any]]:
    finished = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-user-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(finished))
    tracer = provider.get_tracer(__name__)
    for name, (attributes, _) in CASES.items():
        tracer.start_span(name, kind=SpanKind.SERVER, attributes=attributes).end()
    provider.shutdown()

    exporter = OTLPSpanExporter(endpoint=f"{otlp_http_endpoint}/v1/traces", timeout=10)
    try:
        assert exporter.export(finished.get_finished_spans()) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()

    def by_name() -> dict[str, dict[str, Any]]:
        return {span["name"]: span["attrs"] for span in exported_spans(export_dir)}

    wait_until(lambda: by_name().keys() >= CASES.keys(), 30, "every span in the file export")
    return by_name()


@pytest.mark.parametrize("case", CASES)
def test_user_agent_names_are_derived_by_the_collector(
    exported: dict[str, dict[str, Any]], case: str
) -> None:
    sent, (name, os_name) = CASES[case]
    attributes = exported[case]
    assert (attributes.get(NAME), attributes.get(OS_NAME)) == (name, os_name)
    # What was sent arrives unchanged (OTLP JSON writes integers as strings),
    # and the parsed map's other keys (version, os.name) are not copied.
    arrived = {key: str(attributes.get(key)) for key in sent}
    assert arrived == {key: str(value) for key, value in sent.items()}
    assert attributes.keys() - sent.keys() <= {NAME, OS_NAME}
