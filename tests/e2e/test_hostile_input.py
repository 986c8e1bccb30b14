"""Malformed and hostile requests against real gunicorn servers, with and without us.

Two ``gunicorn`` servers (one sync worker each) run the same app: one bare, one
under ``opentelemetry-instrument``. Every hostile request is sent, as raw bytes
over a plain socket, to both, and the two raw responses must be identical once
the headers that legitimately differ (``Date``, ``X-Worker-Pid``) are dropped:
the instrumentation may observe a request, never change its answer.

Clients that leave mid-request or mid-response have no answer to compare; for
them both servers must keep serving. At the end the instrumented server is
stopped gracefully (so its exporters flush) and its log is compared with the
bare one's: no traceback through our package, no error the bare server does not
have. What was exported must carry sanitised, capped consumer ids and one server
span for every request that reached the app.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from stack_processes import (  # type: ignore[import-not-found]
    LOOPBACK,
    Service,
    free_port,
    wait_until,
)

from tests.e2e.otlp_sink import OtlpSink, attributes

APPS = Path(__file__).resolve().parents[1] / "apps"
pytestmark = pytest.mark.e2e

IO_TIMEOUT = 15.0  # seconds, for any single socket operation
CONSUMER_ID_MAX_LENGTH = 64  # characters, OTEL_FLASK_METRICS_CONSUMER_ID_MAX_LENGTH
UPLOAD_SIZE = 50 * 1024 * 1024  # bytes
UPLOAD_CHUNK = 1024 * 1024  # bytes
# Headers that differ between two servers for reasons that are not ours.
VOLATILE_HEADERS = frozenset((b"date", b"x-worker-pid"))
# The consumer attributes we export, on spans and on metric points.
CONSUMER_KEYS = ("api.consumer.id", "api.consumer.name", "api.consumer.group")
SERVER_SPAN = 2  # SPAN_KIND_SERVER in OTLP
CASE_HEADER = "http.request.header.x-case"


# --- raw HTTP ---------------------------------------------------------------


def raw_request(
    request_line: bytes, *headers: bytes, case: str, body: bytes = b"", host: bytes = b"127.0.0.1"
) -> bytes:
    """A request with ``Connection: close`` and the case id, exactly as given otherwise."""
    lines = [request_line, b"Host: " + host, b"Connection: close", b"X-Case: " + case.encode()]
    lines += headers
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def read_until_close(sock: socket.socket) -> bytes:
    received = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            return bytes(received)
        received += data


def normalise(response: bytes) -> bytes:
    """The raw response without the headers that legitimately differ."""
    head, sep, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in VOLATILE_HEADERS:
            continue
        if name == b"allow":
            # Werkzeug builds it from a set: its order follows each process's
            # string hash seed, with or without us.
            line = b"Allow: " + b", ".join(sorted(m.strip() for m in value.split(b",")))
        kept.append(line)
    return b"\r\n".join(kept) + sep + body


def reached_app(response: bytes) -> bool:
    """The app's after_request hook marks every response Flask produced."""
    head = response.partition(b"\r\n\r\n")[0].lower()
    return b"\r\nx-worker-pid:" in head


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@dataclass(frozen=True)
class Case:
    """One hostile request; ``chunks`` makes its bytes afresh for each server."""

    id: str
    chunks: Callable[[], Iterable[bytes]]
    # Half-close after sending: "the body ends here" while the answer can still be read.
    half_close: bool = False
    # The consumer id the request should be exported with (None: none at all).
    consumer_id: str | None = None
    expect_status: int | None = None

    def exchange(self, port: int) -> bytes:
        with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT) as sock:
            for chunk in self.chunks():
                sock.sendall(chunk)
            if self.half_close:
                sock.shutdown(socket.SHUT_WR)
            return read_until_close(sock)


