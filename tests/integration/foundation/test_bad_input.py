"""The bad-input table: each document is rejected with its reason in the log, `status` and
`history`; the running server is untouched and the daemon stays alive."""

from __future__ import annotations

import json

import pytest

from tests.infra.common import wait_until
from tests.integration.foundation.conftest import Env, doc

BAD = [
    ("invalid-yaml", b"name: demo\nversion: [v1\n", "invalid YAML"),
    ("invalid-json", b'{"name": "demo", "version": }', "invalid JSON"),
    ("a-list", b"- name: demo\n- version: v1.0.0\n", "must be a mapping, got a list"),
    ("a-scalar", b"just a string\n", "must be a mapping, got a scalar"),
    ("missing-name", b"version: v1.0.0\nmodel: {uri: file:///m}\n", "schema: name: Field required"),
    ("unknown-field", doc().replace(b"metadata:", b"temprature: 0.3\nmetadata:"),
     "temprature: Extra inputs are not permitted"),
    ("not-semver", doc(version="1.2"), "version '1.2' is not semver"),
    ("dev-in-production", doc(version="v1.3.0-dev"), "'dev' channel, which environment 'production' does not accept"),
    ("oversized", doc() + b"#" + b"x" * 300_000 + b"\n", "over the limit of"),
    ("binary", b"\x00\x01\x02binary\xff", "binary data"),
    ("empty", b"", "document is empty"),
    ("name-mismatch", doc(name="other"), "does not match the document key 'demo'"),
]


@pytest.mark.parametrize(("case", "content", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_document_is_rejected_and_the_server_keeps_serving(env: Env, case: str, content: bytes,
                                                                reason: str) -> None:
    env.daemon.settings["environment"] = "production"
    env.daemon.write_settings()
    good = env.write(doc(temperature=0.7))
    env.daemon.start()
    env.daemon.wait_applied("demo", good)
    before = env.server.config()
    bad = env.write(content)
    row = env.daemon.wait_outcome("demo", bad, "rejected")
    assert reason in row["reason"], row["reason"]
    status = env.daemon.status()["models"]["demo"]
    assert status["applied_revision"] == good
    assert status["last_outcome"] == "rejected" and reason in status["last_reason"]
    assert any(r.get("level") == "ERROR" and reason in r.get("reason", "") for r in env.daemon.log_records())
    after = env.server.config()
    assert after["spec"] == before["spec"] and after["reloads"] == before["reloads"] and after["pid"] == before["pid"]
    # Still alive and acting: a good document afterwards is applied.
    fixed = env.write(doc(temperature=0.4))
    env.daemon.wait_applied("demo", fixed)
    assert env.served()["model"]["parameters"]["temperature"] == 0.4


def test_deleted_document_is_reported_and_never_applied_as_empty(env: Env) -> None:
    good = env.write(doc())
    env.daemon.start()
    env.daemon.wait_applied("demo", good)
    before = env.server.config()
    (env.models / "demo.yaml").unlink()
    row = env.daemon.wait_outcome("demo", None, "deleted")
    assert "document deleted" in row["reason"] and "keeps serving" in row["reason"]
    assert env.server.config()["spec"] == before["spec"]
    assert env.daemon.status()["models"]["demo"]["applied_revision"] == good
    text = env.daemon.cli("status").stdout
    assert "deleted" in text


def test_deleted_document_unloads_when_configured(env: Env) -> None:
    env.daemon.settings["reconcile"]["on_delete"] = "unload"
    env.daemon.write_settings()
    good = env.write(doc())
    env.daemon.start()
    env.daemon.wait_applied("demo", good)
    (env.models / "demo.yaml").unlink()
    env.daemon.wait_outcome("demo", None, "deleted")
    wait_until(lambda: env.server.config()["spec"] is None, 10, "the model to be unloaded")


def test_a_rejected_revision_is_not_retried_on_resync_or_restart(env: Env) -> None:
    good = env.write(doc())
    env.daemon.start()
    env.daemon.wait_applied("demo", good)
    bad = env.write(doc(version="1.2"))
    env.daemon.wait_outcome("demo", bad, "rejected")
    env.daemon.stop()
    env.daemon.start()
    env.daemon.wait_applied("demo", good)
    wait_until(lambda: env.daemon.status()["daemon"].get("source_up"), 10, "the source to be up")
    assert env.daemon.count("demo", bad) == 1


def test_once_exit_status_and_validate(env: Env) -> None:
    good = env.write(doc())
    out = env.daemon.cli("once")
    assert out.returncode == 0, out.stderr
    assert f"demo\t{good}\tapplied" in out.stdout
    assert env.daemon.cli("once").stdout.strip() == "everything is in line"
    env.write(doc(version="1.2"))
    out = env.daemon.cli("once")
    assert out.returncode == 1 and "rejected" in out.stdout
    path = env.models / "candidate.yaml"
    path.write_bytes(doc(version="v2.0.0-dev", name="candidate"))
    ok = env.daemon.cli("validate", str(path))
    assert ok.returncode == 0, ok.stderr
    refused = env.daemon.cli("validate", str(path), "--environment", "production")
    assert refused.returncode == 1 and "'dev' channel" in refused.stderr
    assert json.loads(env.daemon.cli("schema").stdout)["title"] == "ModelSpec"
    env.daemon.start()
    busy = env.daemon.cli("once")
    assert busy.returncode == 3 and "already reconciles" in busy.stderr
