"""The command runtime under the hardened unit (install.sh --runtime command): the model
server runs as a transient service of model-watcher's own user manager, so
`systemctl restart model-watcher` leaves it running and serving throughout (a request loop
counts every failure), and it does not inherit the daemon's sandbox."""

from __future__ import annotations

from tests.infra.common import free_port, http_ok, wait_until
from tests.infra.nginx import LoadLoop
from tests.integration.systemd.conftest import UNIT, Service, doc, main_pid

SERVER = "/usr/local/lib/model-server/model_server.py"


def test_restarting_the_daemon_leaves_the_model_server_serving(mw: Service) -> None:
    host = mw.host
    host.install("command")
    host.sh(f"install -D -m 0644 /src/examples/model_server.py {SERVER}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mw.settings(
        target={"kind": "http", "url": url + "/admin/reload", "timeout": 5},
        runtime={"kind": "command", "unit": "model-server-{model}", "health_url": url,
                 "start": ["/usr/bin/python3", SERVER, "serve", "--port", str(port)], "timeout": 30},
        health={"url": url + "/health", "period": 0.1, "failure_threshold": 30, "latency_ms": 1000})
    rev = mw.publish(doc("v1.0.0", runtime={"env": {"SERVER_FLAVOR": "small"}}))
    host.systemctl("start", UNIT)
    mw.wait_applied(rev)

    import httpx

    config = httpx.get(url + "/config", timeout=5).json()
    assert config["env"]["SERVER_FLAVOR"] == "small"
    server = host.show("model-server-demo.service", "MainPID", "ControlGroup", "ActiveState",
                       user=True)
    assert server["ActiveState"] == "active" and int(server["MainPID"]) == config["pid"]
    assert "/user@" in server["ControlGroup"], server  # not model-watcher.service's cgroup
    # not in the daemon's sandbox: no seccomp filter (MemoryDenyWriteExecute is one), the
    # host's devices visible (PrivateDevices hides them from the daemon)
    seccomp = host.sh(f"grep '^Seccomp:' /proc/{config['pid']}/status").stdout.split()[1]
    assert seccomp == "0"
    daemon = main_pid(mw)
    assert host.sh(f"grep '^Seccomp:' /proc/{daemon}/status").stdout.split()[1] == "2"
    devices = host.sh(f"ls /proc/{config['pid']}/root/dev | wc -l").stdout.strip()
    sandboxed = host.sh(f"ls /proc/{daemon}/root/dev | wc -l").stdout.strip()
    assert int(devices) > int(sandboxed), (devices, sandboxed)

    with LoadLoop(url + "/health", max_seconds=90) as load:
        for _ in range(2):
            before = main_pid(mw)
            host.systemctl("restart", UNIT)  # returns when the new daemon is READY
            assert main_pid(mw) not in (0, before)
        wait_until(lambda: load.result.sent > 50, 10, "requests after the restarts")
    result = load.stop()
    print(f"command runtime, 2 daemon restarts: {result.summary()}")
    assert result.failed == 0, result.summary()
    assert httpx.get(url + "/config", timeout=5).json()["pid"] == config["pid"]  # never restarted
    assert [r["outcome"] for r in mw.history() if r["revision"] == rev] == ["applied"]

    # a restart-class change still replaces the server, through the user manager
    rev2 = mw.publish(doc("v1.0.0", runtime={"env": {"SERVER_FLAVOR": "large"}}))
    mw.wait_applied(rev2)
    after = httpx.get(url + "/config", timeout=5).json()
    assert after["env"]["SERVER_FLAVOR"] == "large" and after["pid"] != config["pid"]
    assert http_ok(url + "/health")
    host.sh("runuser -u model-watcher -- sh -c 'XDG_RUNTIME_DIR=/run/user/$(id -u) "
            "systemctl --user stop model-server-demo.service'", check=False)
