"""A real Nacos server (3.1, Java) for the tests, built from Maven Central and run on loopback.

The official server modules are not on Maven Central; `io.github.pig-mesh.nacos` republishes
them (see tests/infra/nacos/pom.xml). `build()` resolves the jars with
`mvn dependency:copy-dependencies` (the local Maven repository, ~/.m2, is the download cache;
the copied lib dir lives under .cache/nacos keyed by the pom's hash) and compiles the boot
class NacosTestServer.java with javac. A missing `java`/`javac`/`mvn` makes the test fail
with a hint (scripts/deps/30-nacos.sh installs them), never skip.

`NacosServer(dir, auth=True).start()` runs it standalone with embedded Derby storage under
`dir`, HTTP on 127.0.0.1:PORT (context /nacos) and gRPC on PORT+1000. Nacos also opens
PORT-1000 (raft) and PORT+1001 (cluster gRPC), so all four must be free. With auth on, a
fresh server gets its admin password set (`/v3/auth/user/admin`) and readiness means a login
succeeds. `stop()` then `start()` restarts it on the same ports with the same data, which is
how the outage tests take Nacos away and bring it back.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import CACHE, Proc, require_binary, wait_until

HERE = Path(__file__).resolve().parent / "nacos"
POM = HERE / "pom.xml"
BOOT = HERE / "NacosTestServer.java"
HINT = "Java 17 JDK and Maven (scripts/deps/30-nacos.sh)"
READY_TIMEOUT = 120.0
GRPC_OFFSET = 1000
ADMIN = "nacos"


def _sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialize builds between concurrent test sessions on one machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build() -> str:
    """Resolve the server's jars and compile the boot class; return the java classpath."""
    java = require_binary("java", HINT)
    javac = require_binary("javac", HINT)
    mvn = require_binary("mvn", HINT)
    root = CACHE / "nacos" / _sha(POM, BOOT)
    lib, classes, done = root / "lib", root / "classes", root / "built"
    with _locked(CACHE / "nacos" / ".lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)
            classes.mkdir(parents=True)
            mvn_argv = [mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
                        f"-DoutputDirectory={lib}", "-DincludeScope=runtime"]
            if repo := os.environ.get("MODEL_WATCHER_M2_REPO"):
                mvn_argv.append(f"-Dmaven.repo.local={repo}")
            _run(mvn_argv, "resolving the Nacos server jars from Maven Central", 900)
            _run([javac, "-d", str(classes), "-cp", f"{lib}/*", str(BOOT)],
                 "compiling the Nacos boot class", 300)
            done.write_text(java + "\n")
    return f"{classes}{os.pathsep}{lib}/*"


def _run(argv: list[str], what: str, timeout: float) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n"
                           f"{(result.stdout + result.stderr)[-4000:]}")


def _bindable(port: int) -> bool:
    if not 1024 < port < 65535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))  # Nacos's raft port binds every interface
        except OSError:
            return False
    return True


def pick_main_port() -> int:
    """A main port P with P-1000, P+1000 and P+1001 free too (raft, gRPC, cluster gRPC)."""
    for _ in range(200):
        port = secrets.randbelow(60000 - 2000) + 2000
        if all(_bindable(port + d) for d in (0, -1000, GRPC_OFFSET, GRPC_OFFSET + 1)):
            return port
    raise RuntimeError("no free port quadruple for Nacos (P-1000, P, P+1000, P+1001)")


