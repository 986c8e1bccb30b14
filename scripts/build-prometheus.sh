#!/usr/bin/env bash
# Builds Prometheus and promtool at the version compose.yaml pins (from the Go
# module proxy; Prometheus 3.X.Y is module version v0.3XX.Y), so the tests run
# the same Prometheus users get. Cached by version; prints the bin directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tag=$(sed -n 's|.*image: *prom/prometheus:v\([0-9.]*\).*|\1|p' "$root/compose.yaml" | head -n 1)
[ -n "$tag" ] || { echo "build-prometheus: no prom/prometheus tag in compose.yaml" >&2; exit 1; }
IFS=. read -r major minor patch <<<"$tag"
module_version=$(printf 'v0.%d%02d.%d' "$major" "$minor" "$patch")
cache="${OTEL_FLASK_METRICS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-flask-metrics}"
out="$cache/prometheus-$tag/bin"

if [ -x "$out/prometheus" ] && [ -x "$out/promtool" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build-prometheus: Go is required" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "build-prometheus: building Prometheus $tag ($module_version; a cold build takes several minutes)" >&2
(
  cd "$work"
  go mod init build-prometheus >/dev/null 2>&1
  go get "github.com/prometheus/prometheus/cmd/prometheus@$module_version" \
    "github.com/prometheus/prometheus/cmd/promtool@$module_version" >&2
  ldflags="-X github.com/prometheus/common/version.Version=$tag"
  mkdir -p bin
  go build -ldflags "$ldflags" -o bin/prometheus github.com/prometheus/prometheus/cmd/prometheus >&2
  go build -ldflags "$ldflags" -o bin/promtool github.com/prometheus/prometheus/cmd/promtool >&2
)
mkdir -p "$out"
cp "$work/bin/prometheus" "$work/bin/promtool" "$out/"
echo "$out"
