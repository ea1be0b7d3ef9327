"""The systemd runtime under the real manager (install.sh --runtime systemd): the daemon, as
its own unprivileged user, restarts `model-server@demo.service` through systemctl (D-Bus,
allowed by the polkit rule for that template only), gates it on health, and on a failed
gate restarts it with the previous settings. Replaces the former stand-in systemctl."""

from __future__ import annotations

import httpx

from tests.infra.common import free_port
from tests.integration.systemd.conftest import UNIT, Service, doc

SERVER = "/usr/local/lib/model-server/model_server.py"
TEMPLATE_DROPIN = "/etc/systemd/system/model-server@demo.service.d/exec.conf"


def test_restart_class_changes_replace_the_unit_with_gate_and_rollback(mw: Service) -> None:
    host = mw.host
    host.install("systemd")
    host.sh(f"install -D -m 0644 /src/examples/model_server.py {SERVER}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the operator points the shipped template at the server (docs/operations.md)
    host.write(TEMPLATE_DROPIN, f"[Service]\nEnvironment=PORT={port}\nExecStart=\n"
               f"ExecStart=/usr/bin/python3 {SERVER} serve --port ${{PORT}}\n")
    host.systemctl("daemon-reload")
    mw.settings(
        runtime={"kind": "systemd", "unit": "model-server@{model}.service", "base_url": url,
                 "env_file": "/var/lib/model-watcher/units/{model}.env", "timeout": 30},
        health={"url": url + "/health", "period": 0.1, "failure_threshold": 20,
                "latency_ms": 1000})

    def served() -> dict[str, str]:
        env: dict[str, str] = httpx.get(url + "/config", timeout=5).json()["env"]
        return env

    def server_pid() -> int:
        return int(host.show("model-server@demo.service", "MainPID")["MainPID"])

    rev1 = mw.publish(doc("v1.0.0", runtime={"env": {"SERVER_FLAVOR": "small"}}))
    host.systemctl("start", UNIT)
    mw.wait_applied(rev1)
    assert served()["SERVER_FLAVOR"] == "small"
    assert served()["MODEL_WATCHER_REVISION"] == rev1
    pid1 = server_pid()
    user = host.sh(f"stat -c %U /proc/{pid1}").stdout.strip()
    assert user != "model-watcher"  # the template's own (dynamic) user, not the daemon's
    env_file = host.sh("stat -c '%U %a' /var/lib/model-watcher/units/demo.env").stdout.split()
    assert env_file == ["model-watcher", "600"]

    # a restart-class change: the unit is restarted with the new environment, gated
    rev2 = mw.publish(doc("v1.1.0", runtime={"env": {"SERVER_FLAVOR": "large"}}))
    mw.wait_applied(rev2)
    assert served()["SERVER_FLAVOR"] == "large" and served()["MODEL_WATCHER_VERSION"] == "v1.1.0"
    pid2 = server_pid()
    assert pid2 != pid1

    # one whose server never answers (it cannot parse its port): the gate fails, and the
    # unit is restarted with the previous spec, which serves again
    rev3 = mw.publish(doc("v1.2.0", runtime={"env": {"SERVER_FLAVOR": "large", "PORT": "x"}}))
    row = mw.wait_outcome(rev3, "failed")
    assert "health" in str(row.get("reason")), row
    assert mw.applied() == rev2
    assert served()["MODEL_WATCHER_VERSION"] == "v1.1.0"
    assert server_pid() not in (0, pid2)
    assert host.show("model-server@demo.service", "ActiveState")["ActiveState"] == "active"
    log = host.messages("model-server@demo.service")
    assert "invalid int value: 'x'" in log, log[-2000:]
    host.systemctl("stop", "model-server@demo.service")
