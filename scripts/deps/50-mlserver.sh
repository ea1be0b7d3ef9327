#!/usr/bin/env bash
# MLServer for the model-server tests runs from a virtual environment of its own (it pins
# protobuf < 7): tests/infra/mlserver.py creates it with uv under the test cache on first
# use. Here: make sure uv is there, and warm that environment so the first test does not pay
# for it (idempotent: a no-op when the cached environment matches the pinned packages).
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -x "$root/.venv/bin/python" ]; then
  (cd "$root" && .venv/bin/python -c 'from tests.infra.mlserver import ensure_venv; print(ensure_venv())')
fi
