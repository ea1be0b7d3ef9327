"""A real MLServer (Open Inference Protocol V2 + model repository API) for the tests.

MLServer pins protobuf < 7, so it lives in a virtual environment of its own under the test
cache (`.cache/mlserver/venv`), created with uv on first use and reused while the pinned
package list is unchanged. Its default worker pool crashes with uvloop >= 0.22 (MLServer
issue #2286): uvloop is pinned and `parallel_workers` is 0 (inference in the main process).

`train_models` fits two tiny scikit-learn regressions whose predictions differ (y = 2x and
y = 3x), so a test can tell which one is serving from a single inference.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import CACHE, Proc, free_port, require_binary, wait_until

PACKAGES = ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0", "scikit-learn")
IMPLEMENTATION = "mlserver_sklearn.SKLearnModel"
VENV = CACHE / "mlserver" / "venv"

_TRAIN = """
import sys, joblib, numpy as np
from sklearn.linear_model import LinearRegression
x = np.arange(10, dtype=float).reshape(-1, 1)
for slope, path in zip((2.0, 3.0), sys.argv[1:]):
    joblib.dump(LinearRegression().fit(x, slope * x.ravel()), path)
"""


def ensure_venv() -> Path:
    """The MLServer venv's bin/ directory; created (under a file lock) when missing/stale."""
    uv = require_binary("uv", "PyPI package uv; scripts/deps/00-python.sh")
    marker = VENV / ".model-watcher-packages"
    wanted = "\n".join(PACKAGES)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == wanted and (VENV / "bin/mlserver").exists():
            return VENV / "bin"
        # the interpreter running the tests (3.11, never a download of a managed Python)
        subprocess.run([uv, "venv", "-q", "--clear", "--python", sys.executable, str(VENV)],
                       check=True, timeout=300)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(VENV / "bin/python"),
                        *PACKAGES], check=True, timeout=900)
        marker.write_text(wanted)
    return VENV / "bin"


def train_models(out: Path) -> tuple[Path, Path]:
    """Two joblib models: `double.joblib` predicts 2x, `triple.joblib` predicts 3x."""
    out.mkdir(parents=True, exist_ok=True)
    double, triple = out / "double.joblib", out / "triple.joblib"
    if not (double.exists() and triple.exists()):
        subprocess.run([str(ensure_venv() / "python"), "-c", _TRAIN, str(double), str(triple)],
                       check=True, timeout=120)
    return double, triple


def model_settings(name: str, uri: Path | str) -> dict[str, Any]:
    return {"name": name, "implementation": IMPLEMENTATION, "parameters": {"uri": str(uri)}}


def infer_body(x: float = 1.0) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [x]}]}


def prediction(resp: httpx.Response) -> float:
    resp.raise_for_status()
    return float(resp.json()["outputs"][0]["data"][0])


class MLServer:
    """`mlserver start REPO` on free loopback ports; `stop()` promises the process is gone."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.repository = workdir / "repository"
        self.repository.mkdir(parents=True, exist_ok=True)
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc: Proc | None = None

    def add_model(self, name: str, uri: Path | str) -> None:
        """Place a model-settings.json by hand (what an operator would start with)."""
        d = self.repository / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "model-settings.json").write_text(json.dumps(model_settings(name, uri)))

    def start(self, timeout: float = 90.0) -> MLServer:
        bin_dir = ensure_venv()
        settings = {
            "host": "127.0.0.1", "http_port": self.http_port, "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port, "parallel_workers": 0, "debug": False,
            "load_models_at_startup": True,
        }
        (self.repository / "settings.json").write_text(json.dumps(settings))
        self.proc = Proc([str(bin_dir / "mlserver"), "start", str(self.repository)],
                         self.workdir / "mlserver.log", cwd=self.workdir,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "VIRTUAL_ENV": str(VENV)})
        started = time.monotonic()
        try:
            wait_until(self._ready, timeout, f"MLServer ready on {self.url}", interval=0.2)
        except TimeoutError as exc:
            out = self.proc.output()[-3000:]
            self.stop()
            raise RuntimeError(f"MLServer did not start: {exc}\n{out}") from None
        self.startup_seconds = time.monotonic() - started
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"MLServer exited:\n{self.proc.output()[-3000:]}")
        return httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200

    def predict(self, name: str, x: float = 1.0) -> float:
        return prediction(httpx.post(f"{self.url}/v2/models/{name}/infer", json=infer_body(x),
                                     timeout=10))

    def ready(self, name: str) -> int:
        return httpx.get(f"{self.url}/v2/models/{name}/ready", timeout=5).status_code

    def log(self) -> str:
        if self.proc is None or not self.proc.log_path.exists():
            return ""
        return self.proc.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=15)


@contextlib.contextmanager
def running_mlserver(workdir: Path) -> Iterator[MLServer]:
    server = MLServer(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
