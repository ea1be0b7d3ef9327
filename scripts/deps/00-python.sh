#!/usr/bin/env bash
# uv (from PyPI) manages the project's virtual environment from the committed uv.lock.
set -euo pipefail
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
