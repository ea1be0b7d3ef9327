"""The hostile documents: every case of issue 11's first list plus the grammar cases, each
with the words its one-line reason must contain. Shared by the hostile daemon suite, the CLI
verdict test (tests/unit/test_verdicts.py) and the fuzz harness's seeds.

`cases(root)` builds them for a daemon whose `trust.allowed_roots` is [root], environment
"production" and `policy.env.allow` ["SERVER_FLAVOR"] (tests/infra/model_server.py); files the
verification cases need (a weights directory with a symlinked subdirectory, a symlink out of
the root) are created under `root`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NAME = "demo"
HOSTILE_VERSION = "v1.99.0"  # above every valid version, so no case is refused as a downgrade


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes
    reason: str  # a substring of the one-line reason (the daemon's, validate's and publish's)


def valid(root: Path, i: int, **extra: Any) -> dict[str, Any]:
    """A document the suite's daemon applies (a hot swap of `temperature`)."""
    return {"name": NAME, "version": f"v1.0.{i}",
            "runtime": {"env": {"SERVER_FLAVOR": "small"}},
            "model": {"uri": (root / "demo").as_uri(), "parameters": {"temperature": round(0.1 + i / 1000, 3)}},
            "metadata": {"model_id": f"demo-{i}"}, **extra}


def _doc(root: Path, **changes: Any) -> dict[str, Any]:
    doc = valid(root, 0)
    doc["version"] = HOSTILE_VERSION
    for path, value in changes.items():
        node = doc
        *parents, last = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return doc


def _yaml(doc: dict[str, Any]) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False).encode()


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()  # allow_nan: NaN/Infinity written as the bare words


