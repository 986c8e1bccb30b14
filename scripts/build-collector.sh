#!/usr/bin/env bash
# Builds the OpenTelemetry Collector named by collector-config/builder-manifest.yaml
# with the OpenTelemetry Collector Builder, and caches the binary by the manifest's
# hash: a warm run is a file check, a changed manifest triggers a rebuild.
# Prints the binary's path on stdout (everything else goes to stderr).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
manifest="$root/collector-config/builder-manifest.yaml"
cache="${OTEL_FLASK_METRICS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-flask-metrics}"
version=$(sed -n 's/^  version: *//p' "$manifest" | head -n 1)
hash=$(sha256sum "$manifest" | cut -c1-16)
out="$cache/otelcol-$version-$hash"
binary="$out/otelcol-flask-metrics"

if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi

command -v go >/dev/null || { echo "build-collector: Go is required (https://go.dev/dl/)" >&2; exit 1; }
gobin=$(go env GOPATH)/bin
builder="$gobin/builder"
if ! "$builder" version 2>/dev/null | grep -q "$version"; then
  echo "build-collector: installing the Collector Builder v$version" >&2
  go install "go.opentelemetry.io/collector/cmd/builder@v$version" >&2
fi

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^  output_path:.*|  output_path: $work/src|" "$manifest" > "$work/manifest.yaml"
echo "build-collector: building the Collector v$version (a cold build takes several minutes)" >&2
"$builder" --config "$work/manifest.yaml" >&2
cp "$work/src/otelcol-flask-metrics" "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "$binary"
