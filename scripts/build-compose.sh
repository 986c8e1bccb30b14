#!/usr/bin/env bash
# Builds Docker Compose, the implementation `docker compose` runs (v2 and its
# successors; here v5), from the Go module proxy, for the compose end-to-end
# test. Cached by version; prints the binary.
set -euo pipefail

version=v5.6.0
module=github.com/docker/compose/v5
# The version flag of Compose's own Makefile, so `docker-compose version` tells.
exec bash "$(dirname "$0")/build-go-module.sh" "$module" "$version" ./cmd docker-compose \
  "-X $module/internal.Version=$version"