def case(
    id: str,
    request_line: bytes,
    *headers: bytes,
    body: bytes = b"",
    host: bytes = b"127.0.0.1",
    half_close: bool = False,
    consumer_id: str | None = None,
    expect_status: int | None = None,
) -> Case:
    data = raw_request(request_line, *headers, case=id, body=body, host=host)
    return Case(id, lambda: [data], half_close, consumer_id, expect_status)


def upload_50mb() -> Iterator[bytes]:
    yield raw_request(
        b"POST /upload HTTP/1.1",
        b"Content-Type: application/octet-stream",
        b"Content-Length: " + str(UPLOAD_SIZE).encode(),
        b"X-API-Key: uploader",
        case="upload-50mb",
    )
    chunk = b"u" * UPLOAD_CHUNK
    for _ in range(UPLOAD_SIZE // UPLOAD_CHUNK):
        yield chunk


LONG_KEY = "k" * 6000
INJECTION = b"abc%0d%0aSet-Cookie: x=1\tdef\x85ghi\x9bjkl"
LONG_TENANT = b"t\x85" * 2000

CASES = [
    case(
        "post-invalid-json", b"POST /items HTTP/1.1",
        b"Content-Type: application/json", b"Content-Length: 18", b"X-API-Key: json-key",
        body=b'{"name": "widget",', consumer_id="json-key", expect_status=400,
    ),
    case(
        "post-json-invalid-utf8", b"POST /items HTTP/1.1",
        b"Content-Type: application/json", b"Content-Length: 14", b"X-API-Key: json-key",
        body=b'{"name": "\xff\xfe"}', consumer_id="json-key", expect_status=400,
    ),
    case(
        "header-invalid-utf8-api-key", b"GET /items/1 HTTP/1.1", b"X-API-Key: \xff\xfe\xfdkey",
        consumer_id="\xff\xfe\xfdkey", expect_status=200,
    ),
    case(
        "header-invalid-utf8-other", b"GET /items/1 HTTP/1.1", b"X-Anything: \xc3\x28\xff",
        b"Accept: \xff/\xfe", expect_status=200,
    ),
    case(
        "header-invalid-utf8-customer", b"GET /items/2 HTTP/1.1", b"X-Customer: cust\xff\x85",
        consumer_id="cust\xff", expect_status=200,
    ),
    case(
        "query-percent-invalid-utf8", b"GET /items/1?q=%ff%fe&x=%85%0d%0a HTTP/1.1",
        expect_status=200,
    ),
    case("query-raw-0xff", b"GET /items/1?q=\xff\xfe HTTP/1.1", expect_status=400),
    case("path-raw-0xff", b"GET /items/\xff HTTP/1.1", expect_status=400),
    case("path-percent-0xff", b"GET /items/%ff%fe HTTP/1.1", expect_status=404),
    case("path-percent-controls", b"GET /items/%85%0d%0a%00 HTTP/1.1", expect_status=404),
    Case("upload-50mb", upload_50mb, consumer_id="uploader", expect_status=200),
    case(
        "chunked-invalid-size", b"POST /upload HTTP/1.1", b"Transfer-Encoding: chunked",
        b"X-API-Key: chunky", body=b"zz\r\nabc\r\n0\r\n\r\n", consumer_id="chunky",
        expect_status=500,  # gunicorn raises while the app reads: Flask answers 500
    ),
    case(
        "chunked-longer-than-sent", b"POST /upload HTTP/1.1", b"Transfer-Encoding: chunked",
        b"X-API-Key: chunky", body=b"100\r\nabc", half_close=True, consumer_id="chunky",
        expect_status=500,
    ),
    case(
        "chunked-missing-terminator", b"POST /upload HTTP/1.1", b"Transfer-Encoding: chunked",
        b"X-API-Key: chunky", body=b"3\r\nabcXY0\r\n\r\n", consumer_id="chunky",
        expect_status=500,
    ),
    case(
        "content-length-invalid", b"POST /upload HTTP/1.1", b"Content-Length: abc",
        body=b"abc", expect_status=400,
    ),
    case("head", b"HEAD /items/1 HTTP/1.1", b"X-API-Key: head-key", expect_status=200,
         consumer_id="head-key"),
    case("options", b"OPTIONS /items/1 HTTP/1.1", b"X-API-Key: options-key",
         expect_status=200, consumer_id="options-key"),
    case("unknown-method", b"PURGE /items/1 HTTP/1.1", b"X-API-Key: purge-key",
         expect_status=405, consumer_id="purge-key"),
    case(
        "api-key-6000-chars", b"GET /items/1 HTTP/1.1", b"X-API-Key: " + LONG_KEY.encode(),
        consumer_id=LONG_KEY[:CONSUMER_ID_MAX_LENGTH], expect_status=200,
    ),
    case(
        "api-key-injection-controls", b"GET /items/1 HTTP/1.1", b"X-API-Key: " + INJECTION,
        consumer_id="abc%0d%0aSet-Cookie: x=1defghijkl", expect_status=200,
    ),
    # DEL is refused by gunicorn itself (RFC 9110 5.5), before the app.
    case(
        "api-key-del", b"GET /items/1 HTTP/1.1", b"X-API-Key: abc\x7fdef", expect_status=400,
    ),
    case(
        "api-key-only-controls", b"GET /items/1 HTTP/1.1", b"X-API-Key: \x85\x9b\t\x85\x9f",
        consumer_id=None, expect_status=200,
    ),
    case(
        "customer-injection-long", b"GET /items/1 HTTP/1.1",
        b"X-Customer: \t " + INJECTION * 100,
        consumer_id=("abc%0d%0aSet-Cookie: x=1defghijkl" * 3)[:CONSUMER_ID_MAX_LENGTH],
        expect_status=200,
    ),
    case(
        "tenant-long-controls", b"GET /items/1 HTTP/1.1", b"X-Tenant: " + LONG_TENANT,
        consumer_id="t" * CONSUMER_ID_MAX_LENGTH, expect_status=200,
    ),
    # The Host header becomes server.address/server.port on the span. "²³" are
    # digits to str.isdigit() but not to int(); the huge port does not fit the
    # int64 an OTLP attribute holds.
    case(
        "host-non-ascii-port", b"GET /items/1 HTTP/1.1", host=b"127.0.0.1:\xb2\xb3",
        expect_status=200,
    ),
    case(
        "host-huge-port", b"GET /items/1 HTTP/1.1", host=b"127.0.0.1:99999999999999999999999",
        expect_status=200,
    ),
    case(
        "host-controls", b"GET /items/1 HTTP/1.1", host=b"\x85evil\x9b.example", expect_status=200
    ),
    case(
        "malformed-trace-context", b"GET /items/1 HTTP/1.1",
        b"traceparent: 00-ZZZZ" + b"f" * 60 + b"-01",
        b"tracestate: " + b"=,\xff" * 1000,
        b"baggage: \xff=\xfe;;;=,%%%" + b"k=v," * 500,
        expect_status=200,
    ),
    case(
        "user-agent-pathological", b"GET /items/1 HTTP/1.1",
        b"User-Agent: " + b"Mozilla/5.0 (" * 500 + b"\x85\xff",
        expect_status=200,
    ),
]


# --- the two servers ----------------------------------------------------------


@dataclass
class Servers:
    sink: OtlpSink
    bare: Service
    instrumented: Service
    bare_port: int
    instrumented_port: int
    # case id -> status of the answer, for the requests that reached the app
    reached_app: dict[str, int] = field(default_factory=dict)
    consumer_ids: dict[str, str | None] = field(default_factory=dict)


def _gunicorn(
    name: str, port: int, log_dir: Path, env: dict[str, str], instrument: bool
) -> Service:
    argv = [
        shutil.which("gunicorn") or "gunicorn",
        "--bind", f"{LOOPBACK}:{port}", "--workers", "1", "--worker-class", "sync",
        "--timeout", "30", "--chdir", str(APPS),
        # One control socket per user ($HOME/.gunicorn) would be shared with any
        # other gunicorn running at the time; these servers need none.
        "--no-control-socket",
        "hostile:app",
    ]
    if instrument:
        argv.insert(0, shutil.which("opentelemetry-instrument") or "opentelemetry-instrument")
    return Service(name, argv, log_dir, env=env, ready_url=f"http://{LOOPBACK}:{port}/health")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    log_dir = tmp_path_factory.mktemp("hostile-logs")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with OtlpSink() as sink:
        instrumented_env = {
            **base_env,
            "OTEL_SERVICE_NAME": "hostile-api",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_FLASK_METRICS_CONSUMER_HEADER": "X-API-Key",
            "OTEL_FLASK_METRICS_CONSUMER_HEADER_RAW": "true",
            "OTEL_FLASK_METRICS_CONSUMER_ID_MAX_LENGTH": str(CONSUMER_ID_MAX_LENGTH),
            # Lets the test find the span of each case.
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "X-Case",
        }
        bare_port, instrumented_port = free_port(), free_port()
        bare = _gunicorn("bare", bare_port, log_dir, base_env, instrument=False)
        instrumented = _gunicorn(
            "instrumented", instrumented_port, log_dir, instrumented_env, instrument=True
        )
        try:
            bare.start()
            instrumented.start()
            bare.wait_ready(60)
            instrumented.wait_ready(60)
            yield Servers(sink, bare, instrumented, bare_port, instrumented_port)
        finally:
            instrumented.stop()
            bare.stop()


# --- logs -------------------------------------------------------------------

_TIMESTAMP = re.compile(r"\[\d{4}-\d\d-\d\d[ T][\d:.,]+(?: [+-]\d{4})?\]")
_PID = re.compile(r"\[\d+\]|pid: \d+|pid \d+")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_ERROR_LINE = re.compile(r"\[(ERROR|CRITICAL)\]|\b(ERROR|CRITICAL)\b")


def _normalise_line(line: str, ports: Iterable[int]) -> str:
    line = _TIMESTAMP.sub("[TIME]", line)
    line = _PID.sub("[PID]", line)
    line = _ADDRESS.sub("0x?", line)
    for port in ports:
        line = line.replace(str(port), "PORT")
    return line.strip()


def tracebacks(log: str) -> list[list[str]]:
    """Every traceback in a log, each as its lines up to the exception line."""
    found: list[list[str]] = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last):"):
            continue
        block = [line]
        for following in lines[i + 1 :]:
            block.append(following)
            if following and not following[0].isspace():
                break
        found.append(block)
    return found


