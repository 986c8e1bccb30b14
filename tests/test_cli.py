"""``otel-flask-metrics check``: configuration report, problems, endpoint probe, exit codes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from otel_flask_metrics.cli import main, run_check
from otel_flask_metrics.config import OPTIONS

PREFIX = "OTEL_FLASK_METRICS_"
SECRET = "hunter2-very-secret-hash-key"


@dataclass
class Collector:
    """A stand-in OTLP/HTTP receiver: records what it was sent."""

    url: str
    status: int = 200
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)


@pytest.fixture
def collector() -> Iterator[Collector]:
    state = Collector(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            state.requests.append(("POST", self.path, self.headers.get("Content-Type")))
            status = state.status if self.path == "/v1/metrics" else 404
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    host, port = server.server_address[:2]
    state.url = f"http://{host}:{port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections: bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def check(
    capsys: pytest.CaptureFixture[str], environ: dict[str, str], **kwargs: bool
) -> tuple[int, str]:
    code = run_check(environ, **kwargs)
    out, err = capsys.readouterr()
    return code, out + err


def problem_lines(output: str) -> list[str]:
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.endswith("problem(s):"):
            count = int(line.split()[0])
            problems = [ln.strip() for ln in lines[index + 1 : index + 1 + count]]
            assert len(problems) == count
            return problems
    return []


# --- a clean environment ------------------------------------------------------------


def test_clean_environment_with_answering_endpoint(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})

    assert code == 0, output
    assert "configuration OK" in output
    assert f"OTLP endpoint: {collector.url}/v1/metrics answers (HTTP 200)" in output
    assert "problem" not in output
    # The probe really reached the endpoint, as an OTLP/HTTP protobuf export.
    assert collector.requests == [("POST", "/v1/metrics", "application/x-protobuf")]


def test_every_option_is_listed_with_its_default(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    _, output = check(capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})
    lines = output.splitlines()
    for option in OPTIONS:
        (line,) = [ln for ln in lines if ln.strip().startswith(option.variable + " = ")]
        assert line.endswith("[default]"), line
    assert f"  {PREFIX}MAX_CONSUMERS = 1000 [default]" in lines
    assert f"  {PREFIX}CONSUMER_ID_MAX_LENGTH = 128 [default]" in lines
    assert f"  {PREFIX}CONSUMER_HASH_KEY = (not set) [default]" in lines
    listed = {ln.split()[0] for ln in lines if ln.strip().startswith(PREFIX)}
    assert listed == {o.variable for o in OPTIONS}


def test_values_from_the_environment_are_marked(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            PREFIX + "MAX_CONSUMERS": "50",
            PREFIX + "CONSUMER_HEADER": "X-API-Key",
            PREFIX + "CONSUMER_CALLBACK": "tests.test_config:identify_consumer",
        },
    )
    assert code == 0, output
    lines = output.splitlines()
    assert f"  {PREFIX}MAX_CONSUMERS = 50 [env]" in lines
    assert f"  {PREFIX}CONSUMER_HEADER = 'X-API-Key' [env]" in lines
    assert f"  {PREFIX}CONSUMER_CALLBACK = tests.test_config.identify_consumer [env]" in lines
    assert f"  {PREFIX}DISABLED = False [default]" in lines


def test_distro_defaults_are_shown(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    _, output = check(
        capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "orders"}
    )
    assert "  OTEL_SERVICE_NAME = 'orders'" in output
    assert "  OTEL_TRACES_EXPORTER = 'otlp'" in output
    assert "  OTEL_EXPORTER_OTLP_PROTOCOL = 'http/protobuf'" in output


# --- problems -----------------------------------------------------------------------


def test_bad_value_exits_1_with_the_problem(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, PREFIX + "MAX_CONSUMERS": "lots"},
    )
    assert code == 1
    assert "configuration OK" not in output
    assert problem_lines(output) == [
        f"{PREFIX}MAX_CONSUMERS='lots': expected a positive integer; using the default 1000 instead"
    ]
    assert f"  {PREFIX}MAX_CONSUMERS = 1000 [default: env 'lots' rejected]" in output.splitlines()


def test_several_problems_are_all_listed(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            PREFIX + "DISABLED": "yes",
            PREFIX + "CONSUMER_CALLBACK": "nocolon",
            PREFIX + "CONSUMER_HEADDER": "X-API-Key",
        },
    )
    assert code == 1
    problems = problem_lines(output)
    assert len(problems) == 3
    assert any(p.startswith(f"{PREFIX}DISABLED='yes': expected true or false") for p in problems)
    assert any(p.startswith(f"{PREFIX}CONSUMER_CALLBACK='nocolon'") for p in problems)
    assert any(p.startswith(f"{PREFIX}CONSUMER_HEADDER=") for p in problems)


def test_unknown_variable_exits_1_with_suggestion(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, PREFIX + "CONSUMER_HEADDER": "X-API-Key"},
    )
    assert code == 1
    assert problem_lines(output) == [
        f"{PREFIX}CONSUMER_HEADDER='X-API-Key': unknown variable, ignored; "
        f"did you mean {PREFIX}CONSUMER_HEADER?"
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "otlpp", "unknown exporter 'otlpp'"),
        ("OTEL_TRACES_EXPORTER", "otlp,zipkinn", "unknown exporter 'zipkinn'"),
        ("OTEL_METRICS_EXPORTER", "prometheuss", "unknown exporter 'prometheuss'"),
        ("OTEL_LOGS_EXPORTER", "consol", "unknown exporter 'consol'"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "expected http/protobuf or grpc"),
        ("OTEL_PYTHON_LOG_HANDLER_LEVEL", "verbose", "expected a logging level"),
        # The SDK's own variables (otel_flask_metrics.sdk_variables).
        (
            "OTEL_METRIC_EXPORT_INTERVAL",
            "abc",
            "expected a positive number of milliseconds; the SDK uses 60000",
        ),
        ("OTEL_METRIC_EXPORT_INTERVAL", "0", "expected a positive number of milliseconds"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "x", "expected a positive integer"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "-5", "expected a positive number of milliseconds"),
        ("OTEL_TRACES_SAMPLER", "bogus", "unknown sampler; accepted: always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "expected a ratio from 0 to 1"),
        # Found by a new-user trial: `check` said "configuration OK" for these.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4318", "expected an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318/v1/traces", "expected an http://"),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://", "expected an http:// or https://"),
    ],
)
def test_bad_standard_variable_exits_1(
    capsys: pytest.CaptureFixture[str],
    collector: Collector,
    variable: str,
    value: str,
    message: str,
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, variable: value}
    if variable == "OTEL_TRACES_SAMPLER_ARG":
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"  # the arg is read for ratios only
    code, output = check(capsys, env)
    assert code == 1
    problems = problem_lines(output)
    assert problems, output
    assert any(p.startswith(f"{variable}={value!r}") and message in p for p in problems), problems


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_METRIC_EXPORT_INTERVAL": "5000.5", "OTEL_BSP_MAX_QUEUE_SIZE": "4096"},
        {"OTEL_TRACES_SAMPLER": "ParentBased_TraceIdRatio", "OTEL_TRACES_SAMPLER_ARG": "0"},
        # The arg of a sampler that takes none is not read: no problem.
        {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "abc"},
        # An https endpoint; and a bare host:port where gRPC (which takes it) is in force.
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector:4318/v1/traces"},
        {"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "c:4317",
         "OTEL_LOGS_EXPORTER": "none"},
    ],
)
def test_good_sdk_variables_pass(
    capsys: pytest.CaptureFixture[str], collector: Collector, env: dict[str, str]
) -> None:
    code, output = check(capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, **env})
    assert (code, problem_lines(output)) == (0, []), output


def test_bad_protocol_is_reported_once(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    """One bad variable is one problem, however many signals read it."""
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
    )
    assert code == 1
    assert problem_lines(output) == [
        "OTEL_EXPORTER_OTLP_PROTOCOL='http/json': expected http/protobuf or grpc; "
        "using the default http/protobuf instead"
    ]
    assert (
        "  OTEL_EXPORTER_OTLP_PROTOCOL = 'http/protobuf' [default: env 'http/json' rejected]"
        in output.splitlines()
    ), "the line shows what is in force, not the refused value"


def test_a_rejected_secret_is_not_shown(
    capsys: pytest.CaptureFixture[str], collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped secret accepts any text: a stricter parser reaches the rejection path."""
    import dataclasses

    from otel_flask_metrics import config

    def strict(raw: str) -> str:
        raise config.InvalidValue("expected at least 32 characters")

    monkeypatch.setattr(
        config,
        "OPTIONS",
        tuple(dataclasses.replace(o, parse=strict) if o.secret else o for o in config.OPTIONS),
    )
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, PREFIX + "CONSUMER_HASH_KEY": "hunter2-key"},
    )
    assert code == 1
    assert "hunter2" not in output
    assert (
        f"  {PREFIX}CONSUMER_HASH_KEY = (not set) [default: env *** rejected]"
        in output.splitlines()
    )


