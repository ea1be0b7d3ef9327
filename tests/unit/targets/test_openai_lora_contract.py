"""CONTRACT test of the `openai-lora` target against vLLM's documented LoRA endpoints.

vLLM cannot run on these machines (no GPU, no model weights), so this is NOT an integration
test: `FakeVLLM` is a small HTTP server on 127.0.0.1 that follows the request and response
shapes of vLLM's OpenAI-compatible server (vllm/entrypoints/openai/serving_models.py and
api_server.py):

- GET  /v1/models -> {"object": "list", "data": [ModelCard...]}; the base model's card has
  `parent: null`, a LoRA card has `id` = lora_name, `root` = lora_path, `parent` = base.
- POST /v1/load_lora_adapter {"lora_name", "lora_path", "load_inplace"?} -> 200 text
  "Success: LoRA adapter 'NAME' added successfully."; 400 InvalidUserInput when a field is
  missing or the name is loaded already (unless load_inplace, on versions that have it);
  404 NotFoundError "No adapter found ..." for a path without an adapter.
- POST /v1/unload_lora_adapter {"lora_name"} -> 200 text; 404 NotFoundError
  "The lora adapter 'NAME' cannot be found."
- Errors: ErrorResponse {"object": "error", "message", "type", "param", "code"} (older) or
  {"error": {"message", "type", "param", "code"}} (newer); without
  VLLM_ALLOW_RUNTIME_LORA_UPDATING the two POST routes do not exist (FastAPI 404
  {"detail": "Not Found"}).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from watcher.core.errors import SettingsError, TargetError
from watcher.core.spec import ModelSpec
from watcher.plugins import PluginContext, create
from watcher.targets.openai_lora import OpenAILoraTarget

pytestmark = pytest.mark.asyncio(loop_scope="session")

BASE = "meta-llama/Llama-3.1-8B-Instruct"


class FakeVLLM:
    """vLLM's LoRA admin surface, in memory; `requests` records every call."""

    def __init__(self, *, inplace: bool = True, nested_errors: bool = False,
                 runtime_updates: bool = True, api_key: str | None = None) -> None:
        self.inplace, self.nested_errors = inplace, nested_errors
        self.runtime_updates, self.api_key = runtime_updates, api_key
        self.loras: dict[str, str] = {}  # name -> path, in load order
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.fail_paths: set[str] = set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeVLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def error(self, message: str, err_type: str, code: int) -> tuple[int, Any]:
        err = {"message": message, "type": err_type, "param": None, "code": code}
        return code, ({"error": err} if self.nested_errors else {"object": "error", **err})

    def models(self) -> dict[str, Any]:
        cards = [{"id": BASE, "object": "model", "created": 0, "owned_by": "vllm",
                  "root": f"/models/{BASE}", "parent": None, "max_model_len": 8192,
                  "permission": [{"id": "modelperm-x", "object": "model_permission"}]}]
        cards += [{"id": name, "object": "model", "created": 0, "owned_by": "vllm",
                   "root": path, "parent": BASE, "max_model_len": None, "permission": []}
                  for name, path in self.loras.items()]
        return {"object": "list", "data": cards}

    def load(self, body: dict[str, Any]) -> tuple[int, Any]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return self.error("Both 'lora_name' and 'lora_path' must be provided.",
                              "InvalidUserInput", 400)
        inplace = self.inplace and bool(body.get("load_inplace"))
        if name in self.loras and not inplace:
            return self.error(f"The lora adapter '{name}' has already been loaded.",
                              "InvalidUserInput", 400)
        if path in self.fail_paths or not Path(path).is_dir():
            return self.error(f"Loading lora {name} failed: No adapter found for {path}",
                              "NotFoundError", 404)
        if not (Path(path) / "adapter_config.json").is_file():
            return self.error(f"Loading lora {name} failed: no adapter_config.json in {path}",
                              "BadRequestError", 400)
        self.loras[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        if not name and not body.get("lora_int_id"):
            return self.error("either 'lora_name' and 'lora_int_id' needs to be provided.",
                              "InvalidUserInput", 400)
        if name not in self.loras:
            return self.error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del self.loras[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                text = payload if isinstance(payload, str) else json.dumps(payload)
                data = text.encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(payload, str) else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    self._send(401, {"error": "Unauthorized"})
                    return False
                return True

            def do_GET(self) -> None:
                fake.requests.append(("GET " + self.path, {}))
                if not self._authorized():
                    return
                if self.path == "/v1/models":
                    self._send(200, fake.models())
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(("POST " + self.path, body))
                if not self._authorized():
                    return
                routes = {"/v1/load_lora_adapter": fake.load,
                          "/v1/unload_lora_adapter": fake.unload}
                if self.path not in routes or not fake.runtime_updates:
                    self._send(404, {"detail": "Not Found"})
                    return
                self._send(*routes[self.path](body))

        return Handler


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    with FakeVLLM() as fake:
        yield fake


@pytest.fixture
def adapters(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("sql-v1", "sql-v2", "chat-v1", "broken"):
        d = tmp_path / "adapters" / name
        d.mkdir(parents=True)
        if name != "broken":
            (d / "adapter_config.json").write_text("{}")
        out[name] = d
    return out


def make_target(url: str, state: Path, **options: Any) -> OpenAILoraTarget:
    t = create("target", {"kind": "openai-lora", "url": url, **options},
               PluginContext(state_dir=state, environment="test"))
    assert isinstance(t, OpenAILoraTarget)
    return t


@pytest.fixture
async def target(vllm: FakeVLLM, tmp_path: Path) -> AsyncIterator[OpenAILoraTarget]:
    t = make_target(vllm.url, tmp_path / "state")
    yield t
    await t.aclose()


def spec(adapters: dict[str, Path], version: str = "v1.0.0", **sha: str) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": "qwen-chat", "version": version,
        "model": {"uri": "file:///models/base", "adapters": [
            {"name": name, "uri": path.as_uri(), **({"sha256": sha[name]} if name in sha else {})}
            for name, path in adapters.items()
        ]},
    })


def posts(fake: FakeVLLM) -> list[tuple[str, dict[str, Any]]]:
    return [(path.removeprefix("POST /v1/"), body) for path, body in fake.requests
            if path.startswith("POST")]


async def test_hot_paths_are_the_adapters(target: OpenAILoraTarget) -> None:
    assert target.hot_paths == ("model.adapters",)


async def test_loads_missing_adapters_with_documented_request_shape(
    vllm: FakeVLLM, target: OpenAILoraTarget, adapters: dict[str, Path]
) -> None:
    s = spec({"sql": adapters["sql-v1"], "chat": adapters["chat-v1"]})
    await target.apply(s, None)
    assert posts(vllm) == [
        ("load_lora_adapter", {"lora_name": "sql", "lora_path": str(adapters["sql-v1"])}),
        ("load_lora_adapter", {"lora_name": "chat", "lora_path": str(adapters["chat-v1"])}),
    ]
    assert await target.loaded() == {"sql": str(adapters["sql-v1"]),
                                     "chat": str(adapters["chat-v1"])}
    vllm.requests.clear()
    await target.apply(s, s)  # nothing changed: reads, never writes
    assert posts(vllm) == []


async def test_changed_path_reloads_in_place(
    vllm: FakeVLLM, target: OpenAILoraTarget, adapters: dict[str, Path]
) -> None:
    v1 = spec({"sql": adapters["sql-v1"]})
    await target.apply(v1, None)
    vllm.requests.clear()
    v2 = spec({"sql": adapters["sql-v2"]}, "v1.1.0")
    await target.apply(v2, v1)
    assert posts(vllm) == [("load_lora_adapter", {"lora_name": "sql",
                                                  "lora_path": str(adapters["sql-v2"]),
                                                  "load_inplace": True})]
    assert vllm.loras == {"sql": str(adapters["sql-v2"])}


async def test_changed_digest_same_path_reloads(
    vllm: FakeVLLM, target: OpenAILoraTarget, adapters: dict[str, Path]
) -> None:
    v1 = spec({"sql": adapters["sql-v1"]}, sql="a" * 64)
    await target.apply(v1, None)
    vllm.requests.clear()
    await target.apply(spec({"sql": adapters["sql-v1"]}, "v1.0.1", sql="b" * 64), v1)
    assert [p for p, _ in posts(vllm)] == ["load_lora_adapter"]


async def test_server_without_load_inplace_falls_back_to_unload_then_load(
    tmp_path: Path, adapters: dict[str, Path]
) -> None:
    with FakeVLLM(inplace=False) as old:
        t = make_target(old.url, tmp_path / "state")
        v1 = spec({"sql": adapters["sql-v1"]})
        await t.apply(v1, None)
        old.requests.clear()
        await t.apply(spec({"sql": adapters["sql-v2"]}, "v1.1.0"), v1)
        assert [p for p, _ in posts(old)] == ["load_lora_adapter", "unload_lora_adapter",
                                              "load_lora_adapter"]
        assert old.loras == {"sql": str(adapters["sql-v2"])}
        await t.aclose()


async def test_removed_adapters_are_unloaded_but_foreign_ones_kept(
    vllm: FakeVLLM, target: OpenAILoraTarget, adapters: dict[str, Path]
) -> None:
    vllm.loras["static"] = "/srv/static-lora"  # loaded by someone else (--lora-modules)
    v1 = spec({"sql": adapters["sql-v1"], "chat": adapters["chat-v1"]})
    await target.apply(v1, None)
    vllm.requests.clear()
    await target.apply(spec({"chat": adapters["chat-v1"]}, "v1.1.0"), v1)
    assert posts(vllm) == [("unload_lora_adapter", {"lora_name": "sql"})]
    assert set(vllm.loras) == {"static", "chat"}


async def test_prune_all_unloads_every_unlisted_adapter(
    vllm: FakeVLLM, tmp_path: Path, adapters: dict[str, Path]
) -> None:
    vllm.loras["static"] = "/srv/static-lora"
    t = make_target(vllm.url, tmp_path / "s", prune="all")
    await t.apply(spec({"chat": adapters["chat-v1"]}), None)
    assert set(vllm.loras) == {"chat"}
    await t.aclose()


async def test_ownership_survives_a_restart_of_the_daemon(
    vllm: FakeVLLM, tmp_path: Path, adapters: dict[str, Path]
) -> None:
    first = make_target(vllm.url, tmp_path / "state")
    await first.apply(spec({"sql": adapters["sql-v1"], "chat": adapters["chat-v1"]}), None)
    await first.aclose()
    second = make_target(vllm.url, tmp_path / "state")  # a new process: no memory but state
    await second.remove("qwen-chat")
    assert vllm.loras == {}
    await second.remove("qwen-chat")  # nothing owned any more: no calls, no error
    await second.aclose()


async def test_failed_load_is_undone_and_reports_the_server_message(
    vllm: FakeVLLM, target: OpenAILoraTarget, adapters: dict[str, Path]
) -> None:
    v1 = spec({"sql": adapters["sql-v1"], "chat": adapters["chat-v1"]})
    await target.apply(v1, None)
    bad = spec({"sql": adapters["sql-v2"], "new": adapters["broken"]}, "v1.1.0")
    with pytest.raises(TargetError, match=r"load adapter new .* status 400: .*adapter_config"):
        await target.apply(bad, v1)
    # sql went back to v1; chat was never unloaded (unloads come last); nothing new stays
    assert vllm.loras == {"sql": str(adapters["sql-v1"]), "chat": str(adapters["chat-v1"])}
    assert target.owned("qwen-chat") == {"sql", "chat"}


@pytest.mark.parametrize("nested", [False, True])
async def test_not_found_path_in_either_error_shape(
    tmp_path: Path, adapters: dict[str, Path], nested: bool
) -> None:
    with FakeVLLM(nested_errors=nested) as fake:
        t = make_target(fake.url, tmp_path / "state")
        s = spec({"x": tmp_path / "nowhere"})
        with pytest.raises(TargetError, match=r"status 404: Loading lora x failed: No adapter found"):
            await t.apply(s, None)
        assert fake.loras == {}
        await t.aclose()


async def test_runtime_updates_disabled_gives_a_hint(tmp_path: Path,
                                                     adapters: dict[str, Path]) -> None:
    with FakeVLLM(runtime_updates=False) as fake:
        t = make_target(fake.url, tmp_path / "state")
        with pytest.raises(TargetError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
            await t.apply(spec({"sql": adapters["sql-v1"]}), None)
        await t.aclose()


async def test_api_key_is_sent_as_bearer(tmp_path: Path, adapters: dict[str, Path]) -> None:
    with FakeVLLM(api_key="sk-test") as fake:
        t = make_target(fake.url, tmp_path / "state", token="sk-test")
        await t.apply(spec({"sql": adapters["sql-v1"]}), None)
        assert "sk-test" not in repr(t.options)  # a SecretStr: never in logs
        await t.aclose()
        anon = make_target(fake.url, tmp_path / "state2")
        with pytest.raises(TargetError, match="status 401"):
            await anon.apply(spec({"sql": adapters["sql-v1"]}), None)
        await anon.aclose()


async def test_base_model_filter(vllm: FakeVLLM, tmp_path: Path, adapters: dict[str, Path]) -> None:
    t = make_target(vllm.url, tmp_path / "state", base_model="other-base")
    vllm.loras["sql"] = str(adapters["sql-v1"])  # on BASE, so invisible to this target
    assert await t.loaded() == {}
    await t.aclose()


async def test_unreachable_server(tmp_path: Path, adapters: dict[str, Path]) -> None:
    from tests.infra.common import free_port

    t = make_target(f"http://127.0.0.1:{free_port()}", tmp_path / "state")
    with pytest.raises(TargetError, match="ConnectError"):
        await t.apply(spec({"sql": adapters["sql-v1"]}), None)
    await t.aclose()


async def test_options_validated(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"target\.prune"):
        make_target("http://127.0.0.1:1", tmp_path, prune="some")
