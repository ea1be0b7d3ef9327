# Sourced by scripts/deps/*.sh: install Debian packages only when a command is missing.
apt_updated=""
need_apt() { # need_apt COMMAND PACKAGE...
  local cmd=$1; shift
  if command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ]; then return 0; fi
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}
