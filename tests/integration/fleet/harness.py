"""A fleet for the tests: N real daemons (subprocesses), each beside its own example model
server on its own port, all members of one fleet on one real config center.

Each daemon stays light: INFO logs, no API listener, short quiet windows. Servers and
daemons are started in parallel threads (each start waits for readiness), so a 20-member
fleet is up in a few seconds of wall time. `reports()` reads the members' own reports
straight from the center (etcd through its gateway, independent of the code under test),
which is what the max_unavailable measurement uses.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import wait_until
from tests.infra.daemon import DaemonHarness
from tests.infra.model_server import ModelServer

PREFIX = "/model-watcher/models/"
FLEET = "/model-watcher/fleet/"


def member_id(i: int) -> str:
    return f"m{i:02d}"


class Fleet:
    def __init__(self, root: Path, source: dict[str, Any], n: int, *, ttl: float = 3.0,
                 runtime: bool = True, labels: Any = None, fleet: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        self.root = root
        self.source = source
        self.fleet_options = dict(fleet or {})
        self.ttl = ttl
        self.extra = dict(extra or {})  # more daemon settings, the same for every member
        self.runtime = runtime
        self.labels = labels or (lambda i: {"zone": "a" if i % 2 == 0 else "b"})
        self.servers: dict[str, ModelServer] = {}
        self.daemons: dict[str, DaemonHarness] = {}
        self._parallel(self.add, range(n))
        self._closed = threading.Event()
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        """Reap the servers a `restart` stopped: they are this process's children, and the
        example server's restart waits (up to 5 s) until the old pid is gone, which a zombie
        never is."""
        while not self._closed.wait(0.05):
            for server in list(self.servers.values()):
                if server.proc is not None:
                    server.proc.popen.poll()

    @staticmethod
    def _parallel(fn: Any, items: Any) -> list[Any]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(fn, items))

    def add(self, i: int) -> DaemonHarness:
        """A new member (its server started, its daemon not yet)."""
        mid = member_id(i)
        server = ModelServer(self.root / f"server-{mid}").start()
        settings = {"source": dict(self.source), "log_level": "INFO",
                    "reconcile": {"wait_min": 0.02, "wait_max": 0.2, "shutdown_grace": 10.0},
                    "fleet": {"enabled": True, "member_id": mid, "labels": self.labels(i),
                              "ttl": self.ttl, "probe_interval": 0.5, **self.fleet_options},
                    **server.settings(), **self.extra}
        if not self.runtime:
            settings.pop("runtime")
        daemon = DaemonHarness(self.root / f"daemon-{mid}", settings)
        self.servers[mid], self.daemons[mid] = server, daemon
        return daemon

    @property
    def members(self) -> list[str]:
        return sorted(self.daemons)

    def start(self, members: list[str] | None = None) -> None:
        chosen = members or self.members
        for mid in chosen:
            self.daemons[mid].start(wait_ready=False)
        self._parallel(lambda mid: self.daemons[mid].wait_ready(60), chosen)

    def close(self) -> None:
        self._closed.set()
        self._parallel(lambda d: d.stop(), list(self.daemons.values()))
        self._parallel(lambda s: s.stop(), list(self.servers.values()))

    # -- acting as a pipeline and an operator -------------------------------------------
    def any_daemon(self) -> DaemonHarness:
        return self.daemons[self.members[0]]

    def publish(self, content: bytes, *args: str, name: str = "demo") -> str:
        path = self.root / f"{name}-{time.monotonic_ns()}.yaml"
        path.write_bytes(content)
        out = self.any_daemon().cli("publish", name, str(path), *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def rollout(self, *args: str) -> Any:
        return self.any_daemon().cli("rollout", *args)

    def status_json(self, model: str = "demo") -> dict[str, Any]:
        out = self.rollout("status", model, "--json")
        assert out.returncode == 0, out.stderr
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    # -- what each member says about itself ------------------------------------------------
    def applied(self, model: str = "demo") -> dict[str, str | None]:
        """member -> applied revision, from each daemon's own state."""
        out: dict[str, str | None] = {}
        for mid, d in self.daemons.items():
            m = d.status()["models"].get(model)
            out[mid] = m["applied_revision"] if m else None
        return out

    def wait_all_applied(self, revision: str, model: str = "demo", timeout: float = 60,
                         members: list[str] | None = None) -> None:
        chosen = members or self.members
        wait_until(lambda: all(self.applied(model)[m] == revision for m in chosen), timeout,
                   f"{model}@{revision} on {len(chosen)} members")

    def applied_rows(self, model: str, revision: str) -> dict[str, list[dict[str, Any]]]:
        """member -> its history rows of `revision` whose outcome is applied."""
        return {mid: [r for r in d.history(model) if r["revision"] == revision
                      and r["outcome"] == "applied"] for mid, d in self.daemons.items()}


