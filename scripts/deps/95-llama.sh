#!/usr/bin/env bash
# Waits for the llama-server build started by scripts/deps/05-llama.sh (or builds it now when
# none ran), so the tests never start on a machine without it. Fails with the build log's tail.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 "$root/tests/infra/llama_build.py" wait
