#!/usr/bin/env bash
# A Docker engine for the compose end-to-end test (tests/e2e/test_compose_up.py).
#
#   bash scripts/docker-engine.sh start   # prints the DOCKER_HOST to use
#   bash scripts/docker-engine.sh stop    # stops the engine this script started
#
# `start` uses the engine DOCKER_HOST (or the default socket) already points to
# when one answers. Otherwise it installs Debian's docker.io when dockerd is
# missing and starts dockerd with its data, socket and log under the cache
# folder, so images built once are kept for the next run. Waits are bounded.
# Where no engine can run (no root, no dockerd), it prints nothing, says why
# on stderr and exits 1; the test then skips with that reason.
set -euo pipefail

cache="${OTEL_FLASK_METRICS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-flask-metrics}"
dir="$cache/docker"
socket="$dir/docker.sock"
pidfile="$dir/dockerd.pid"
log="$dir/dockerd.log"
wait_seconds=60

answers() { timeout 10 docker -H "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  command -v docker >/dev/null || need_package=1
  for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "unix://$socket"; do
    if [ -n "$host" ] && command -v docker >/dev/null && answers "$host"; then
      echo "$host"
      return 0
    fi
  done
  if ! command -v dockerd >/dev/null || [ -n "${need_package:-}" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "docker-engine: dockerd is not installed and installing docker.io needs root" >&2; return 1; }
    timeout 300 apt-get update -qq || { echo "docker-engine: apt-get update failed" >&2; return 1; }
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends \
      docker.io >/dev/null || { echo "docker-engine: apt-get install docker.io failed" >&2; return 1; }
  fi
  [ "$(id -u)" -eq 0 ] || { echo "docker-engine: starting dockerd needs root" >&2; return 1; }
  mkdir -p "$dir/data" "$dir/exec"
  # An engine left by an interrupted run: stop it before starting a new one.
  stop >/dev/null 2>&1 || true
  rm -f "$socket"
  nohup dockerd \
    --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$pidfile" \
    --host "unix://$socket" >"$log" 2>&1 &
  for _ in $(seq "$wait_seconds"); do
    if answers "unix://$socket"; then
      echo "unix://$socket"
      return 0
    fi
    kill -0 "$!" 2>/dev/null || break
    sleep 1
  done
  echo "docker-engine: dockerd did not answer within ${wait_seconds}s; the end of $log:" >&2
  tail -n 5 "$log" >&2 || true
  stop >/dev/null 2>&1 || true
  return 1
}

stop() {
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  # A pidfile left by a crash may name a process that is no dockerd now.
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
    rm -f "$pidfile"
    return 0
  fi
  kill "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
  for _ in $(seq 30); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
