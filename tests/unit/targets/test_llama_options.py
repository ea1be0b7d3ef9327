"""The `llama-server` target's checks of settings and of untrusted document values, before
anything reaches the server: option validation, parameters, paths, the preset text, staging.
(The behaviour against a real llama-server is in tests/integration/llama/.)"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from watcher.core.errors import PluginError, SettingsError, TargetError
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, create
from watcher.targets.llama import LlamaServerTarget
from watcher.targets.llama_preset import (
    AdapterFile,
    Generation,
    Ledger,
    adapter_scales,
    check_path,
    render,
    stage_file,
)


def ctx(tmp: Path) -> PluginContext:
    return PluginContext(state_dir=tmp / "state", environment="test", logger=logging.getLogger("t"))


def options(tmp: Path, **over: Any) -> dict[str, Any]:
    (tmp / "models").mkdir(exist_ok=True)
    return {"kind": "llama-server",
            "routers": [{"url": "http://127.0.0.1:8081", "preset": str(tmp / "blue.ini")},
                        {"url": "http://127.0.0.1:8082", "preset": str(tmp / "green.ini")}],
            "nginx": {"upstream_file": str(tmp / "llama.conf"), "upstream": "llama"},
            "models_dir": str(tmp / "models"), **over}


def router(url: str, preset: str) -> dict[str, str]:
    return {"url": url, "preset": preset}


def spec(**model: Any) -> ModelSpec:
    return ModelSpec.model_validate({"name": "qwen", "version": "v1.0.0",
                                     "model": {"uri": "file:///srv/m.gguf", **model}})


async def test_registered_and_created_from_settings(tmp_path: Path) -> None:
    target = create("target", options(tmp_path), ctx(tmp_path))
    assert isinstance(target, LlamaServerTarget)
    assert target.hot_paths == ("model.",)
    await target.aclose()


@pytest.mark.parametrize(("over", "field"), [
    ({"routers": [router("http://127.0.0.1:1", "/p/a.ini")]}, "target.routers"),
    ({"routers": [router("127.0.0.1:8080", "/p/a.ini"), router("http://127.0.0.1:2", "/p/b.ini")]},
     "target.routers.0.url"),
    ({"routers": [router("http://127.0.0.1:1/v1", "/p/a.ini"), router("http://127.0.0.1:2", "/p/b.ini")]},
     "target.routers.0.url"),
    ({"routers": [router("http://127.0.0.1:1", "/p/a.ini"), router("http://127.0.0.1:2", "p/b.ini")]},
     "target.routers.1.preset"),
    ({"routers": [router("http://127.0.0.1:1", "/p/a.ini"), router("http://127.0.0.1:1/", "/p/b.ini")]},
     "their own url"),
    ({"nginx": {"upstream_file": "/n/{model}.conf", "upstream": "{model}"}}, "no {model}"),
    ({"nginx": {"upstream": "llama"}}, "target.nginx.upstream_file"),
    ({"models_dir": "/srv/models dir"}, "target.models_dir"),
    ({"models_dir": "/srv/a:b"}, "target.models_dir"),
    ({"check_prompt": "line\nbreak"}, "target.check_prompt"),
    ({"check_tokens": 0}, "target.check_tokens"),
    ({"load_timeout": 0}, "target.load_timeout"),
    ({"stop_timeout": -1}, "target.stop_timeout"),
    ({"adapters_dir": "/x"}, "target.adapters_dir"),
])
def test_bad_options_name_the_field(tmp_path: Path, over: dict[str, Any], field: str) -> None:
    with pytest.raises(SettingsError) as err:
        create("target", options(tmp_path, **over), ctx(tmp_path))
    assert field in err.value.reason


def test_the_sample_settings_are_valid() -> None:
    import tomllib

    from watcher.plugins import parse_options
    from watcher.targets.llama import LlamaServerOptions

    sample = Path(__file__).resolve().parents[3] / "config" / "llama-server.toml.sample"
    target = dict(tomllib.loads(sample.read_text())["target"])
    assert target.pop("kind") == "llama-server"
    opts = parse_options(LlamaServerOptions, target, "target")
    assert [r.url for r in opts.routers] == ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]


def test_models_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"target\.models_dir"):
        create("target", options(tmp_path, models_dir=str(tmp_path / "absent")), ctx(tmp_path))


def test_unknown_kind_is_a_plugin_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError):
        create("target", options(tmp_path, kind="llama"), ctx(tmp_path))


def test_adapter_scales_default_to_one_and_are_validated() -> None:
    adapters = [{"name": "tone", "uri": "file:///a.gguf"}, {"name": "Style.2", "uri": "/b.gguf"}]
    assert adapter_scales(spec(adapters=adapters)) == {"tone": 1.0, "Style.2": 1.0}
    s = spec(adapters=adapters, parameters={"adapter_scales": {"tone": 0.25, "Style.2": -1}})
    assert adapter_scales(s) == {"tone": 0.25, "Style.2": -1.0}
    for bad, reason in [({"adapter_scales": {"nope": 1}}, "no such adapter"),
                        ({"adapter_scales": {"tone": 11}}, "not a number"),
                        ({"adapter_scales": {"tone": "1"}}, "not a number"),
                        ({"adapter_scales": {"tone": True}}, "not a number"),
                        ({"adapter_scales": [1]}, "must be a mapping"),
                        ({"temperature": 0.7}, "not a llama-server target parameter")]:
        with pytest.raises(TargetError, match=reason):
            adapter_scales(spec(adapters=adapters, parameters=bad))
    with pytest.raises(TargetError, match=r"model\.implementation"):
        adapter_scales(spec(implementation="x.Y"))
    with pytest.raises(ValueError, match="NaN"):  # the document's grammar refuses it first
        spec(adapters=adapters, parameters={"adapter_scales": {"tone": float("nan")}})


@pytest.mark.parametrize("path", ["relative.gguf", "/a/b:c.gguf", "/a/b,c.gguf", "/a/b c.gguf",
                                  "/a/b;c", "/a/[x]", "/a/b\n[evil]", "/a/b\n", "/a/../etc/passwd", "/a/b=c"])
def test_paths_that_could_bend_the_preset_are_refused(path: str) -> None:
    with pytest.raises(TargetError, match="only absolute paths"):
        check_path(path, "model file")


def test_preset_renders_sorted_sections_with_scales() -> None:
    served = {"b": Generation("/m/b/model-2.gguf"),
              "a": Generation("/m/a/model-1.gguf", (AdapterFile("t", "/m/a/lora-t-1.gguf", 0.5),
                                                    AdapterFile("u", "/m/a/lora-u-2.gguf", 1.0)))}
    text = render(served, load_on_startup=True, stop_timeout=5)
    assert text.index("[a]") < text.index("[b]")
    assert "lora-scaled = /m/a/lora-t-1.gguf:0.5,/m/a/lora-u-2.gguf:1\n" in text
    assert text.count("load-on-startup = true") == 2 and text.count("stop-timeout = 5") == 2
    assert text == render(dict(reversed(list(served.items()))), load_on_startup=True, stop_timeout=5)
    assert "load-on-startup" not in render(served, load_on_startup=False, stop_timeout=None)
    with pytest.raises(TargetError):
        render({"a": Generation("/m/a/x:1.gguf")}, load_on_startup=True, stop_timeout=None)


def test_staging_names_the_copy_by_its_digest_and_checks_it(tmp_path: Path) -> None:
    src = tmp_path / "w.gguf"
    src.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    staged = stage_file(src, tmp_path / "models" / "qwen", "model", digest)
    assert staged.name == f"model-{digest[:16]}.gguf" and staged.read_bytes() == src.read_bytes()
    with pytest.raises(TargetError, match="hashes to"):
        stage_file(src, tmp_path / "models" / "qwen", "model", "0" * 64)
    src.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(TargetError, match="not a GGUF file"):
        stage_file(src, tmp_path / "models" / "qwen", "model", None)
    assert sorted(p.name for p in (tmp_path / "models" / "qwen").iterdir()) == [staged.name]


def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    gen = Generation("/m/a/model-1.gguf", (AdapterFile("t", "/m/a/lora-t-1.gguf", 0.5),))
    Ledger(tmp_path).set("a", gen, Generation("/m/a/model-0.gguf"))
    again = Ledger(tmp_path)
    assert again.served == {"a": gen} and again.previous["a"].model == "/m/a/model-0.gguf"
    again.set("a", None, None)
    assert Ledger(tmp_path).served == {}
