#!/usr/bin/env bash
# Installs every system dependency the daemon's tests need (idempotent; a no-op when present).
# Each real server has its own script in scripts/deps/, run in name order.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for script in "$here"/deps/[0-9]*.sh; do
  [ -e "$script" ] || continue
  echo "== ${script#"$here"/}"
  bash "$script"
done
