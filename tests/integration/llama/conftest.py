"""Fixtures for the llama-server tests: tiny GGUF files (session), their reference token ids
(from a llama-server of the session's own), and per test a pair of router-mode llama-servers
behind nginx (the deployment the `llama-server` target swaps through).

The reference server is started with a preset written here (never by the target) holding one
entry per file/adapter combination, so a test can say "this answer came from model B" by
comparing token ids with what B answers on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.llama import RouterPair, running_llama, running_pair
from tests.infra.llama_models import write_lora, write_model


@dataclass(frozen=True)
class Tiny:
    a: Path
    b: Path
    lora: Path
    corrupt: Path


@dataclass(frozen=True)
class Reference:
    """Token ids each combination answers (`/completion`, temperature 0)."""

    a: tuple[int, ...]
    b: tuple[int, ...]
    a_lora: tuple[int, ...]       # adapter at scale 1
    a_lora_neg: tuple[int, ...]   # adapter at scale -1


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    d = tmp_path_factory.mktemp("gguf")
    a, b = write_model(d / "a.gguf", seed=1), write_model(d / "b.gguf", seed=2)
    lora = write_lora(d / "lora.gguf", seed=11)
    corrupt = d / "corrupt.gguf"  # a GGUF header, then the tensors cut short: loading fails
    corrupt.write_bytes(b.read_bytes()[: b.stat().st_size // 2])
    return Tiny(a, b, lora, corrupt)


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny: Tiny) -> Reference:
    workdir = tmp_path_factory.mktemp("llama-ref")
    (workdir / "models.ini").write_text(
        "version = 1\n"
        f"[a]\nmodel = {tiny.a}\n"
        f"[b]\nmodel = {tiny.b}\n"
        f"[a-lora]\nmodel = {tiny.a}\nlora-scaled = {tiny.lora}:1\n"
        f"[a-lora-neg]\nmodel = {tiny.a}\nlora-scaled = {tiny.lora}:-1\n"
    )
    with running_llama(workdir, models_max=4) as server:
        ref = Reference(server.tokens("a"), server.tokens("b"), server.tokens("a-lora"),
                        server.tokens("a-lora-neg"))
    # the premise of every test here: each combination answers differently
    assert len({ref.a, ref.b, ref.a_lora, ref.a_lora_neg}) == 4, ref
    return ref


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[RouterPair]:
    with running_pair(tmp_path / "llama", models_max=4) as routers:
        yield routers
