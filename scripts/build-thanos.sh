#!/usr/bin/env bash
# Builds Thanos (receive and query: the scalable metrics store of compose.thanos.yaml
# and `scripts/stack.py --store thanos`) at the version compose.thanos.yaml pins,
# from the Go module proxy, as upstream's .promu.yml builds it: with the tags
# netgo and slicelabels. Without slicelabels Prometheus' string-based labels are
# compiled in, which Thanos' protobuf code does not expect: `thanos receive`
# panics on the first StoreAPI call (docs/metrics-store-probe.md). Thanos
# v0.42.5 needs go >= 1.26.10, so that toolchain (served by the proxy) is used
# for this build only. Cached by version; prints the binary's path.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tag=$(sed -n 's|.*image: *quay.io/thanos/thanos:v\([0-9.]*\).*|\1|p' "$root/compose.thanos.yaml" | head -n 1)
[ -n "$tag" ] || { echo "build-thanos: no quay.io/thanos/thanos tag in compose.thanos.yaml" >&2; exit 1; }
GOTOOLCHAIN=go1.26.10 GO_BUILD_TAGS=netgo,slicelabels \
  exec bash "$root/scripts/build-go-module.sh" github.com/thanos-io/thanos "v$tag" ./cmd/thanos thanos \
  "-X github.com/prometheus/common/version.Version=$tag"
