#!/usr/bin/env bash
# The benchmarks' baselines: etcdctl (scripts/deps/20-etcd.sh) posts through curl.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt curl curl
