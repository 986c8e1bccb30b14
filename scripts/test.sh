#!/usr/bin/env bash
# The test command: installs everything the tests need, then runs them all.
#   - Python deps into .venv (the package itself, editable, with its test extras),
#     with the pip that `python3 -m venv` gives: never upgraded first, so the
#     resolver users have is the one that must solve our dependencies
#     (tests/packaging also installs the built wheel with pip 23.2, 24.0, 25.x,
#     26.x and uv in clean venvs)
#   - Prometheus, promtool, Alertmanager, amtool and the blackbox exporter (the
#     uptime probes) from Debian, if missing
#   - the OpenTelemetry Collector from collector-config/builder-manifest.yaml
#     (built with Go and the Collector Builder; cached by manifest hash)
#   - VictoriaLogs (the log store) at the version compose.yaml pins, likewise
#   - Jaeger at the version compose.yaml pins, built from the Go module proxy
#     (cached by version; scripts/stack.py runs it too)
#   - Thanos (receive, query) at the version compose.thanos.yaml pins, built from
#     the Go module proxy with upstream's build tags (cached by version)
#   - Prometheus and promtool at the version compose.yaml pins, built from the
#     Go module proxy (cached by version) and put first on PATH; Debian's
#     Prometheus 2.42 is only a fallback for scripts/stack.py
#   - a Docker engine (Debian's docker.io, installed if missing; dockerd started
#     with its data in the cache and stopped at the end), Docker Compose built
#     from the Go module proxy, and the images compose.yaml pins, made here
#     from the same software (scripts/stack_images.py): the compose end-to-end
#     test runs `docker compose up` of compose.yaml on it. Where no engine can
#     run, that test skips and says why.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k consumers`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

step "system packages"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
# The static busybox (the images' shell and wget), not the dynamic one.
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v prometheus-blackbox-exporter >/dev/null || need+=(prometheus-blackbox-exporter)
command -v docker-compose >/dev/null || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
prometheus --version 2>&1 | head -n 1

step "python environment"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip --version
.venv/bin/python -m pip install -q -e ".[test]"
export PATH="$PWD/.venv/bin:$PATH"

step "OpenTelemetry Collector"
command -v go >/dev/null || { echo "Go is required to build the Collector: https://go.dev/dl/"; exit 1; }
collector=$(bash scripts/build-collector.sh)
echo "$collector"

step "VictoriaLogs (the version compose.yaml pins)"
victorialogs_bin=$(bash scripts/build-victorialogs.sh)
"$victorialogs_bin/victoria-logs" -version

step "Jaeger (the version compose.yaml pins)"
jaeger_bin=$(bash scripts/build-jaeger.sh)
"$jaeger_bin/jaeger" --version 2>/dev/null | head -n 1

step "Thanos (the version compose.thanos.yaml pins; tests/e2e/test_thanos_store.py)"
thanos=$(bash scripts/build-thanos.sh)
"$thanos" --version 2>&1 | head -n 1

step "Prometheus (the version compose.yaml pins)"
prometheus_bin=$(bash scripts/build-prometheus.sh)
export PATH="$prometheus_bin:$PATH"
prometheus --version 2>&1 | head -n 1

step "Docker engine, Docker Compose and the stack's images"
if engine=$(bash scripts/docker-engine.sh start); then
  trap 'bash scripts/docker-engine.sh stop' EXIT
  export DOCKER_HOST="$engine"
  docker version --format 'engine {{.Server.Version}} at '"$DOCKER_HOST"
  OFM_DOCKER_COMPOSE=$(bash scripts/build-compose.sh)
  export OFM_DOCKER_COMPOSE
  "$OFM_DOCKER_COMPOSE" version
  python scripts/stack_images.py \
    || export OFM_DOCKER_UNAVAILABLE="scripts/stack_images.py could not make the images (its message is above)"
else
  export OFM_DOCKER_UNAVAILABLE="scripts/docker-engine.sh could not start one (its message is above)"
fi
if [ -n "${OFM_DOCKER_UNAVAILABLE:-}" ]; then
  echo "the compose end-to-end test will skip: $OFM_DOCKER_UNAVAILABLE"
  # CI (.ci/run) asks for the engine: a skip there would hide the test.
  [ -z "${OFM_REQUIRE_DOCKER:-}" ] || { echo "OFM_REQUIRE_DOCKER is set: stopping"; exit 1; }
fi

step "static checks (ruff, mypy --strict on the package)"
ruff check otel_flask_metrics
mypy

step "tests"
status=0
python -m pytest -q -p no:cacheprovider "$@" || status=$?
echo "test command took $(( $(date +%s) - started ))s"
exit $status
