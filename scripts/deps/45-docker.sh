#!/usr/bin/env bash
# Docker Engine (Debian docker.io 20.10, with its containerd) beside podman: the docker
# runtime's tests run against both engines. The tests start dockerd themselves as a plain
# process (tests/infra/dockerd.py: own data root, exec root, socket, containerd), so this
# only installs the binaries:
#   - no recommends: they would add apparmor, cgroupfs-mount (mounts cgroups at boot) and
#     needrestart (restarts services after upgrades), none of which the tests need;
#   - service starts are blocked while installing (policy-rc.d), and the units the packages
#     enable (docker.service, docker.socket, containerd.service) are disabled again, so the
#     install neither starts a system dockerd now nor at the next boot;
#   - it shares Debian's runc with podman and does not touch /etc/containers.
set -euo pipefail
source "$(dirname "$0")/_lib.bash"

missing=0
for cmd in dockerd containerd containerd-shim-runc-v2 docker-proxy docker-init; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ] \
    || missing=1
done

if [ "$missing" = 1 ]; then
  blocker=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    blocker=1
  fi
  trap 'if [ -n "$blocker" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io
  # Units are enabled by the packages' postinst; the tests run their own dockerd.
  for unit in docker.socket docker.service containerd.service; do
    systemctl disable "$unit" >/dev/null 2>&1 || true
  done
fi
dockerd --version
