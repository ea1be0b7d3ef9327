#!/usr/bin/env bash
# Tests under a real systemd (issue 13): mmdebstrap builds a Debian bookworm root filesystem
# that podman (scripts/deps/40-containers.sh) boots with systemd as PID 1; systemd-analyze
# (70-ops.sh) rates the units. tests/infra/systemd_host.py caches the result.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt mmdebstrap mmdebstrap
mmdebstrap --version
