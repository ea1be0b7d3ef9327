"""The daemon on a local directory against the real example server: hot, restart, fallback, rollback."""

from __future__ import annotations

import json
import signal
import time

from tests.infra.common import wait_until
from tests.integration.foundation.conftest import Env, doc


def test_hot_swap_changes_the_served_parameters_without_restart(env: Env) -> None:
    r1 = env.write(doc(temperature=0.7))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    pid = env.server.pid()
    r2 = env.write(doc(temperature=0.2))
    m = env.daemon.wait_applied("demo", r2)
    assert env.served()["model"]["parameters"]["temperature"] == 0.2
    assert env.server.pid() == pid, "a hot-class change must not restart the server"
    row = env.daemon.wait_outcome("demo", r2, "applied")
    assert row["plan"].startswith("hot (model.parameters.temperature")
    assert m["applied_version"] == "v1.0.0"


def test_restart_class_change_goes_through_the_runtime(env: Env) -> None:
    r1 = env.write(doc(flavor="small"))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    pid = env.server.pid()
    r2 = env.write(doc(flavor="large", version="v1.1.0"))
    env.daemon.wait_applied("demo", r2)
    assert env.server.pid() != pid
    assert env.served()["runtime"]["env"]["SERVER_FLAVOR"] == "large"
    plan = env.daemon.wait_outcome("demo", r2, "applied")["plan"]
    assert plan.startswith("restart (model.uri, runtime.env.SERVER_FLAVOR")


def test_failed_hot_swap_falls_back_to_a_restart(env: Env) -> None:
    r1 = env.write(doc())
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    pid = env.server.pid()
    # The server refuses this reload (422); the restart path starts it with the new spec.
    r2 = env.write(doc(temperature=0.3, reject_reload=True))
    env.daemon.wait_applied("demo", r2)
    assert env.server.pid() != pid
    assert env.served()["model"]["parameters"]["temperature"] == 0.3
    assert "restart" in env.daemon.wait_outcome("demo", r2, "applied")["plan"]
    assert any("falling back to a restart" in r["event"] for r in env.daemon.log_records())


def test_failed_health_gate_rolls_back_to_the_last_good_spec(env: Env) -> None:
    r1 = env.write(doc(temperature=0.7))
    env.daemon.settings["runtime"] = None
    del env.daemon.settings["runtime"]
    env.daemon.write_settings()
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    r2 = env.write(doc(temperature=0.9, fail_health=True, version="v1.0.1"))
    row = env.daemon.wait_outcome("demo", r2, "failed")
    assert "health gate failed" in row["reason"] and "503" in row["reason"]
    status = env.daemon.status()["models"]["demo"]
    assert status["applied_revision"] == r1 and status["last_outcome"] == "failed"
    assert env.served()["model"]["parameters"]["temperature"] == 0.7, "the previous spec must serve again"
    failed = [a for a in env.daemon.audit() if a["action"] == "failed"]
    assert failed and failed[-1]["restored"] == "v1.0.0", "the audit says what was put back"


def test_failed_restart_returns_to_the_last_good_spec(env: Env) -> None:
    r1 = env.write(doc(flavor="small"))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    r2 = env.write(doc(flavor="broken", fail_health=True, version="v1.0.1"))
    row = env.daemon.wait_outcome("demo", r2, "failed")
    assert "health gate failed" in row["reason"]
    wait_until(lambda: env.served().get("runtime", {}).get("env", {}).get("SERVER_FLAVOR") == "small", 10,
               "the previous spec to be restarted")
    assert env.daemon.status()["models"]["demo"]["applied_revision"] == r1


def test_no_reapply_after_a_daemon_restart(env: Env) -> None:
    r1 = env.write(doc())
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    reloads = env.server.config()["reloads"]
    env.daemon.stop()
    env.daemon.start()
    env.daemon.wait_ready()  # every document handled or found handled: a re-apply shows now
    assert env.server.config()["reloads"] == reloads
    assert env.daemon.count("demo", r1) == 1


def test_changes_made_while_down_are_applied_once_at_start(env: Env) -> None:
    r1 = env.write(doc(temperature=0.1))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    env.daemon.stop()
    revisions = [env.write(doc(temperature=t)) for t in (0.2, 0.3, 0.4)]
    env.daemon.start()
    env.daemon.wait_applied("demo", revisions[-1])
    assert env.served()["model"]["parameters"]["temperature"] == 0.4
    assert env.daemon.count("demo", revisions[-1]) == 1
    assert all(env.daemon.count("demo", r) == 0 for r in revisions[:-1])


def test_a_burst_of_100_writes_ends_in_the_last_content(env: Env) -> None:
    r0 = env.write(doc(temperature=0.0))
    env.daemon.start()
    env.daemon.wait_applied("demo", r0)
    last = ""
    for i in range(1, 101):
        last = env.write(doc(temperature=i / 100))
    env.daemon.wait_applied("demo", last)
    assert env.served()["model"]["parameters"]["temperature"] == 1.0
    applies = [r for r in env.daemon.history("demo") if r["outcome"] == "applied"]
    assert len(applies) < 20, f"coalescing should merge the burst, saw {len(applies)} applies"