def alias_bomb() -> bytes:
    """~500 bytes that expand to 9^9 strings (the issue's 2 GiB document)."""
    lines = [f"name: {NAME}", f"version: {HOSTILE_VERSION}", "model:", "  uri: file:///srv/m",
             "  parameters:", "    a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    prev = "a"
    for n in "bcdefghi":
        lines.append(f"    {n}: &{n} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = n
    return ("\n".join(lines) + "\n").encode()


def _files(root: Path) -> tuple[Path, Path]:
    weights = root / "sharded"
    if not weights.exists():
        (root / "shards-elsewhere").mkdir(parents=True, exist_ok=True)
        (root / "shards-elsewhere" / "part-0.bin").write_bytes(b"0" * 64)
        weights.mkdir()
        (weights / "config.json").write_bytes(b"{}")
        (weights / "shards").symlink_to(root / "shards-elsewhere", target_is_directory=True)
    escape = root / "etc-link"
    if not escape.is_symlink():
        escape.symlink_to("/etc", target_is_directory=True)
        (root / "loop").symlink_to(root / "loop")
        os.mkfifo(root / "fifo")
    return weights, escape


def cases(root: Path) -> list[Case]:
    weights, escape = _files(root)
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    y, j = _yaml, _json
    env = "runtime__env"
    out = [
        # -- the parser's bounds
        Case("alias-bomb", alias_bomb(), "YAML aliases are not allowed"),
        Case("deep-yaml", y(_doc(root, model__parameters={"deep": deep})), "nests deeper than 32"),
        Case("deep-json", b'{"name": "demo", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
             "nests deeper than 32"),
        Case("many-values", y(_doc(root, model__parameters={"stop": list(range(20_000))})),
             "more than 5000 values"),
        Case("too-big", b"name: demo\n#" + b"x" * (256 * 1024), "over the limit of 262144"),
        Case("not-utf8", b"name: demo\nversion: \xff\xfe\n", "not UTF-8"),
        Case("duplicate-key-yaml", y(_doc(root)) + b"version: v9.9.9\n", "duplicate key 'version'"),
        Case("duplicate-key-json", j(_doc(root))[:-1] + b', "version": "v9.9.9"}', "duplicate key 'version'"),
        Case("nan-yaml", y(_doc(root, model__parameters={"temperature": float("nan")})), "not finite"),
        Case("nan-json", j(_doc(root, model__parameters={"temperature": float("nan")})), "NaN is not allowed"),
        Case("infinity-json", j(_doc(root, model__parameters={"max_tokens": float("inf")})),
             "Infinity is not allowed"),
        Case("nan-string-metric", y(_doc(root, metadata__metrics={"accuracy": "nan"})), "finite number"),
        Case("huge-int", y(_doc(root, model__parameters={"seed": 2**70})), "does not fit in 64 bits"),
        Case("binary-tag", y(_doc(root)) + b"extra: !!binary aGVsbG8=\n", "tag 'binary'"),
        Case("bool-key", y(_doc(root)).replace(b"parameters:\n", b"parameters:\n    on: 1\n"),
             "is a bool, not a string"),
        Case("terminal-escape", y(_doc(root, metadata__model_id="\x1b]0;pwned\x07")), "control character"),
        # -- the grammar of where each value goes
        Case("env-name-equals", y(_doc(root, **{env: {"SERVER_FLAVOR=x": "y"}})), "is not a POSIX"),
        Case("env-name-empty", y(_doc(root, **{env: {"": "y"}})), "is not a POSIX"),
        Case("env-value-nul", y(_doc(root, **{env: {"SERVER_FLAVOR": "a\x00b"}})), "control character"),
        Case("env-value-newline", y(_doc(root, **{env: {"SERVER_FLAVOR": "a\nLD_PRELOAD=x"}})),
             "control character"),
        Case("argument-nul", y(_doc(root, runtime__args=["--ok", "x\x00y"])), "control character"),
        Case("port-zero", y(_doc(root, runtime__ports={"http": 0})), "port 0 is not in 1-65535"),
        Case("port-too-big", y(_doc(root, runtime__ports={"http": 70000})), "is not in 1-65535"),
        Case("image-whitespace", y(_doc(root, runtime__image="nginx latest")), "not a valid image reference"),
        Case("image-newline", y(_doc(root, runtime__image="nginx\n--privileged")), "not a valid image"),
        Case("uri-scheme", y(_doc(root, model__uri="ftp://mirror.example/m.bin")),
             "scheme 'ftp' is not in policy.uri_schemes"),
        Case("uri-javascript", y(_doc(root, model__uri="javascript:alert(1)")), "scheme 'javascript'"),
        Case("uri-relative", y(_doc(root, model__uri="models/x.bin")), "is a relative path"),
        Case("uri-dotdot", y(_doc(root, model__uri=(root / "demo").as_uri() + "/../../../etc/shadow")),
             "has a '..' path segment"),
        Case("uri-encoded-dotdot", y(_doc(root, model__uri=(root / "%2e%2e" / "etc").as_uri())),
             "has a '..' path segment"),
        Case("health-url", y(_doc(root, health={"url": "http://169.254.169.254/latest/meta-data"})),
             "health.url: a document cannot choose the probe URL"),
        Case("health-path-host", y(_doc(root, health={"path": "@evil.example/x"})), "health.path"),
        Case("health-year-delay", y(_doc(root, health={"initial_delay": 31_536_000})),
             "health.initial_delay 3.1536e+07 is over the 60"),
        Case("health-day-period", y(_doc(root, health={"period": 86_400})), "health.period 86400 is over"),
        Case("health-huge-threshold", y(_doc(root, health={"failure_threshold": 10**9})),
             "health.failure_threshold 1e+09 is over"),
        # -- what a document may set for a process on this host
        Case("env-path", y(_doc(root, **{env: {"PATH": "/tmp/evil:/usr/bin"}})), "PATH is a protected variable"),
        Case("env-ld-preload", y(_doc(root, **{env: {"LD_PRELOAD": "/tmp/evil.so"}})),
             "LD_PRELOAD is a protected variable"),
        Case("env-pythonpath", y(_doc(root, **{env: {"PYTHONPATH": "/tmp/evil"}})), "PYTHONPATH is a protected"),
        Case("env-not-allowed", y(_doc(root, **{env: {"OTHER_KNOB": "1"}})), "OTHER_KNOB is not in policy.env.allow"),
        Case("env-reserved", y(_doc(root, **{env: {"MODEL_WATCHER_SPEC_FILE": "/etc/shadow"}})),
             "reserved for the daemon"),
        # -- channels: a whole pre-release from the configured set
        Case("channel-hotfix-dev", y(_doc(root, version="v1.99.1-hotfix-dev")), "on the 'pre' channel"),
        Case("channel-release-word", y(_doc(root, version="v1.99.1-release")), "on the 'pre' channel"),
        Case("channel-dev", y(_doc(root, version="v1.99.1-dev")), "on the 'dev' channel"),
        # -- weights and adapters under trust.allowed_roots, symlinks resolved
        Case("model-outside-roots", y(_doc(root, model__uri="file:///etc/hostname")),
             "model.uri /etc/hostname is outside trust.allowed_roots"),
        Case("adapter-outside-roots", y(_doc(root, model__adapters=[{"name": "lora", "uri": "file:///etc/passwd"}])),
             "adapter lora uri /etc/passwd is outside trust.allowed_roots"),
        Case("adapter-symlink-out", y(_doc(root, model__adapters=[
            {"name": "lora", "uri": (escape / "passwd").as_uri()}])), "is outside trust.allowed_roots"),
        Case("symlinked-subdirectory", y(_doc(root, model__uri=weights.as_uri(), model__sha256="0" * 64)),
             "shards is a symlink"),
        Case("weights-symlink-loop", y(_doc(root, model__uri=(root / "loop").as_uri())), "cannot be resolved"),
        Case("weights-fifo", y(_doc(root, model__uri=(root / "fifo").as_uri(), model__sha256="0" * 64)),
             "is not a regular file or directory"),
    ]
    names = [c.name for c in out]
    assert len(names) == len(set(names))
    return out