def raised_in_our_code(log: str) -> list[str]:
    """Tracebacks whose exception was raised in our package (its innermost frame).

    A traceback may pass *through* our ``wsgi.input`` wrapper when the server
    raises while the app reads a malformed body; that one is the server's, and
    the bare server logs the same exception (checked at the end).
    """
    found = []
    for block in tracebacks(log):
        frames = [line for line in block if line.startswith("  File ")]
        if frames and "otel_flask_metrics" in frames[-1]:
            found.append("\n".join(block))
    return found


def error_lines(log: str, ports: Iterable[int]) -> set[str]:
    return {_normalise_line(line, ports) for line in log.splitlines() if _ERROR_LINE.search(line)}


def read_log(service: Service) -> str:
    return str(service.log_path.read_text(errors="replace"))


# --- the cases --------------------------------------------------------------


@pytest.mark.parametrize("hostile", CASES, ids=[c.id for c in CASES])
def test_hostile_request_gets_the_same_response(servers: Servers, hostile: Case) -> None:
    bare = hostile.exchange(servers.bare_port)
    instrumented = hostile.exchange(servers.instrumented_port)

    assert bare, "the bare server answered"
    if hostile.expect_status is not None:
        assert status_of(bare) == hostile.expect_status, bare[:300]
    # Text (latin-1 keeps every byte) so a difference shows as a readable diff.
    assert normalise(instrumented).decode("latin-1") == normalise(bare).decode("latin-1")
    if hostile.id == "upload-50mb":
        assert bare.endswith(b'{"received":52428800}\n'), bare[-200:]
    if reached_app(bare):
        servers.reached_app[hostile.id] = status_of(bare)
        servers.consumer_ids[hostile.id] = hostile.consumer_id