def test_grpc_without_the_extra_is_one_clear_problem(
    capsys: pytest.CaptureFixture[str], collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_flask_metrics import distro

    real = distro.entry_points

    def without_grpc(group: str) -> Any:
        return [ep for ep in real(group=group) if ep.name != "otlp_proto_grpc"]

    monkeypatch.setattr(distro, "entry_points", without_grpc)
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    )
    assert code == 1
    assert problem_lines(output) == [
        "OTEL_EXPORTER_OTLP_PROTOCOL='grpc': the gRPC exporter is not installed: pip install "
        "'otel-flask-metrics[grpc]' (or use http/protobuf); nothing is exported over OTLP until "
        "then"
    ]


def test_unknown_exporter_lists_what_is_accepted(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    _, output = check(
        capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_TRACES_EXPORTER": "otlpp"}
    )
    (problem,) = problem_lines(output)
    assert "accepted:" in problem
    for name in ("none", "otlp", "console"):
        assert name in problem


def test_bad_value_is_reported_even_when_the_endpoint_is_down(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    code, output = check(
        capsys,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port}",
            PREFIX + "PARSE_USER_AGENT": "nope",
        },
    )
    assert code == 1
    assert "does not answer" in output
    assert len(problem_lines(output)) == 1


# --- the endpoint probe ---------------------------------------------------------------