class NacosServer:
    """One standalone Nacos on loopback. `password` is the admin (`nacos`) password."""

    def __init__(self, home: Path, *, auth: bool = True, password: str | None = None,
                 heap: str = "512m", properties: dict[str, str] | None = None) -> None:
        self.home = home
        self.auth = auth
        self.username = ADMIN
        self.password = password or ("pw-" + secrets.token_urlsafe(12))
        self.heap = heap
        self.extra = dict(properties or {})
        self.port = pick_main_port()
        self.grpc_port = self.port + GRPC_OFFSET
        self.url = f"http://127.0.0.1:{self.port}/nacos"
        self.address = f"127.0.0.1:{self.port}"
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.identity = secrets.token_hex(8)
        self.proc: Proc | None = None
        self.starts = 0
        self.start_seconds: list[float] = []

    # -- lifecycle ---------------------------------------------------------------------
    def _properties(self) -> str:
        props = {
            "nacos.standalone": "true",
            "nacos.deployment.type": "server",
            "nacos.server.main.port": str(self.port),
            "nacos.server.contextPath": "/nacos",
            "server.address": "127.0.0.1",
            "nacos.server.ip": "127.0.0.1",
            "nacos.inetutils.ip-address": "127.0.0.1",
            "nacos.remote.grpc.listen.ip": "127.0.0.1",
            "nacos.logs.path": str(self.home / "logs"),
            "spring.sql.init.platform": "",
            "nacos.core.auth.enabled": str(self.auth).lower(),
            "nacos.core.auth.admin.enabled": "true",
            "nacos.core.auth.console.enabled": "true",
            "nacos.core.auth.system.type": "nacos",
            "nacos.core.auth.plugin.nacos.token.secret.key": self.secret,
            "nacos.core.auth.plugin.nacos.token.expire.seconds": "18000",
            "nacos.core.auth.server.identity.key": "mw-test-identity",
            "nacos.core.auth.server.identity.value": self.identity,
            "nacos.naming.empty-service.auto-clean": "true",
            "nacos.extension.ai.enabled": "false",
            "management.endpoints.web.exposure.include": "health",
            **self.extra,
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self, timeout: float = READY_TIMEOUT) -> NacosServer:
        classpath = build()
        java = require_binary("java", HINT)
        conf = self.home / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "application.properties").write_text(self._properties())
        argv = [java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-Djava.security.egd=file:/dev/./urandom",
                "-Dnacos.standalone=true", f"-Dnacos.home={self.home}",
                "-Dnacos.deployment.type=server", f"-Dnacos.server.main.port={self.port}",
                "-Dnacos.remote.grpc.listen.ip=127.0.0.1", "-Dnacos.server.ip=127.0.0.1",
                f"-Dnacos.logs.path={self.home / 'logs'}", f"-DJM.LOG.PATH={self.home / 'logs'}",
                f"-DJM.SNAPSHOT.PATH={self.home}", "-Duser.home=" + str(self.home),
                "-cp", classpath, "NacosTestServer",
                f"--spring.config.additional-location=file:{conf}/"]
        began = time.monotonic()
        self.proc = Proc(argv, self.home / f"server-{self.starts}.log", cwd=self.home)
        self.starts += 1
        try:
            wait_until(self._ready, timeout, f"Nacos on {self.address}", interval=0.5)
        except BaseException:
            tail = self.proc.output()[-4000:]
            self.stop()
            raise RuntimeError(f"Nacos did not become ready within {timeout:g}s:\n{tail}") from None
        self.start_seconds.append(time.monotonic() - began)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"Nacos exited with {self.proc.popen.returncode}:\n"
                               f"{self.proc.output()[-4000:]}")
        if not self.auth:
            r = httpx.get(f"{self.url}/v3/client/cs/config",
                          params={"dataId": "readiness", "groupName": "readiness"}, timeout=2)
            return r.status_code < 500 and self._grpc_open()
        # A fresh server needs its admin password set; on a restart this answers "exists".
        httpx.post(f"{self.url}/v3/auth/user/admin", data={"password": self.password}, timeout=2)
        return self.token() is not None and self._grpc_open()

    def _grpc_open(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.grpc_port), 1):
            return True
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=20)
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    # -- test helpers (the open API, independent of the code under test) -----------------
    def token(self, username: str | None = None, password: str | None = None) -> str | None:
        r = httpx.post(f"{self.url}/v3/auth/user/login", timeout=5,
                       data={"username": username or self.username,
                             "password": password or self.password})
        if r.status_code != 200:
            return None
        token = r.json().get("accessToken")
        return str(token) if token else None

    def _auth_params(self) -> dict[str, str]:
        if not self.auth:
            return {}
        token = self.token()
        assert token, "admin login failed"
        return {"accessToken": token}

    def admin(self, method: str, path: str, **params: Any) -> Any:
        """Call the admin open API (`/v3/admin/...`) as the admin user; returns `data`."""
        r = httpx.request(method, f"{self.url}{path}", timeout=10,
                          params={**self._auth_params(), **params} if method == "GET" else
                          self._auth_params(),
                          data=None if method == "GET" else params)
        r.raise_for_status()
        body = r.json()
        if body.get("code") not in (0, 200):
            raise RuntimeError(f"{method} {path}: {body}")
        return body.get("data")

    def put(self, data_id: str, content: str | bytes, group: str = "MODEL_SERVING",
            namespace: str = "") -> str:
        """Write a config straight into Nacos (bypassing model-watcher); returns its md5."""
        text = content.decode() if isinstance(content, bytes) else content
        self.admin("POST", "/v3/admin/cs/config", dataId=data_id, groupName=group,
                   namespaceId=namespace or "public", content=text, type="yaml")
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    def delete(self, data_id: str, group: str = "MODEL_SERVING", namespace: str = "") -> None:
        r = httpx.delete(f"{self.url}/v3/admin/cs/config", timeout=10,
                         params={**self._auth_params(), "dataId": data_id, "groupName": group,
                                 "namespaceId": namespace or "public"})
        r.raise_for_status()

    def get(self, data_id: str, group: str = "MODEL_SERVING",
            namespace: str = "") -> tuple[str, str] | None:
        """(content, md5) as Nacos serves it, or None when absent."""
        r = httpx.get(f"{self.url}/v3/admin/cs/config", timeout=10,
                      params={**self._auth_params(), "dataId": data_id, "groupName": group,
                              "namespaceId": namespace or "public"})
        if r.status_code == 404:
            return None
        r.raise_for_status()
        data = r.json().get("data")
        if not data:
            return None
        return str(data["content"]), str(data["md5"])

    def create_namespace(self, namespace: str) -> None:
        self.admin("POST", "/v3/admin/core/namespace", namespaceId=namespace,
                   namespaceName=namespace, namespaceDesc="model-watcher tests")

    def create_user(self, username: str, password: str) -> None:
        self.admin("POST", "/v3/auth/user", username=username, password=password)

    def __enter__(self) -> NacosServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