@dataclass(frozen=True)
class Disconnect:
    id: str
    path: bytes  # request line target
    method: bytes = b"GET"
    headers: tuple[bytes, ...] = ()
    body: bytes = b""
    complete_head: bool = True
    read_first: int = 0  # bytes to read before closing; 0 closes right after sending

    def run(self, port: int) -> None:
        request_line = self.method + b" " + self.path + b" HTTP/1.1"
        head = raw_request(request_line, *self.headers, case=self.id, body=self.body)
        if not self.complete_head:
            head = head[: head.index(b"X-Case")] + b"X-Ca"
        with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT) as sock:
            sock.sendall(head)
            if self.read_first:
                received = b""
                while len(received) < self.read_first:
                    data = sock.recv(self.read_first - len(received))
                    assert data, "the server closed before sending anything"
                    received += data
            # RST instead of FIN when unread data is pending: an abrupt client.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


DISCONNECTS = [
    Disconnect(
        "mid-body", b"/upload", b"POST",
        (b"Content-Length: 100000", b"X-API-Key: leaver"), body=b"0123456789",
    ),
    Disconnect("mid-headers", b"/items/1", complete_head=False),
    Disconnect("mid-stream", b"/stream", headers=(b"X-API-Key: leaver",), read_first=20),
    Disconnect("mid-big-stream", b"/big-stream", headers=(b"X-API-Key: leaver",), read_first=20),
    Disconnect("before-response", b"/slow", headers=(b"X-API-Key: leaver",)),
]


