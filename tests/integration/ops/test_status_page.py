"""The status page in a real browser (headless Chromium) over a real daemon's API: it loads,
shows an applied revision and a rejected one with its reason, escapes what documents say, and
forbids scripts. The screenshot is kept as a test artifact."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from tests.infra import chromium
from tests.infra.common import CACHE
from tests.integration.ops.conftest import OpsEnv, doc

ARTIFACTS = CACHE / "test-artifacts"


def test_the_page_shows_applied_and_rejected_revisions(ops_env: OpsEnv) -> None:
    e = ops_env
    good = yaml.safe_load(doc())
    good["metadata"] = {"model_id": "<script>alert(1)</script>", "training_data_version": "ds-7"}
    r1 = e.write(yaml.safe_dump(good).encode())
    e.start()
    e.daemon.wait_applied("demo", r1)
    r2 = e.write(b"name: demo\nversion: 1.2\nmodel: {uri: 'file:///srv/models/demo'}\n")
    e.daemon.wait_outcome("demo", r2, "rejected")

    page = chromium.dom(e.api + "/")
    assert "model-watcher" in page and "demo" in page
    assert "v1.0.0" in page and r1 in page  # the applied revision
    assert "rejected" in page and "not semver" in page  # the rejected one, with its reason
    shot = chromium.screenshot(e.api + "/", ARTIFACTS / "status-page.png")
    print(f"screenshot: {shot} ({shot.stat().st_size} bytes)")

    history = chromium.dom(e.api + "/models/demo")
    assert r1 in history and r2 in history and "ds-7" in history
    assert "<script>alert(1)</script>" not in history  # shown as text, never run
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in history
    answer = httpx.get(e.api + "/models/demo", timeout=5)
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    assert "applied" in chromium.dom(e.api + "/audit")
    assert httpx.get(e.api + "/models/nope", timeout=5).status_code == 200  # a page, not a crash
    assert Path(shot).suffix == ".png"
