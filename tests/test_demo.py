"""The demo of compose.yaml: the API's routes, and traffic.py against a real gunicorn.

gunicorn runs here without opentelemetry-instrument: these tests check the
demo itself; the distro's behaviour under gunicorn is the e2e tests' job.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from flask.testing import FlaskClient
from stack_processes import Service, free_port  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"

READY_TIMEOUT = 20.0  # seconds for gunicorn to answer /health
TRAFFIC_TIMEOUT = 60.0  # seconds for traffic.py --requests 40
TRAFFIC_REQUESTS = 40


def _load(name: str) -> ModuleType:
    """A demo script as a module: demo/ is no package, gunicorn imports it as ``app``."""
    spec = importlib.util.spec_from_file_location(f"_demo_{name}", DEMO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def demo_app() -> ModuleType:
    return _load("app")  # fresh items for each test


@pytest.fixture
def client(demo_app: ModuleType) -> FlaskClient:
    return demo_app.app.test_client()


# ---- the API ------------------------------------------------------------------


def test_items(client: FlaskClient) -> None:
    listing = client.get("/api/items").get_json()
    assert listing["count"] == len(listing["items"]) == 5
    assert client.get("/api/items/2").get_json()["name"] == "Rocket skates"
    missing = client.get("/api/items/4242")
    assert missing.status_code == 404
    assert missing.get_json()["error"] == "Not Found"


def test_create_item(client: FlaskClient) -> None:
    created = client.post("/api/items", json={"name": " Jet pack ", "price": 12, "tags": ["new"]})
    assert created.status_code == 201
    assert created.get_json() == {"id": 6, "name": "Jet pack", "price": 12.0, "tags": ["new"]}
    assert created.headers["Location"] == "/api/items/6"
    assert client.get("/api/items/6").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"price": 1},
        {"name": "", "price": 1},
        {"name": "x" * 101, "price": 1},
        {"name": "x", "price": -1},
        {"name": "x", "price": True},
        {"name": "x", "price": 1, "tags": "new"},
        ["not", "an", "object"],
    ],
)
def test_create_item_rejects_invalid_bodies(client: FlaskClient, body: object) -> None:
    response = client.post("/api/items", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "Bad Request"


def test_create_item_rejects_a_non_json_body(client: FlaskClient) -> None:
    assert client.post("/api/items", data="name=x").status_code == 400


def test_export_is_streamed_in_chunks(client: FlaskClient, demo_app: ModuleType) -> None:
    response = client.get("/api/reports/export")
    assert response.is_streamed
    assert len(list(response.response)) == demo_app.EXPORT_CHUNKS + 1
    assert response.mimetype == "text/csv"
    text = client.get("/api/reports/export").get_data(as_text=True)
    assert text.startswith("id,name,price\n1,Anvil,49.90\n")


def test_slow_sleeps_within_its_range(client: FlaskClient, demo_app: ModuleType) -> None:
    slept = client.get("/api/slow").get_json()["slept_ms"] / 1000
    assert demo_app.SLOW_MIN <= slept <= demo_app.SLOW_MAX


def test_flaky_fails_by_raising(
    client: FlaskClient, demo_app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_app.random, "random", lambda: 0.0)
    assert client.get("/api/flaky").status_code == 500
    monkeypatch.setattr(demo_app.random, "random", lambda: 0.99)
    assert client.get("/api/flaky").status_code == 200


def test_known_api_keys_name_their_consumer(
    demo_app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object, object]] = []
    monkeypatch.setattr(
        demo_app, "set_consumer", lambda id, name=None, group=None: calls.append((id, name, group))
    )
    client = demo_app.app.test_client()
    for key in ("demo-key-acme", "demo-key-globex", "demo-key-initech"):
        assert client.get("/api/items", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/api/items").status_code == 200  # anonymous: no consumer set
    assert calls == [
        ("acme", "Acme Corp", "enterprise"),
        ("globex", "Globex", "pro"),
        ("initech", "Initech", "free"),
    ]


def test_unknown_api_keys_are_refused_and_anonymous_calls_allowed(client: FlaskClient) -> None:
    assert client.get("/api/items", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/api/items").status_code == 200
    assert client.get("/health", headers={"X-API-Key": "wrong"}).status_code == 200


def test_traffic_uses_the_demo_keys_and_header(demo_app: ModuleType) -> None:
    traffic = _load("traffic")
    assert traffic.API_KEY_HEADER == demo_app.API_KEY_HEADER == "X-API-Key"
    keys = {key for key, _ in traffic.CALLERS}
    assert set(demo_app.API_KEYS) < keys and None in keys
    assert all(item_id in range(1, 6) for item_id in traffic.KNOWN_ITEM_IDS)


@pytest.mark.parametrize("target", ["ftp://127.0.0.1", "127.0.0.1:8000", "http://h/?q=1"])
def test_traffic_refuses_a_bad_target(target: str) -> None:
    traffic = _load("traffic")
    with pytest.raises(SystemExit) as stopped:
        traffic.parse_args(["--target", target])
    assert stopped.value.code == 2


# ---- traffic.py against gunicorn -----------------------------------------------


@pytest.fixture
def gunicorn_target(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = Service(
        "demo-gunicorn",
        [
            *(sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"),
            *("--workers", "2", "--chdir", "demo", "app:app"),
        ],
        tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},  # gunicorn's control socket goes there
        cwd=ROOT,
        ready_url=f"http://127.0.0.1:{port}/health",
    ).start()
    try:
        server.wait_ready(READY_TIMEOUT)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.mark.e2e
def test_traffic_drives_the_demo_under_gunicorn(gunicorn_target: str) -> None:
    result = subprocess.run(
        [
            *(sys.executable, str(DEMO / "traffic.py"), "--target", gunicorn_target),
            *("--requests", str(TRAFFIC_REQUESTS), "--rate", "50", "--timeout", "5", "--seed", "7"),
        ],
        capture_output=True,
        text=True,
        timeout=TRAFFIC_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    summary = lines[0]
    assert re.search(rf"\btraffic: {TRAFFIC_REQUESTS} requests\b", summary), summary
    counts = {name: int(count) for name, count in re.findall(r"(\w+)=(\d+)", summary)}
    assert counts["errors"] == 0
    assert counts["2xx"] + counts["3xx"] + counts["4xx"] + counts["5xx"] == TRAFFIC_REQUESTS
    assert counts["2xx"] > 0 and counts["4xx"] > 0  # the mix has invalid bodies and unknown ids
    callers = ("acme", "globex", "initech", "anonymous", "revoked")
    assert sum(counts[name] for name in callers) + counts["health"] == TRAFFIC_REQUESTS, summary
    assert "demo-key" not in summary  # the keys are credentials: named, never printed


def test_alert_webhook_prints_one_line_per_alert() -> None:
    webhook = _load("alert_webhook")
    notification = {
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "ApiHighErrorRate",
                    "severity": "critical",
                    "service_name": "demo-api",
                    "http_route": "/api/flaky",
                },
                "annotations": {"summary": "5xx above 5%"},
            },
            {"status": "resolved", "labels": {"alertname": "ApiNoTraffic"}},
        ],
    }
    assert webhook.describe(notification) == [
        "[FIRING] ApiHighErrorRate severity=critical service_name=demo-api"
        " http_route=/api/flaky: 5xx above 5%",
        "[RESOLVED] ApiNoTraffic severity=?",
    ]