def _health(port: int) -> int:
    request = raw_request(b"GET /health HTTP/1.1", case="health-after-disconnect")
    with socket.create_connection((LOOPBACK, port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(request)
        return status_of(read_until_close(sock))


@pytest.mark.parametrize("disconnect", DISCONNECTS, ids=[d.id for d in DISCONNECTS])
def test_client_disconnect_leaves_servers_serving(servers: Servers, disconnect: Disconnect) -> None:
    for port in (servers.bare_port, servers.instrumented_port):
        disconnect.run(port)
    for port in (servers.bare_port, servers.instrumented_port):
        assert _health(port) == 200
    for service in (servers.bare, servers.instrumented):
        assert raised_in_our_code(read_log(service)) == [], service.name


# --- after all cases: logs and exports ---------------------------------------


def _exported_consumer_values(sink: OtlpSink) -> list[tuple[str, str, Any]]:
    """(where, key, value) for every consumer attribute on spans and metric points."""
    found: list[tuple[str, str, Any]] = []
    for _resource, span in sink.spans():
        span_attributes = attributes(span.attributes)
        for key in CONSUMER_KEYS:
            if key in span_attributes:
                found.append((f"span {span.name}", key, span_attributes[key]))
    names = {
        metric.name
        for request in list(sink.metrics)
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }
    for name in sorted(names):
        for _resource, point_attributes, _point in sink.latest_points(name):
            for key in CONSUMER_KEYS:
                if key in point_attributes:
                    found.append((f"metric {name}", key, point_attributes[key]))
    return found


def _spans_by_case(sink: OtlpSink) -> dict[str, list[dict[str, Any]]]:
    by_case: dict[str, list[dict[str, Any]]] = {}
    for _resource, span in sink.spans():
        if span.kind != SERVER_SPAN:
            continue
        span_attributes = attributes(span.attributes)
        case_header = span_attributes.get(CASE_HEADER)
        if case_header:
            by_case.setdefault(case_header[0], []).append(span_attributes)
    return by_case


@dataclass(frozen=True)
class Finished:
    """Both servers stopped; their logs, and what the instrumented one exported."""

    sink: OtlpSink
    bare_log: str
    instrumented_log: str
    ports: tuple[int, int]
    reached_app: dict[str, int]
    consumer_ids: dict[str, str | None]


@pytest.fixture(scope="module")
def finished(servers: Servers) -> Finished:
    """Requested only by the tests below, so it runs after every request case."""
    sink = servers.sink
    expected = dict(servers.reached_app)

    def every_case_has_a_span() -> bool:
        return set(expected) <= set(_spans_by_case(sink))

    try:
        wait_until(every_case_has_a_span, 10, "a server span for every case that reached the app")
    except TimeoutError:
        pass  # the span test says which spans are missing or incomplete
    finally:
        servers.instrumented.stop()  # SIGTERM: exporters flush what they still hold
    servers.bare.stop()
    return Finished(
        sink,
        read_log(servers.bare),
        read_log(servers.instrumented),
        (servers.bare_port, servers.instrumented_port),
        expected,
        dict(servers.consumer_ids),
    )


def test_instrumented_log_has_no_error_the_bare_one_lacks(finished: Finished) -> None:
    assert raised_in_our_code(finished.instrumented_log) == []
    ports = finished.ports
    assert error_lines(finished.instrumented_log, ports) <= error_lines(finished.bare_log, ports)
    # Also catches errors logged without a level (the SDK's exporters log through
    # logging's last-resort handler, which prints the bare message).
    bare_exceptions = {block[-1] for block in tracebacks(finished.bare_log)}
    extra = [
        "\n".join(block)
        for block in tracebacks(finished.instrumented_log)
        if block[-1] not in bare_exceptions
    ]
    assert extra == [], "tracebacks only the instrumented server logged"


def test_exported_consumer_ids_are_sanitised_and_capped(finished: Finished) -> None:
    exported = _exported_consumer_values(finished.sink)
    assert any(key == "api.consumer.id" for _, key, _ in exported)
    for where, key, value in exported:
        assert isinstance(value, str), (where, key, value)
        assert len(value) <= CONSUMER_ID_MAX_LENGTH, (where, key, len(value))
        assert "\r" not in value and "\n" not in value, (where, key, value)
        controls = [c for c in value if unicodedata.category(c) == "Cc"]
        assert controls == [], (where, key, value)
        assert value == value.strip() and value, (where, key, value)


def test_every_request_that_reached_the_app_has_its_server_span(finished: Finished) -> None:
    """One server span each, with the real status and the consumer it should have."""
    assert finished.reached_app, "run with the request cases: they are what this checks"
    sink = finished.sink
    by_case = _spans_by_case(sink)
    unlabelled = [
        a for a in (attributes(s.attributes) for _, s in sink.spans() if s.kind == SERVER_SPAN)
        if CASE_HEADER not in a and a.get("url.path") != "/health"
    ]
    problems: list[tuple[Any, ...]] = []
    for case_id, status in finished.reached_app.items():
        spans = by_case.get(case_id, [])
        if len(spans) != 1:
            problems.append((case_id, f"{len(spans)} spans"))
            continue
        span_attributes = spans[0]
        if span_attributes.get("http.response.status_code") != status:
            problems.append((case_id, "status", status, span_attributes))
        if span_attributes.get("api.consumer.id") != finished.consumer_ids[case_id]:
            problems.append((case_id, "consumer", finished.consumer_ids[case_id], span_attributes))
    assert problems == [], f"server spans without their attributes: {unlabelled}"
