#!/usr/bin/env bash
# Container tests: podman (Engine API socket) with runc, the Debian registry, nginx, and a
# static busybox to build images FROM scratch. Service starts are blocked while installing:
# the tests run their own instances on free loopback ports.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"

missing=0
for cmd in podman runc conmon netavark iptables newuidmap docker-registry nginx; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ] \
    || [ -x "/usr/lib/podman/$cmd" ] || missing=1
done
dpkg -s busybox-static >/dev/null 2>&1 || missing=1  # the dynamic busybox cannot run FROM scratch

if [ "$missing" = 1 ]; then
  blocker=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    blocker=1
  fi
  trap 'if [ -n "$blocker" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  # need_apt runs apt-get update once; podman's first alternative is crun, which fails here.
  need_apt __model_watcher_containers__ podman runc conmon netavark aardvark-dns iptables \
    uidmap fuse-overlayfs slirp4netns docker-registry nginx busybox-static
fi
podman --version
