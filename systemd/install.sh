#!/usr/bin/env bash
# Install model-watcher as a hardened systemd service (docs/operations.md, "Install").
#
#   systemd/install.sh --wheel dist/model_watcher-0.1.0-py3-none-any.whl \
#       --requirements dist/requirements.txt [--find-links DIR] \
#       [--runtime none|command|docker|systemd] [--engine-group NAME] [--settings FILE]
#
# Idempotent; run as root from a checkout (it installs the files of this directory). It
# never starts anything: edit /etc/model-watcher/watcher.toml, then
# `systemctl enable --now model-watcher` (or model-watcher-once.timer).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wheel="" requirements="" find_links="" runtime="none" engine_group="docker"
settings="$here/../config/watcher.toml"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) wheel=$2; shift 2 ;;
    --requirements) requirements=$2; shift 2 ;;
    --find-links) find_links=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --engine-group) engine_group=$2; shift 2 ;;
    --settings) settings=$2; shift 2 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$wheel" ] && [ -n "$requirements" ] || { echo "install.sh: --wheel and --requirements are required" >&2; exit 2; }
case "$runtime" in none|command|docker|systemd) ;; *) echo "install.sh: unknown runtime $runtime" >&2; exit 2 ;; esac

# 1. The service user: no login, no home of its own but the state directory.
id -u model-watcher >/dev/null 2>&1 ||
  useradd --system --home-dir /var/lib/model-watcher --shell /usr/sbin/nologin model-watcher

# 2. The program: a virtual environment with the locked versions (pip, no compiler needed).
[ -x /opt/model-watcher/bin/pip ] || python3 -m venv /opt/model-watcher
pip_args=(--quiet --disable-pip-version-check)
[ -n "$find_links" ] && pip_args+=(--no-index --find-links "$find_links")
/opt/model-watcher/bin/pip install "${pip_args[@]}" -r "$requirements" "$wheel"

# 3. Settings: root-owned, readable by the service user's group only; secrets 0600 root
#    (read by PID 1 through EnvironmentFile=, never by the daemon's user).
install -d -m 0750 -o root -g model-watcher /etc/model-watcher
[ -e /etc/model-watcher/watcher.toml ] ||
  install -m 0640 -o root -g model-watcher "$settings" /etc/model-watcher/watcher.toml
[ -e /etc/model-watcher/env ] || install -m 0600 -o root -g root /dev/null /etc/model-watcher/env

# 4. The units.
for unit in model-watcher.service model-watcher-once.service model-watcher-once.timer; do
  install -m 0644 "$here/$unit" /etc/systemd/system/
done

# 5. What the restart runtime needs beyond the base unit (docs/operations.md, "Runtimes").
dropin() { # dropin FILE: the runtime's drop-in for the daemon and for `once`
  for unit in model-watcher.service model-watcher-once.service; do
    install -d -m 0755 "/etc/systemd/system/$unit.d"
    install -m 0644 "$1" "/etc/systemd/system/$unit.d/runtime.conf"
  done
}
case "$runtime" in
  command)
    dropin "$here/runtime-command.conf"
    loginctl enable-linger model-watcher   # its own systemd manager runs the model server
    ;;
  docker)
    getent group "$engine_group" >/dev/null || groupadd --system "$engine_group"
    tmp=$(mktemp)
    sed "s/^SupplementaryGroups=.*/SupplementaryGroups=$engine_group/" "$here/runtime-docker.conf" > "$tmp"
    dropin "$tmp"
    rm -f "$tmp"
    if [ -e /lib/systemd/system/podman.socket ] || [ -e /usr/lib/systemd/system/podman.socket ]; then
      install -d -m 0755 /etc/systemd/system/podman.socket.d
      printf '[Socket]\nSocketGroup=%s\nSocketMode=0660\n' "$engine_group" \
        > /etc/systemd/system/podman.socket.d/model-watcher.conf
    fi
    install -d -m 0755 -o model-watcher -g root /etc/nginx/model-watcher
    install -d -m 0755 /etc/systemd/system/nginx.service.d
    install -m 0644 "$here/nginx.service.d/model-watcher.conf" /etc/systemd/system/nginx.service.d/
    install -m 0644 "$here/polkit/50-model-watcher-nginx.rules" /etc/polkit-1/rules.d/
    ;;
  systemd)
    install -m 0644 "$here/model-server@.service" /etc/systemd/system/
    install -m 0644 "$here/polkit/50-model-watcher-systemd.rules" /etc/polkit-1/rules.d/
    ;;
esac
systemctl daemon-reload
echo "model-watcher installed (runtime: $runtime). Next: edit /etc/model-watcher/watcher.toml," \
     "then systemctl enable --now model-watcher"
