#!/usr/bin/env bash
# llama.cpp's llama-server (tests/integration/llama): built from the pinned PyPI sdist of
# llama-cpp-python when the cached binary for that version is missing (about 5 minutes on
# 2 cores, once per machine). The build starts here, in the background, so that it overlaps
# the mostly network-bound installs that follow; scripts/deps/95-llama.sh waits for it.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt cmake cmake
need_apt g++ g++
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 "$root/tests/infra/llama_build.py" start
