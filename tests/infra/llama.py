"""A real llama.cpp `llama-server` in router mode for the tests.

The binary is built once per machine from the pinned sdist (tests/infra/llama_build.py,
run by scripts/deps/05-llama.sh + 95-llama.sh). Each server gets a temp dir of its own: a
models directory, the preset file (`models.ini`, which the `llama-server` target owns once a
daemon runs), an empty `LLAMA_CACHE` (so no Hugging Face cache of the host leaks in), and a
free loopback port; readiness is `GET /health` answering 200, polled with a deadline.

Helpers speak the server's own API: `tokens(model)` asks `/completion` at temperature 0
with `return_tokens` and gives the generated token ids, which identify the weights (tiny
random models produce noise as text, so text is never compared). `RouterPair` is the
deployment the `llama-server` target drives: two routers sharing a models directory behind
one nginx upstream (docs/llama.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import Proc, free_port, wait_until
from tests.infra.llama_build import ensure_built

PROMPT = "hello world"
#: Small and fixed, so every answer is a handful of tokens and costs a few milliseconds.
N_PREDICT = 8
#: Options every child instance inherits: a small context, one thread (2 shared cores),
#: one slot per model, no warm-up run.
CHILD_ARGS = ("--ctx-size", "256", "--threads", "1", "--parallel", "2", "--no-warmup")


def completion_body(model: str, prompt: str = PROMPT, n: int = N_PREDICT) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "n_predict": n, "temperature": 0,
            "top_k": 1, "seed": 1, "return_tokens": True, "cache_prompt": False}


def chat_body(model: str, n: int = N_PREDICT) -> dict[str, Any]:
    """A chat completion that reports its token ids (logprobs carry them) at temperature 0."""
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": n,
            "temperature": 0, "top_k": 1, "seed": 1, "logprobs": True, "cache_prompt": False}


def chat_tokens(resp: httpx.Response) -> tuple[int, ...]:
    """The generated token ids of a chat completion (raises on any error answer)."""
    resp.raise_for_status()
    content = resp.json()["choices"][0]["logprobs"]["content"]
    return tuple(int(c["id"]) for c in content)


class LlamaServer:
    """`llama-server` in router mode on a free loopback port; `stop()` promises it is gone."""

    def __init__(self, workdir: Path, *, models_max: int = 4, extra: Sequence[str] = (),
                 models_dir: Path | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.models_dir = models_dir or workdir / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.preset = workdir / "models.ini"
        if not self.preset.exists():
            self.preset.write_text("version = 1\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.models_max = models_max
        self.extra = tuple(extra)
        self.proc: Proc | None = None

    def argv(self) -> list[str]:
        return [str(ensure_built()), "--host", "127.0.0.1", "--port", str(self.port),
                "--models-preset", str(self.preset), "--models-max", str(self.models_max),
                "--no-webui", *CHILD_ARGS, *self.extra]

    def start(self, timeout: float = 60.0) -> LlamaServer:
        cache = self.workdir / "hf-cache"
        cache.mkdir(exist_ok=True)
        self.proc = Proc(self.argv(), self.workdir / "llama-server.log", cwd=self.workdir,
                         env={"LLAMA_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
        try:
            wait_until(self._ready, timeout, f"llama-server ready on {self.url}", interval=0.1)
        except (TimeoutError, RuntimeError) as exc:
            out = self.proc.output()[-3000:]
            self.stop()
            raise RuntimeError(f"llama-server did not start: {exc}\n{out}") from None
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"llama-server exited:\n{self.proc.output()[-3000:]}")
        return httpx.get(f"{self.url}/health", timeout=1).status_code == 200

    # -- the server's API -----------------------------------------------------------------
    def models(self) -> dict[str, dict[str, Any]]:
        """Router entries by id (`GET /models`)."""
        resp = httpx.get(f"{self.url}/models", timeout=10)
        resp.raise_for_status()
        return {m["id"]: m for m in resp.json()["data"]}

    def status(self, model: str) -> str | None:
        entry = self.models().get(model)
        return None if entry is None else str(entry["status"]["value"])

    def loaded(self) -> set[str]:
        return {name for name, m in self.models().items() if m["status"]["value"] == "loaded"}

    def tokens(self, model: str, prompt: str = PROMPT) -> tuple[int, ...]:
        """Token ids generated at temperature 0 (`/completion` with `return_tokens`)."""
        resp = httpx.post(f"{self.url}/completion", json=completion_body(model, prompt), timeout=60)
        resp.raise_for_status()
        return tuple(int(t) for t in resp.json()["tokens"])

    def chat(self, model: str) -> tuple[int, ...]:
        return chat_tokens(httpx.post(f"{self.url}/v1/chat/completions", json=chat_body(model),
                                      timeout=60))

    def log(self) -> str:
        return self.proc.output() if self.proc is not None else ""

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=20)


class RouterPair:
    """Two routers sharing a models directory, behind one nginx upstream named `llama`:
    the deployment the `llama-server` target swaps through (see docs/llama.md)."""

    def __init__(self, workdir: Path, models_max: int = 4) -> None:
        from tests.infra.nginx import Nginx

        self.models_dir = workdir / "models"
        self.blue = LlamaServer(workdir / "blue", models_max=models_max, models_dir=self.models_dir)
        self.green = LlamaServer(workdir / "green", models_max=models_max, models_dir=self.models_dir)
        self.nginx = Nginx(workdir / "nginx", "llama")
        self.url = self.nginx.url

    def start(self) -> RouterPair:
        self.blue.start()
        self.green.start()
        self.nginx.start()
        return self

    def stop(self) -> None:
        self.nginx.stop()
        self.blue.stop()
        self.green.stop()

    def target_options(self) -> dict[str, Any]:
        """The daemon's `[target]` settings for this pair."""
        root = self.nginx.root
        return {
            "kind": "llama-server", "models_dir": str(self.models_dir),
            "routers": [{"url": s.url, "preset": str(s.preset)} for s in (self.blue, self.green)],
            "nginx": {"upstream_file": str(self.nginx.upstream_file), "upstream": "llama",
                      "binary": self.nginx.binary, "conf": str(self.nginx.conf), "prefix": str(root),
                      "pid_file": str(root / "nginx.pid")},
        }

    def active(self) -> LlamaServer:
        from watcher.routers.nginx import read_weights

        weights = read_weights(self.nginx.upstream_file)
        return self.blue if weights.get(f"127.0.0.1:{self.blue.port}") else self.green

    def tokens(self, model: str, prompt: str = PROMPT) -> tuple[int, ...]:
        """Token ids through nginx, as a client gets them."""
        resp = httpx.post(f"{self.url}/completion", json=completion_body(model, prompt), timeout=60)
        resp.raise_for_status()
        return tuple(int(t) for t in resp.json()["tokens"])

    def chat(self, model: str) -> tuple[int, ...]:
        return chat_tokens(httpx.post(f"{self.url}/v1/chat/completions", json=chat_body(model),
                                      timeout=60))

    def loaded(self) -> dict[str, set[str]]:
        return {"blue": self.blue.loaded(), "green": self.green.loaded()}


@contextlib.contextmanager
def running_pair(workdir: Path, **kwargs: Any) -> Iterator[RouterPair]:
    pair = RouterPair(workdir, **kwargs)
    try:
        yield pair.start()
    finally:
        pair.stop()


@contextlib.contextmanager
def running_llama(workdir: Path, **kwargs: Any) -> Iterator[LlamaServer]:
    server = LlamaServer(workdir, **kwargs)
    try:
        yield server.start()
    finally:
        server.stop()
