"""model-watcher.service as installed by systemd/install.sh, under a real systemd 252:
start as the service user with READY after the first reconcile, the STATUS line in
`systemctl status`, native journal fields, `systemctl reload`, and the unit's exposure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.infra.common import wait_until
from tests.infra.model_server import ModelServer
from tests.infra.systemd_host import SystemdHost
from tests.integration.systemd.conftest import UNIT, Service, doc, main_pid

MAX_EXPOSURE = 2.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ModelServer, ModelServer]]:
    a, b = ModelServer(tmp_path / "a").start(), ModelServer(tmp_path / "b").start()
    yield a, b
    a.stop()
    b.stop()


def http_target(server: ModelServer) -> dict[str, object]:
    return {"kind": "http", "url": server.url + "/admin/reload", "timeout": 5}


def exposure(host: SystemdHost, unit: str) -> float:
    out = host.sh(f"systemd-analyze security --no-pager {unit}").stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out
    return float(m[1])


def test_start_ready_status_and_journal_fields(mw: Service, servers: tuple[ModelServer, ModelServer]) -> None:
    server, _ = servers
    mw.settings(target=http_target(server),
                health={"url": server.url + "/health", "period": 0.1, "latency_ms": 1000})
    rev = mw.publish(doc("v1.0.0"))
    bad = mw.publish(doc("v1.1.0", name="broken") + b"runtme: {}\n", name="broken")
    cursor = mw.host.cursor()

    mw.host.systemctl("start", UNIT)  # returns on READY=1 (Type=notify)
    # READY came after the first reconcile: the document is applied when start returns
    assert server.config()["spec"]["version"] == "v1.0.0"
    props = mw.show("ActiveState", "SubState", "StatusText", "MainPID", "User", "NRestarts")
    assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
    user = mw.host.sh(f"stat -c %U /proc/{props['MainPID']}").stdout.strip()
    assert user == "model-watcher"
    assert props["StatusText"].endswith("; source ok"), props
    status = mw.host.systemctl("status", "--no-pager", UNIT, check=False)
    assert f"Status: \"{props['StatusText']}\"" in status, status

    # the journal holds native fields: MODEL, REVISION, PRIORITY per level, LOGGER
    def entries() -> list[dict[str, object]]:
        return [e for e in mw.host.journal(UNIT, cursor) if e.get("SYSLOG_IDENTIFIER") == "model-watcher"]

    def rejected() -> list[dict[str, object]]:  # logged at ERROR: journal priority 3
        return [e for e in entries() if e.get("MODEL") == "broken" and e.get("REVISION") == bad
                and e.get("PRIORITY") == "3" and "rejected" in str(e.get("MESSAGE"))]

    wait_until(rejected, 20, "the rejection's entry")
    assert rejected()[0]["LOGGER"] == "watcher.core.recorder"  # the only writer of outcomes
    assert "runtme" in str(rejected()[0]["REASON"])
    applied = [e for e in entries() if e.get("MODEL") == "demo" and e.get("REVISION") == rev]
    assert applied, entries()
    assert {e["PRIORITY"] for e in applied} == {"6"}  # INFO
    assert all(not str(e["MESSAGE"]).startswith("{") for e in entries())  # text, not JSON lines
    assert int(mw.host.sh(f"journalctl -u {UNIT} MODEL=demo -o cat | wc -l").stdout) >= 1

    # the base unit's exposure, as loaded by this systemd (with its own drop-ins: none)
    score = exposure(mw.host, UNIT)
    print(f"systemd-analyze security {UNIT} (base unit): {score}")
    assert score <= MAX_EXPOSURE
    assert mw.show("NRestarts")["NRestarts"] == "0"


def test_bad_settings_fail_the_start_at_once(mw: Service) -> None:
    mw.host.write("/etc/model-watcher/watcher.toml", "[source]\nkind = 'nope'\n", mode="0640",
                  owner="root:model-watcher")
    out = mw.host.sh(f"systemctl start {UNIT}", check=False)
    assert out.returncode != 0
    props = mw.show("ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert props["ActiveState"] == "failed" and props["ExecMainStatus"] == "2", props
    assert props["NRestarts"] == "0", props  # RestartPreventExitStatus=2: no pointless loop
    assert "source" in mw.host.messages(UNIT)


def test_reload_rereads_settings_or_keeps_them(mw: Service,
                                              servers: tuple[ModelServer, ModelServer]) -> None:
    a, b = servers
    health = {"period": 0.1, "latency_ms": 1000}
    mw.settings(target=http_target(a), health={"url": a.url + "/health", **health})
    mw.publish(doc("v1.0.0"))
    mw.host.systemctl("start", UNIT)
    assert a.config()["spec"]["version"] == "v1.0.0"
    pid = main_pid(mw)

    # a changed target URL takes effect: the next change goes to b, not to a
    mw.settings(target=http_target(b), health={"url": b.url + "/health", **health})
    cursor = mw.host.cursor()
    mw.host.systemctl("reload", UNIT)
    wait_until(lambda: "settings reloaded" in mw.show("StatusText")["StatusText"], 20,
               "STATUS after the reload")
    assert main_pid(mw) == pid  # reloaded, not restarted
    rev2 = mw.publish(doc("v1.0.0", temperature=0.2))
    mw.wait_applied(rev2)
    assert b.config()["spec"]["model"]["parameters"]["temperature"] == 0.2
    assert a.config()["spec"]["model"]["parameters"]["temperature"] == 0.7
    assert "settings reloaded" in mw.host.messages(UNIT, cursor)

    # a broken settings file: the running settings stay, and the daemon says so
    mw.host.write("/etc/model-watcher/watcher.toml", "[source\nbroken", mode="0640",
                  owner="root:model-watcher")
    cursor = mw.host.cursor()
    mw.host.systemctl("reload", UNIT)
    wait_until(lambda: "NOT reloaded" in mw.show("StatusText")["StatusText"], 20,
               "STATUS saying the settings were not reloaded")
    assert "settings not reloaded, keeping the running ones" in mw.host.messages(UNIT, cursor)
    assert mw.show("ActiveState")["ActiveState"] == "active" and main_pid(mw) == pid
    rev3 = mw.publish(doc("v1.0.0", temperature=0.3))
    mw.wait_applied(rev3)
    assert b.config()["spec"]["model"]["parameters"]["temperature"] == 0.3


def test_exposure_of_the_unit_and_of_each_runtime_dropin(mw: Service) -> None:
    """`systemd-analyze security` of what this systemd loads: the base unit at most 2.0,
    each runtime's drop-in reported (docs/operations.md) and held to the same bound."""
    scores = {}
    dropin = f"/etc/systemd/system/{UNIT}.d/runtime.conf"
    for runtime in ("none", "command", "docker"):
        if runtime != "none":
            mw.host.sh(f"install -D -m 0644 /src/systemd/runtime-{runtime}.conf {dropin}")
        mw.host.systemctl("daemon-reload")
        scores[runtime] = exposure(mw.host, UNIT)
    scores["once"] = exposure(mw.host, "model-watcher-once.service")
    print("systemd-analyze security: " + ", ".join(f"{k} {v}" for k, v in scores.items()))
    assert all(score <= MAX_EXPOSURE for score in scores.values()), scores