def test_kill_9_mid_apply_converges_on_restart(env: Env) -> None:
    r1 = env.write(doc(flavor="small"))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    # A restart command that hangs: the daemon is killed while it runs.
    good_runtime = env.daemon.settings["runtime"]
    env.daemon.settings["runtime"] = {**good_runtime, "start": ["{python}", "-c", "import time; time.sleep(60)"]}
    env.daemon.write_settings()
    env.daemon.stop()
    env.daemon.start()
    r2 = env.write(doc(flavor="large", version="v1.1.0"))
    wait_until(lambda: env.daemon.status()["intents"] == ["demo"], 10, "the apply to be in flight")
    env.daemon.kill9()
    env.daemon.settings["runtime"] = good_runtime
    env.daemon.write_settings()
    env.daemon.start()
    env.daemon.wait_applied("demo", r2)
    assert env.daemon.status()["intents"] == []
    assert env.served()["runtime"]["env"]["SERVER_FLAVOR"] == "large"
    assert env.daemon.count("demo", r2, "applied") == 1
    assert "interrupted" in env.daemon.logs()


def test_rollback_command_through_the_running_daemon(env: Env) -> None:
    r1 = env.write(doc(temperature=0.1, version="v1.0.0"))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    r2 = env.write(doc(temperature=0.2, version="v1.1.0"))
    env.daemon.wait_applied("demo", r2)
    result = env.daemon.cli("rollback", "demo")
    assert result.returncode == 0, result.stderr
    env.daemon.wait_applied("demo", r1)
    assert env.served()["model"]["parameters"]["temperature"] == 0.1
    rows = env.daemon.history("demo")
    assert (rows[0]["source"], rows[0]["revision"], rows[0]["outcome"]) == ("rollback", r1, "rolled_back")
    # r2 keeps its own outcome and reason, and is no rollback target any more
    assert any(r["revision"] == r2 and r["outcome"] == "applied" and not r["stable"] for r in rows)
    assert any(a["action"] == "rolled_back" and a["by"].startswith("operator:") for a in env.daemon.audit())
    # The source still holds r2; the daemon must not re-apply it on its own.
    env.daemon.stop()
    env.daemon.start()
    env.daemon.wait_ready()
    assert env.daemon.status()["models"]["demo"]["applied_revision"] == r1


def test_rollback_with_the_daemon_stopped_and_history_shows_metadata(env: Env) -> None:
    r1 = env.write(doc(version="v1.0.0"))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    r2 = env.write(doc(version="v1.1.0", temperature=0.5))
    env.daemon.wait_applied("demo", r2)
    env.daemon.stop()
    out = env.daemon.cli("rollback", "demo", "--to", r1)
    assert out.returncode == 0, out.stderr
    assert env.served()["version"] == "v1.0.0"
    text = env.daemon.cli("history", "demo").stdout
    assert "model_id=demo-v1.1.0" in text and "[stable]" in text and "training_data_version=ds-1" in text
    rows = json.loads(env.daemon.cli("history", "demo", "--json").stdout)
    assert rows[0]["metadata"]["model_id"] == "demo-v1.0.0"


def test_status_and_history_commands_match_the_state(env: Env) -> None:
    r1 = env.write(doc())
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    cli_status = json.loads(env.daemon.cli("status", "--json").stdout)
    assert cli_status["models"]["demo"]["applied_revision"] == r1
    assert cli_status["daemon"]["running"] is True and cli_status["daemon"]["source_up"] is True
    text = env.daemon.cli("status").stdout
    assert "demo: applied v1.0.0 @ " + r1 in text and "source localdir: ok" in text


def test_sighup_reloads_settings_and_a_bad_file_keeps_the_running_ones(env: Env) -> None:
    r1 = env.write(doc(temperature=0.1))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    good = env.daemon.config.read_text()
    env.daemon.config.write_text(good + "\n[reconcile\n")
    env.daemon.signal(signal.SIGHUP)
    wait_until(lambda: "settings not reloaded" in env.daemon.logs(), 10, "the reload to be refused")
    r2 = env.write(doc(temperature=0.2))
    env.daemon.wait_applied("demo", r2)
    env.daemon.settings["environment"] = "production"
    env.daemon.write_settings()
    env.daemon.signal(signal.SIGHUP)
    wait_until(lambda: "settings reloaded" in env.daemon.logs(), 10, "the reload")
    r3 = env.write(doc(temperature=0.3, version="v1.1.0-dev"))
    row = env.daemon.wait_outcome("demo", r3, "rejected")
    assert "'production' does not accept" in row["reason"]


def test_sigterm_stops_promptly_and_cleanly(env: Env) -> None:
    r1 = env.write(doc())
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    started = time.monotonic()
    assert env.daemon.stop() == 0
    assert time.monotonic() - started < 5
    assert "model-watcher stopped" in env.daemon.logs()
    assert env.daemon.status()["daemon"]["running"] is False


def test_a_restart_whose_new_server_cannot_start_fails_and_the_old_keeps_serving(env: Env) -> None:
    r1 = env.write(doc(flavor="small"))
    env.daemon.start()
    env.daemon.wait_applied("demo", r1)
    # Another process holds the server's pidfile slot: the restart's new server cannot bind
    # while the old one is alive, and the daemon must not take the old one's answers for success.
    env.server.pidfile.write_text("999999")
    r2 = env.write(doc(flavor="large", version="v1.1.0"))
    row = env.daemon.wait_outcome("demo", r2, "failed")
    assert "exited with status 1" in row["reason"]
    assert env.served()["runtime"]["env"]["SERVER_FLAVOR"] == "small"
    assert env.daemon.status()["models"]["demo"]["applied_revision"] == r1
