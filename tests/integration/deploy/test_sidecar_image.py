"""The sidecar image for real: ./Containerfile built with podman, run as the sidecar of the
example model server (its network namespace), non-root, read-only root filesystem (no tmpfs
either), state on a named volume, settings from MODEL_WATCHER_* variables alone; its
HEALTHCHECK passes and a publish from the host is applied through the server's admin API."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from tests.infra.common import ROOT, free_port, http_ok, wait_until
from tests.infra.daemon import to_toml
from tests.infra.sidecar import SidecarImages
from tests.integration.deploy.conftest import (
    container_status,
    model_doc,
    names,
    podman,
    remove,
    wait_healthy,
)


def sidecar_env(models: str) -> dict[str, str]:
    """Everything from the environment: no settings file in the container."""
    return {
        "MODEL_WATCHER_ENVIRONMENT": "production",
        "MODEL_WATCHER_SOURCE__KIND": "localdir",
        "MODEL_WATCHER_SOURCE__PATH": models,
        "MODEL_WATCHER_TARGET__KIND": "http",
        "MODEL_WATCHER_TARGET__URL": "http://127.0.0.1:8765/admin/reload",
        "MODEL_WATCHER_HEALTH__URL": "http://127.0.0.1:8765/health",
        "MODEL_WATCHER_HEALTH__PERIOD": "0.2",
        # the API is on by the image's default; published through the server's namespace
        "MODEL_WATCHER_API__HOST": "0.0.0.0",
        # a JSON list through the environment (plug-in options are untyped in the core)
        "MODEL_WATCHER_POLICY__URI_SCHEMES": '["file"]',
    }


def publish(tmp: Path, models: Path, doc: bytes) -> str:
    """`model-watcher publish` on the host, as a publisher would."""
    import subprocess

    settings = tmp / "publisher.toml"
    settings.write_text(to_toml({"environment": "production", "state_dir": str(tmp / "pub-state"),
                                 "source": {"kind": "localdir", "path": str(models)}}))
    doc_file = tmp / "example.yaml"
    doc_file.write_bytes(doc)
    proc = subprocess.run([sys.executable, "-m", "watcher", "--config", str(settings), "publish",
                           "example", str(doc_file)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_image_metadata(images: SidecarImages) -> None:
    ref = images.watcher()
    image = json.loads(podman(images.podman, "image", "inspect", ref).stdout)[0]
    cfg = image["Config"]
    assert cfg["User"] == "10001:10001"
    assert image["Healthcheck"]["Test"] == ["CMD", "python3", "/opt/model-watcher/healthcheck.py"]
    assert cfg["Entrypoint"] == ["model-watcher"] and cfg["Cmd"] == ["run"]
    assert "/var/lib/model-watcher" in cfg["Volumes"]
    labels = cfg["Labels"]
    for key in ("title", "version", "revision", "created", "licenses", "base.name"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/mw-python-base:")
    # the build stage's tools (uv, pip) stay behind; the daemon's venv has no pip either
    out = podman(images.podman, "run", "--rm", "--entrypoint", "sh", ref, "-c",
                 "ls /opt; ls /opt/model-watcher/bin").stdout.split()
    assert "tools" not in out and "uv" not in out and "pip" not in out, out


def test_sidecar_applies_a_publish(images: SidecarImages, model_dir: Path, tmp_path: Path) -> None:
    env = images.podman
    watcher, server = images.watcher(), images.model_server()
    ms, mw, state = names("ms"), names("mw"), names("state")
    server_port, api_port = free_port(), free_port()
    try:
        # the server owns the network namespace: the sidecar's API port is published on it
        podman(env, "run", "-d", "--name", ms, "-p", f"127.0.0.1:{server_port}:8765",
               "-p", f"127.0.0.1:{api_port}:9464", server)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{server_port}/health"), 30, "the model server")
        flags = [a for k, v in sidecar_env("/models").items() for a in ("-e", f"{k}={v}")]
        podman(env, "run", "-d", "--name", mw, "--network", f"container:{ms}",
               "--read-only", "--read-only-tmpfs=false", "-v", f"{state}:/var/lib/model-watcher",
               "-v", f"{model_dir}:/models:ro", *flags, watcher)
        wait_healthy(env, mw)

        assert podman(env, "exec", mw, "id", "-u").stdout.strip() == "10001"
        for path in ("/opt/model-watcher/x", "/tmp/x", "/etc/x"):
            assert podman(env, "exec", mw, "touch", path, check=False).returncode != 0, path
        podman(env, "exec", mw, "touch", "/var/lib/model-watcher/.writable")

        revision = publish(tmp_path, model_dir, model_doc("v1.0.0", 0.4))
        config_url = f"http://127.0.0.1:{server_port}/config"
        wait_until(lambda: (httpx.get(config_url, timeout=2).json()["spec"] or {}).get("version")
                   == "v1.0.0", 60, "the server to serve v1.0.0")
        served = httpx.get(config_url, timeout=2).json()["spec"]
        assert served["model"]["parameters"] == {"temperature": 0.4}
        model = container_status(env, mw)["models"]["example"]
        assert (model["applied_revision"], model["last_outcome"]) == (revision, "applied")
        # the API reaches the host through the server's published port
        health = httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=5).json()
        assert health == {"status": "ok", "ready": True}
        metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=5).text
        assert f'model_watcher_applied_info{{model="example",revision="{revision}"' in metrics

        # state survives the container: a new one on the same volume does not re-apply
        podman(env, "rm", "--force", "--time", "10", mw)
        podman(env, "run", "-d", "--name", mw, "--network", f"container:{ms}", "--read-only",
               "--read-only-tmpfs=false", "-v", f"{state}:/var/lib/model-watcher",
               "-v", f"{model_dir}:/models:ro", *flags, watcher)
        wait_healthy(env, mw)
        wait_until(lambda: container_status(env, mw)["daemon"].get("ready_at"), 30,
                   "the restarted sidecar's first reconcile")
        rows = json.loads(podman(env, "exec", mw, "model-watcher", "history", "example",
                                 "--json").stdout)
        assert [r["outcome"] for r in rows if r["revision"] == revision] == ["applied"], rows
        assert httpx.get(config_url, timeout=2).json()["reloads"] == 1
    finally:
        remove(env, mw, ms, volumes=(state,))