def test_unreachable_endpoint_is_only_a_note_by_default(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    code, output = check(capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": url})
    assert code == 0, output
    assert f"OTLP endpoint: {url}/v1/metrics does not answer" in output
    assert "configuration OK" in output


def test_unreachable_endpoint_fails_when_required(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    code, output = check(capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": url}, require_endpoint=True)
    assert code == 1
    assert "does not answer" in output
    assert "configuration OK" not in output


def test_answering_endpoint_passes_when_required(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}, require_endpoint=True
    )
    assert code == 0, output
    assert len(collector.requests) == 1


def test_endpoint_answering_500_fails_when_required(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    collector.status = 503
    code, output = check(
        capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}, require_endpoint=True
    )
    assert code == 1
    assert f"{collector.url}/v1/metrics answers with HTTP 503" in output


def test_metrics_endpoint_variable_is_used_as_is(
    capsys: pytest.CaptureFixture[str], collector: Collector, closed_port: int
) -> None:
    code, output = check(
        capsys,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port}",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": collector.url + "/v1/metrics",
        },
        require_endpoint=True,
    )
    assert code == 0, output
    assert collector.requests == [("POST", "/v1/metrics", "application/x-protobuf")]


def test_endpoint_with_trailing_slash(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url + "/"}, require_endpoint=True
    )
    assert code == 0, output
    assert [path for _, path, _ in collector.requests] == ["/v1/metrics"]


def test_no_probe_without_otlp_exporters(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
        },
        require_endpoint=True,
    )
    assert code == 0, output
    assert "OTLP endpoint" not in output
    assert collector.requests == []


def test_grpc_endpoint_is_not_probed(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    )
    assert code == 0, output
    assert "(grpc; not probed)" in output
    assert collector.requests == []


def test_an_endpoint_without_a_scheme_is_named_once_and_not_probed(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    endpoint = f"127.0.0.1:{closed_port}"
    code, output = check(capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert code == 1
    not_probed = "(not an http:// or https:// URL; not probed)"
    assert f"OTLP endpoint: {endpoint}/v1/metrics {not_probed}" in output
    assert "unknown url type" not in output
    assert len(problem_lines(output)) == 1, output


# --- secrets ----------------------------------------------------------------------------


def test_hash_key_is_never_printed(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            PREFIX + "CONSUMER_HASH_KEY": SECRET,
            PREFIX + "CONSUMER_HEADER": "X-API-Key",
            PREFIX + "MAX_CONSUMERS": "-1",  # so that the problem section is printed too
        },
    )
    assert code == 1
    assert SECRET not in output
    assert f"  {PREFIX}CONSUMER_HASH_KEY = (set) [env]" in output.splitlines()
    assert "public key" not in output


def test_misspelt_hash_key_variable_is_not_printed(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, PREFIX + "CONSUMER_HASH_KY": SECRET},
    )
    assert code == 1
    assert f"did you mean {PREFIX}CONSUMER_HASH_KEY?" in output
    assert SECRET not in output


