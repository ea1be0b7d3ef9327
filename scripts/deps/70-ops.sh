#!/usr/bin/env bash
# Operations tests (issue 7): systemd-analyze checks the unit file offline.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt systemd-analyze systemd
