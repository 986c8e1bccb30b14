#!/usr/bin/env bash
# Builds Jaeger v2 at the version compose.yaml pins (from the Go module proxy;
# Jaeger 2.X.Y is module version v1.(63+X).Y, the two tags of one release), so
# the tests run the same Jaeger users get. Cached by version; prints the bin
# directory. The module carries no UI assets: the binary serves Jaeger's
# placeholder page on / while its query API (/api/...) works as in the image.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tag=$(sed -n 's|.*image: *jaegertracing/jaeger:\([0-9][0-9.]*\).*|\1|p' "$root/compose.yaml" | head -n 1)
[ -n "$tag" ] || { echo "build-jaeger: no jaegertracing/jaeger tag in compose.yaml" >&2; exit 1; }
IFS=. read -r major minor patch <<<"$tag"
[ "$major" = 2 ] || { echo "build-jaeger: Jaeger $tag is not a 2.X.Y release" >&2; exit 1; }
module_version=$(printf 'v1.%d.%d' "$((63 + minor))" "$patch")
cache="${OTEL_FLASK_METRICS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-flask-metrics}"
out="$cache/jaeger-$tag/bin"

if [ -x "$out/jaeger" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build-jaeger: Go is required" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "build-jaeger: building Jaeger $tag ($module_version; a cold build takes several minutes)" >&2
(
  cd "$work"
  go mod init build-jaeger >/dev/null 2>&1
  # Bounded, so a proxy that stops answering fails the build instead of
  # hanging the test command.
  timeout 900 go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$module_version" >&2
  # The same -X flags as Jaeger's scripts/makefiles/BuildInfo.mk: the release
  # tag (what `jaeger version`, `jaeger --version` and the service.version of
  # its own telemetry report), its commit and that commit's date, here read
  # from the proxy instead of git.
  info=$(go list -m \
    -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}} {{with .Origin}}{{.Hash}}{{end}}' \
    "github.com/jaegertracing/jaeger@$module_version")
  read -r date commit <<<"$info"
  pkg=github.com/jaegertracing/jaeger/internal/version
  ldflags="-X $pkg.latestVersion=v$tag -X $pkg.commitSHA=$commit -X $pkg.date=$date"
  mkdir -p bin
  # CGO off and -trimpath, as the release binaries in the image are built.
  CGO_ENABLED=0 timeout 1800 go build -trimpath -ldflags "$ldflags" -o bin/jaeger \
    github.com/jaegertracing/jaeger/cmd/jaeger >&2
)
mkdir -p "$out"
# Copied under a temporary name first, so an interrupted copy never leaves an
# executable that the check above would take for a finished build.
cp "$work/bin/jaeger" "$out/.jaeger.$$"
mv -f "$out/.jaeger.$$" "$out/jaeger"
echo "$out"
