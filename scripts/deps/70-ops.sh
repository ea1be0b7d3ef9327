#!/usr/bin/env bash
# Operations tests: systemd-analyze checks the unit file offline; Chromium renders the status page.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt systemd-analyze systemd
need_apt chromium chromium
