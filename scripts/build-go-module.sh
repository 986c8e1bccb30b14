#!/usr/bin/env bash
# Builds one command of a Go module at an exact version from the Go module
# proxy, inside the module itself (so its go.mod, replace directives included,
# is the one that counts: `go install` refuses modules that have them), static
# (CGO off) and -trimpath as release binaries are. Cached by name and version;
# prints the binary's path. GO_BUILD_TAGS (optional, comma-separated) is passed
# to `go build -tags`, for modules whose release builds need tags; GOTOOLCHAIN
# in the caller's environment reaches `go` as usual (a module that needs a newer
# Go than the installed one: the proxy serves toolchains too).
#
#   bash scripts/build-go-module.sh MODULE VERSION PACKAGE NAME [LDFLAGS]
#   bash scripts/build-go-module.sh github.com/prometheus/alertmanager v0.28.1 \
#     ./cmd/alertmanager alertmanager "-X github.com/prometheus/common/version.Version=0.28.1"
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 MODULE VERSION PACKAGE NAME [LDFLAGS]" >&2; exit 2; }
module=$1 version=$2 package=$3 name=$4 ldflags=${5:-}
cache="${OTEL_FLASK_METRICS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-flask-metrics}"
out="$cache/$name-$version/bin/$name"

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build-go-module: Go is required to build $name" >&2; exit 1; }
echo "build-go-module: building $name from $module@$version" >&2
# Bounded, so a proxy that stops answering fails the build instead of hanging.
# On failure `go mod download -json` puts the reason in the JSON's "Error".
json=$(timeout 600 go mod download -json "$module@$version" 2>&1) || true
dir=$(printf '%s\n' "$json" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
if [ ! -d "$dir" ]; then
  echo "build-go-module: go mod download $module@$version failed:" >&2
  printf '%s\n' "$json" | tail -n 5 >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
(
  cd "$dir"
  tags=()
  [ -z "${GO_BUILD_TAGS:-}" ] || tags=(-tags "$GO_BUILD_TAGS")
  CGO_ENABLED=0 timeout 1800 go build "${tags[@]}" -trimpath -ldflags "-s -w $ldflags" -o "$out.$$" "$package" >&2
)
# Renamed into place, so an interrupted build never leaves a binary the check
# above would take for a finished one.
mv -f "$out.$$" "$out"
echo "$out"
