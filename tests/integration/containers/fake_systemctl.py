"""A stand-in for `systemctl` (systemd cannot run as PID 1 in these test machines), enough
for the systemd runtime: `show UNIT --property=...` and `restart UNIT`, over real processes.

    fake_systemctl.py --root DIR show|restart UNIT

A unit is DIR/units/UNIT.json: {"exec": [argv...], "env_file": path}. `restart` stops the
running process (SIGTERM, then SIGKILL), reads the EnvironmentFile like systemd does, and
starts the command detached, its output in DIR/UNIT.log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] != "Z"


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out[key] = value
    return out


def main(argv: list[str]) -> int:
    root, verb, unit = Path(argv[1]), argv[2], argv[3]
    spec_path = root / "units" / f"{unit}.json"
    pid_path = root / f"{unit}.pid"
    pid = int(pid_path.read_text()) if pid_path.exists() else 0
    if verb == "show":
        loaded = spec_path.exists()
        active = bool(pid) and alive(pid)
        print(f"LoadState={'loaded' if loaded else 'not-found'}")
        print(f"ActiveState={'active' if active else 'inactive'}")
        print(f"SubState={'running' if active else 'dead'}")
        print(f"MainPID={pid if active else 0}")
        print("Result=success")
        return 0
    if verb == "restart":
        if not spec_path.exists():
            print(f"Unit {unit} not found.", file=sys.stderr)
            return 5
        spec = json.loads(spec_path.read_text())
        if pid and alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not alive(pid):
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        env = dict(os.environ)
        if spec.get("env_file") and Path(spec["env_file"]).exists():
            env.update(read_env(Path(spec["env_file"])))
        with open(root / f"{unit}.log", "ab") as log:
            proc = subprocess.Popen(spec["exec"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        pid_path.write_text(str(proc.pid))
        return 0
    print(f"unsupported: {verb}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
