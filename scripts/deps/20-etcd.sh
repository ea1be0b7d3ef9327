#!/usr/bin/env bash
# etcd 3.4 (Debian etcd-server + etcd-client) for the etcd source's integration tests.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"
need_apt etcd etcd-server
need_apt etcdctl etcd-client
