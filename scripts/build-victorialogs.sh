#!/usr/bin/env bash
# Builds the VictoriaLogs server (victoria-logs) at the version compose.yaml
# pins (from the Go module proxy: module github.com/VictoriaMetrics/VictoriaLogs,
# the same vX.Y.Z as the victoriametrics/victoria-logs image tag), so the tests
# run the same VictoriaLogs users get. Cached by version; prints the bin directory.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tag=$(sed -n 's|.*image: *victoriametrics/victoria-logs:\(v[0-9][0-9.]*\).*|\1|p' "$root/compose.yaml" | head -n 1)
[ -n "$tag" ] || { echo "build-victorialogs: no victoriametrics/victoria-logs tag in compose.yaml" >&2; exit 1; }
module=github.com/VictoriaMetrics/VictoriaLogs
cache="${OTEL_FLASK_METRICS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-flask-metrics}"
out="$cache/victorialogs-$tag/bin"

if [ -x "$out/victoria-logs" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build-victorialogs: Go is required" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "build-victorialogs: building VictoriaLogs $tag (a cold build takes a few minutes)" >&2
(
  cd "$work"
  go mod init build-victorialogs >/dev/null 2>&1
  # Bounded, so a proxy that stops answering fails the build instead of
  # hanging the test command.
  timeout 900 go get "$module/app/victoria-logs@$tag" >&2
  # The -X flag of VictoriaLogs' Makefile (GO_BUILDINFO), in the shape of a
  # release build, victoria-logs-<date>-<time>-tags-<tag>-0-g<commit>, which
  # `victoria-logs -version` prints and whose vX.Y.Z the server reports as
  # short_version in vm_app_version. The date is the tag's commit time from
  # the proxy instead of the build time, so rebuilds are identical.
  info=$(go list -m \
    -f '{{.Time.UTC.Format "20060102-150405"}} {{with .Origin}}{{.Hash}}{{end}}' \
    "$module@$tag")
  read -r date commit <<<"$info"
  version="victoria-logs-$date-tags-$tag-0-g${commit:0:10}"
  [ -n "$commit" ] || version="victoria-logs-$date-tags-$tag"
  ldflags="-X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=$version"
  mkdir -p bin
  # -trimpath and the netgo/osusergo tags as the release binaries are built;
  # CGO off, as upstream's "pure" builds, so no C toolchain is needed (zstd
  # then comes from klauspost/compress instead of cgo gozstd; same format).
  CGO_ENABLED=0 timeout 1800 go build -trimpath -tags 'netgo osusergo' \
    -ldflags "$ldflags" -o bin/victoria-logs "$module/app/victoria-logs" >&2
)
mkdir -p "$out"
# Copied under a temporary name first, so an interrupted copy never leaves an
# executable that the check above would take for a finished build.
cp "$work/bin/victoria-logs" "$out/.victoria-logs.$$"
mv -f "$out/.victoria-logs.$$" "$out/victoria-logs"
echo "$out"