def test_note_when_header_is_hashed_with_the_public_key(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    code, output = check(
        capsys,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, PREFIX + "CONSUMER_HEADER": "X-API-Key"},
    )
    assert code == 0, output
    assert f"note: {PREFIX}CONSUMER_HASH_KEY is not set" in output


# --- main() and the console script --------------------------------------------------------


def test_main_reads_the_process_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, collector: Collector
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    assert main(["check"]) == 0
    assert "configuration OK" in capsys.readouterr().out

    monkeypatch.setenv(PREFIX + "MAX_CONSUMERS", "0")
    assert main(["check"]) == 1
    assert f"{PREFIX}MAX_CONSUMERS='0'" in capsys.readouterr().out


def test_main_require_endpoint_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    assert main(["check"]) == 0
    assert main(["check", "--require-endpoint"]) == 1
    assert "does not answer" in capsys.readouterr().out


def test_main_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 2
    assert "usage: otel-flask-metrics" in capsys.readouterr().err


def _console_script() -> str:
    found = shutil.which("otel-flask-metrics") or str(
        Path(sys.executable).parent / "otel-flask-metrics"
    )
    assert Path(found).exists(), "the console script is not installed"
    return found


def test_console_script_exits_1_on_a_bad_variable(collector: Collector) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.url
    env[PREFIX + "CONSUMER_HEADDER"] = "X-API-Key"
    completed = subprocess.run(
        [_console_script(), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert (
        f"{PREFIX}CONSUMER_HEADDER='X-API-Key': unknown variable, ignored; "
        f"did you mean {PREFIX}CONSUMER_HEADER?"
    ) in completed.stdout
    assert "1 problem(s):" in completed.stdout


# --- the SDK fast path -----------------------------------------------------------------


def test_fast_path_availability_is_reported(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    code, output = check(capsys, env)
    assert code == 0, output
    assert "SDK fast path: available for this SDK" in output.splitlines()
    code, output = check(capsys, {**env, f"{PREFIX}SDK_FAST_PATH": "false"})
    assert code == 0, output
    assert "SDK fast path: off; metric attributes take the SDK's general path" in output


def test_an_sdk_the_fast_path_does_not_know_is_a_note_not_a_problem(
    capsys: pytest.CaptureFixture[str], collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.metrics._internal import _view_instrument_match

    from otel_flask_metrics import fast_attributes

    was_installed = fast_attributes.is_installed()
    fast_attributes.uninstall()
    monkeypatch.setattr(_view_instrument_match, "_hash_attributes", lambda value: repr(value))
    try:
        code, output = check(capsys, {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})
    finally:
        monkeypatch.undo()
        if was_installed:
            fast_attributes.install()
    assert code == 0, output
    assert "note: SDK fast path: this SDK's attribute handling is not the one" in output


def test_the_probe_goes_through_the_proxy_the_exporters_would_use_and_says_so(
    capsys: pytest.CaptureFixture[str], collector: Collector
) -> None:
    # The fixture stands in for the proxy: it records the absolute URL it is asked for.
    endpoint = "http://collector.invalid:4318"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "HTTP_PROXY": collector.url}
    code, output = check(capsys, env)
    assert code == 0, output
    assert [path for _, path, _ in collector.requests] == [f"{endpoint}/v1/metrics"]
    assert f"answers through the proxy in HTTP_PROXY ({collector.url}) with HTTP 404" in output


def test_a_proxy_that_does_not_answer_is_named_with_the_way_around_it(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    proxy = f"http://user:s3cret@127.0.0.1:{closed_port}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318", "http_proxy": proxy}
    code, output = check(capsys, env, require_endpoint=True)
    assert code == 1
    line = next(line for line in output.splitlines() if line.startswith("OTLP endpoint:"))
    shown = f"http://***@127.0.0.1:{closed_port}"
    assert f"does not answer through the proxy in http_proxy ({shown})" in line
    assert line.endswith("; to send to it directly, add otel-collector to NO_PROXY")
    assert "s3cret" not in output


def test_no_proxy_sends_the_probe_directly(
    capsys: pytest.CaptureFixture[str], collector: Collector, closed_port: int
) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "HTTP_PROXY": f"http://127.0.0.1:{closed_port}",
        "NO_PROXY": "127.0.0.1",
    }
    code, output = check(capsys, env, require_endpoint=True)
    assert code == 0, output
    assert f"OTLP endpoint: {collector.url}/v1/metrics answers (HTTP 200)" in output
