#!/usr/bin/env bash
# `make test`: install every real server the tests need, then lint, type-check and run the
# whole suite (unit + integration) in one pytest run. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$HOME/.local/bin:$PATH"
uv sync --frozen --all-extras
uv run --frozen ruff check watcher tests bench examples deploy docs/hooks
uv run --frozen mypy watcher
exec uv run --frozen pytest tests/unit tests/fuzz tests/integration "$@"