class EtcdView:
    """Reads the fleet's keys straight from etcd's gateway (test-side, independent)."""

    def __init__(self, endpoint: str, prefix: str = FLEET) -> None:
        self.endpoint = endpoint
        self.prefix = prefix

    def _range(self, prefix: str) -> dict[str, bytes]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        data = httpx.post(f"{self.endpoint}/v3/kv/range", timeout=5, json={
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(end.encode()).decode()}).json()
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                for kv in data.get("kvs", [])}

    def record(self, model: str = "demo") -> dict[str, Any] | None:
        raw = self._range(self.prefix + "rollouts/" + model).get(self.prefix + "rollouts/" + model)
        return json.loads(raw) if raw else None

    def reports(self) -> dict[str, dict[str, Any]]:
        return {json.loads(v)["id"]: json.loads(v) for v in self._range(self.prefix + "members/").values()}

    def leader(self) -> str | None:
        raw = self._range(self.prefix + "leader").get(self.prefix + "leader")
        return raw.decode() if raw else None


class ReportStream:
    """Every change of the members' reports, in etcd's order (one watch from now on, read by
    a thread), and the most members that reported `restarting` a model at any one revision:
    the max_unavailable measurement, from the members' own reports."""

    def __init__(self, endpoint: str, model: str = "demo", prefix: str = FLEET + "members/") -> None:
        self.model = model
        self.restarting: set[str] = set()
        self.max_restarting = 0
        self.seen_restarting: set[str] = set()
        self.events = 0
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        self._body = {"create_request": {"key": base64.b64encode(prefix.encode()).decode(),
                                         "range_end": base64.b64encode(end.encode()).decode()}}
        self._url = f"{endpoint}/v3/watch"
        self._client = httpx.Client(timeout=httpx.Timeout(5.0, read=None))
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the report watch did not start")

    def _run(self) -> None:
        try:
            with self._client.stream("POST", self._url, json=self._body) as response:
                for line in response.iter_lines():
                    result = json.loads(line).get("result", {}) if line.strip() else {}
                    if result.get("created"):
                        self._ready.set()
                    for event in result.get("events") or []:
                        self._apply(event)
        except (httpx.HTTPError, ValueError):
            return  # closed by close(), or etcd went away (the test notices)

    def _apply(self, event: dict[str, Any]) -> None:
        self.events += 1
        key = base64.b64decode(event["kv"]["key"]).decode()
        member = key.rsplit("/", 1)[-1]
        if event.get("type") == "DELETE":
            self.restarting.discard(member)
        else:
            report = json.loads(base64.b64decode(event["kv"].get("value", "")))
            state = (report.get("m", {}).get(self.model) or [""] * 5)[4]
            if state == "restarting":
                self.restarting.add(member)
                self.seen_restarting.add(member)
            else:
                self.restarting.discard(member)
        self.max_restarting = max(self.max_restarting, len(self.restarting))

    def close(self) -> None:
        self._client.close()
        self._thread.join(5)
