"""DockerRuntime's options, per-model nginx templating and label parsing (no engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from watcher.core.errors import PolicyError, SettingsError
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, load_class
from watcher.runtimes.docker import DockerRuntime
from watcher.runtimes.docker_containers import instance as _instance


def options(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"socket": str(tmp_path / "engine.sock"), **extra}


def ctx(tmp_path: Path, env: str = "test") -> PluginContext:
    return PluginContext(state_dir=tmp_path / "state", environment=env)


def spec(image: str = "127.0.0.1:5000/m/s:v1.2.0", version: str = "v1.2.0") -> ModelSpec:
    return ModelSpec.model_validate({"name": "qwen", "version": version,
                                     "runtime": {"image": image}, "model": {"uri": "file:///m"}})


def test_registered_under_docker() -> None:
    assert load_class("runtime", "docker") is DockerRuntime


def test_the_router_templates_its_nginx_paths_per_model(tmp_path: Path) -> None:
    router = load_class("router", "nginx").create(
        {"upstream_file": str(tmp_path / "{model}.conf"), "access_log": str(tmp_path / "access-{model}.log"),
         "steps": [5, 10, 30, 60, 100], "hold": 2}, ctx(tmp_path))
    assert router.plan.steps == [5, 10, 30, 60, 100] and router.plan.hold == 2
    up = router.upstream("qwen")
    assert up.opts.upstream == "qwen"
    assert up.opts.upstream_file == tmp_path / "qwen.conf"
    assert up.opts.access_log == tmp_path / "access-qwen.log"
    with pytest.raises(SettingsError, match=r"router\.steps"):
        load_class("router", "nginx").create({"upstream_file": "/x", "steps": [50]}, ctx(tmp_path))
    with pytest.raises(SettingsError, match=r"runtime\.nginx"):  # traffic is the router's now
        DockerRuntime.create(options(tmp_path, nginx={"upstream_file": "/x"}), ctx(tmp_path))


@pytest.mark.parametrize(("extra", "field"), [
    ({"unknown": 1}, "runtime.unknown"),
    ({"ports": [2000, 1000]}, "runtime"),
    ({"registry_auth": {"username": "u"}}, "runtime.registry_auth.password"),
    ({"restart_policy": "sometimes"}, "runtime.restart_policy"),
    ({"start_settle": -1}, "runtime.start_settle"),
])
def test_bad_options_name_the_field(tmp_path: Path, extra: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError, match=field.replace(".", r"\.")):
        DockerRuntime.create(options(tmp_path, **extra), ctx(tmp_path))


async def test_password_is_secret(tmp_path: Path) -> None:
    rt = DockerRuntime.create(options(tmp_path, registry_auth={"username": "u", "password": "pw-x"}),
                              ctx(tmp_path))
    try:
        assert "pw-x" not in repr(rt.opts) and "pw-x" not in str(rt.opts.model_dump())
    finally:
        await rt.aclose()


@pytest.mark.parametrize(("image", "version"), [
    ("127.0.0.1:5000/m/s:v1.3.0-dev", "v1.3.0"),
    ("127.0.0.1:5000/m/s:v1.3.0", "v1.3.0-dev"),
])
async def test_dev_builds_are_refused_in_production(tmp_path: Path, image: str,
                                                    version: str) -> None:
    rt = DockerRuntime.create(options(tmp_path), ctx(tmp_path, "production"))
    try:
        with pytest.raises(PolicyError, match="dev build"):
            await rt.prepare(spec(image, version))
    finally:
        await rt.aclose()


def test_instance_from_labels() -> None:
    labels = {"model-watcher.model": "qwen", "model-watcher.revision": "r7",
              "model-watcher.role": "green", "model-watcher.port": "21001",
              "model-watcher.image": "reg/m@sha256:ab", "model-watcher.version": "v1.2.0"}
    inst = _instance("qwen", "cid", labels, "127.0.0.1", name="mw-qwen-green", created=5)
    assert inst.revision == "r7"
    assert inst.address == "127.0.0.1:21001" and inst.health_url == "http://127.0.0.1:21001"
    assert inst.artifact == "reg/m@sha256:ab" and inst.name == "mw-qwen-green"
    assert (inst.role, inst.port, inst.created) == ("green", 21001, 5)
