#!/usr/bin/env bash
# Deploy artefacts (issue 16): promtool (Debian prometheus) checks and unit-tests
# deploy/prometheus/ against a real daemon's series; zsh loads the generated completion.
# mmdebstrap (60-systemd.sh) and podman (40-containers.sh) build and run the sidecar image;
# podman-compose, build, twine and mkdocs come from uv.lock's dev group.
# No recommends (node-exporter, ...) and no service starts: the tests run promtool only.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"

missing=0
for cmd in promtool zsh; do
  command -v "$cmd" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
  apt_no_start prometheus zsh
  systemctl disable prometheus.service >/dev/null 2>&1 || true
fi
promtool --version | head -1
