"""Run the real daemon as a subprocess against a settings file of the test's own.

    h = DaemonHarness(tmp_path, {"source": {...}, "target": {...}})
    h.start(); h.wait_applied("qwen", revision); h.status(); h.history("qwen"); h.stop()

`cli(*args)` runs any `model-watcher` command with the same settings. Logs go to
tmp_path/daemon.log (JSON lines), kept for the secrets grep and for failure messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.infra.common import ROOT, Proc, wait_until

LOG_DIR = Path(os.environ.get("MODEL_WATCHER_TEST_LOGS", ROOT / ".cache" / "test-logs"))


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(settings: dict[str, Any]) -> str:
    """Enough TOML for settings: scalars first, then one table per dict section."""
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items() if not isinstance(v, dict)]
    for k, v in settings.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{json.dumps(str(kk))} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


class DaemonHarness:
    def __init__(self, tmp: Path, settings: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.settings = {"state_dir": str(tmp / "state"), "log_format": "json", "log_level": "DEBUG",
                         "reconcile": {"wait_min": 0.05, "wait_max": 0.5, "shutdown_grace": 10.0},
                         **settings}
        if "reconcile" in settings:
            self.settings["reconcile"] = {"wait_min": 0.05, "wait_max": 0.5, **settings["reconcile"]}
        self.config = tmp / "watcher.toml"
        self.write_settings()
        self.env = {"PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: Proc | None = None
        self.log_path = tmp / "daemon.log"
        self.starts = 0

    def write_settings(self) -> None:
        self.config.write_text(to_toml(self.settings))

    # -- process -----------------------------------------------------------------
    def start(self, wait_ready: bool = True) -> DaemonHarness:
        self.starts += 1
        self.proc = Proc([sys.executable, "-m", "watcher", "--config", str(self.config), "run"],
                         self.log_path, env=self.env, cwd=ROOT)
        if wait_ready:
            wait_until(lambda: self._running() or self._died(), 30, "the daemon to start")
            self._died()
        return self

    def _running(self) -> bool:
        try:
            return bool(self.status()["daemon"].get("running"))
        except Exception:  # the database may be mid-creation
            return False

    def _died(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"daemon exited with {self.proc.popen.returncode}:\n{self.logs()[-4000:]}")
        return False

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        code = self.proc.stop(timeout)
        self.proc = None
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill9()
        self.proc.stop()
        self.proc = None

    def signal(self, sig: int = signal.SIGHUP) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    # -- CLI -------------------------------------------------------------------
    def cli(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "watcher", "--config", str(self.config), *args],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, **self.env}, timeout=timeout,
            check=check,
        )

    def _state(self) -> Any:
        from watcher.core.state import State

        db = Path(self.settings["state_dir"]) / "state.db"
        if not db.exists():
            return None
        return State(db, readonly=True)

    def status(self) -> dict[str, Any]:
        """What `status --json` prints, read straight from the state (fast, for polling)."""
        state = self._state()
        if state is None:
            return {"daemon": {}, "models": {}, "intents": []}
        try:
            return json.loads(json.dumps(state.status(), default=str))  # type: ignore[no-any-return]
        finally:
            state.close()

    def history(self, model: str, limit: int = 200) -> list[dict[str, Any]]:
        """What `history MODEL --json` prints (without specs), read straight from the state."""
        state = self._state()
        if state is None:
            return []
        try:
            rows: list[dict[str, Any]] = state.history(model, limit)
        finally:
            state.close()
        for r in rows:
            r.pop("spec", None)
        return rows

    def audit(self) -> list[dict[str, Any]]:
        path = Path(self.settings["state_dir"]) / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- waiting -----------------------------------------------------------------
    def wait_outcome(self, model: str, revision: str | None, outcome: str, timeout: float = 30) -> dict[str, Any]:
        """The history row of `model`@`revision` (any revision if None) once it has `outcome`."""

        def found() -> dict[str, Any] | None:
            if self.proc is not None:
                self._died()
            for row in self.history(model):
                if (revision is None or row["revision"] == revision) and row["outcome"] == outcome:
                    return row
            return None

        try:
            row = wait_until(found, timeout, f"{model}@{revision} to be {outcome}", interval=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nhistory: {json.dumps(self.history(model), indent=1)[:3000]}\n"
                               f"log tail:\n{self.logs()[-3000:]}") from None
        assert isinstance(row, dict)
        return row

    def wait_applied(self, model: str, revision: str | None = None, timeout: float = 30) -> dict[str, Any]:
        """Status entry of `model` once `revision` (or anything) is the applied one."""

        def applied() -> dict[str, Any] | None:
            if self.proc is not None:
                self._died()
            m = self.status()["models"].get(model)
            if m and m["applied_revision"] and (revision is None or m["applied_revision"] == revision):
                return dict(m)
            return None

        try:
            m = wait_until(applied, timeout, f"{model}@{revision} to be applied", interval=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nstatus: {self.status()}\nlog tail:\n{self.logs()[-3000:]}") from None
        assert isinstance(m, dict)
        return m

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the daemon's first full reconcile after its start is done (READY): every
        document of the first snapshot has been handled or found handled already, so a
        wrong re-apply would have shown by now."""

        def ready() -> bool:
            if self.proc is not None:
                self._died()
            d = self.status()["daemon"]
            return bool(d.get("running") and d.get("ready_at") and d.get("started_at")
                        and d["ready_at"] >= d["started_at"])

        try:
            wait_until(ready, timeout, "the daemon's first reconcile", interval=0.05)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nstatus: {self.status()}\nlog tail:\n{self.logs()[-3000:]}") from None

    def count(self, model: str, revision: str, outcome: str | None = None) -> int:
        return sum(1 for r in self.history(model) if r["revision"] == revision
                   and (outcome is None or r["outcome"] == outcome))

    def __enter__(self) -> DaemonHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

