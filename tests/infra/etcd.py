"""Real etcd (Debian etcd-server 3.4) for the tests: members, clusters, TLS, a cuttable proxy.

Every member lives in a temp dir of its own on free loopback ports; readiness is polled with
a deadline through the member's own /health; a missing binary fails the test (never skips).
`TcpProxy` sits between a client and a member so a test can cut the client off while the
server keeps running (to compact behind the client's back).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import os
import select
import signal
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.infra.common import Proc, free_port, require_binary, wait_until

HINT = "Debian packages etcd-server and etcd-client (scripts/deps/20-etcd.sh)"


@dataclass
class Tls:
    """A CA plus server and client certificates for 127.0.0.1, made by the test itself."""

    dir: Path
    #: a CommonName for the client certificate (None: none, which etcd's gateway needs with auth)
    client_cn: str | None = None
    ca: Path = field(init=False)
    server_cert: Path = field(init=False)
    server_key: Path = field(init=False)
    client_cert: Path = field(init=False)
    client_key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model-watcher test CA")])
        now = dt.datetime.now(dt.UTC)
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca = self._write("ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))
        # etcd's own gateway dials its gRPC side with the server certificate as a client
        # certificate, so the server's needs clientAuth too
        self.server_cert, self.server_key = self._leaf("server", ca_cert, ca_key, now,
                                                       [ExtendedKeyUsageOID.SERVER_AUTH,
                                                        ExtendedKeyUsageOID.CLIENT_AUTH])
        self.client_cert, self.client_key = self._leaf("client", ca_cert, ca_key, now,
                                                       [ExtendedKeyUsageOID.CLIENT_AUTH])

    def _leaf(self, name: str, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
              now: dt.datetime, usage: list[x509.ObjectIdentifier]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        # no CommonName on the client certificate: etcd's gateway refuses CN certificates
        # while auth is enabled (see docs/etcd.md)
        cn = name if name == "server" else self.client_cn
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else
                            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "model-watcher")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return (self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{name}-key.pem", key_pem))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path


class EtcdMember:
    """One etcd process; `kill9()` then `start()` restarts it on the same ports and data dir."""

    def __init__(self, root: Path, name: str = "m0", tls: Tls | None = None,
                 extra: list[str] | None = None) -> None:
        self.binary = require_binary("etcd", HINT)
        self.name = name
        self.dir = root / name
        self.data_dir = self.dir / "data"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.tls = tls
        self.extra = list(extra or [])
        self.initial_cluster = f"{name}={self.peer_url}"
        self.proc: Proc | None = None
        self.paused = False

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def argv(self) -> list[str]:
        argv = [
            self.binary, "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "mw-test", "--log-level", "warn",
            # fast elections on loopback keep the leader-loss tests short
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        if self.tls:
            argv += ["--cert-file", str(self.tls.server_cert), "--key-file",
                     str(self.tls.server_key), "--trusted-ca-file", str(self.tls.ca),
                     "--client-cert-auth"]
        return argv + self.extra

    def start(self, wait: bool = True) -> EtcdMember:
        self.proc = Proc(self.argv(), self.dir / "etcd.log")
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc is None or not self.proc.alive():
                raise RuntimeError(f"etcd {self.name} exited:\n{self.log_tail()}")
            with self.http() as client:
                return bool(client.get(f"{self.url}/health", timeout=1.0).json().get("health")
                            == "true")

        try:
            wait_until(ready, timeout, f"etcd {self.name} on {self.url}", interval=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def http(self) -> httpx.Client:
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
            return httpx.Client(verify=context)
        return httpx.Client()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.proc.output().splitlines()[-lines:]) if self.proc else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive() and not self.paused

    def pause(self) -> None:
        """SIGSTOP: the member hangs with its connections open (a hung or partitioned server)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def kill9(self) -> None:
        if self.proc:
            self.proc.kill9()
            self.proc.stop()

    def stop(self) -> None:
        self.resume()
        if self.proc:
            self.proc.stop()

    def status(self) -> dict[str, str]:
        with self.http() as client:
            data: dict[str, str] = client.post(f"{self.url}/v3/maintenance/status", json={},
                                               timeout=2.0).json()
        return data


class EtcdCluster:
    """Members that found each other through --initial-cluster; etcdctl-like helpers."""

    def __init__(self, root: Path, size: int = 1, tls: Tls | None = None,
                 extra: list[str] | None = None) -> None:
        self.members = [EtcdMember(root, f"m{i}", tls, extra) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial
        self.user: tuple[str, str] | None = None

    def start(self) -> EtcdCluster:
        for m in self.members:
            m.start(wait=False)
        for m in self.members:
            m.wait_ready()
        return self

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def leader(self) -> EtcdMember:
        def find() -> EtcdMember | None:
            for m in self.members:
                if m.alive():
                    st = m.status()
                    if st.get("leader") and st.get("leader") == st["header"].get("member_id"):
                        return m
            return None
        found = wait_until(find, 15.0, "an etcd leader", interval=0.1)
        assert isinstance(found, EtcdMember)
        return found

    # -- etcdctl-like calls through the gateway (tests seed and mutate with these) -------

    def call(self, path: str, body: dict[str, object]) -> dict[str, object]:
        last: Exception | None = None
        for m in self.members:
            if not m.alive():
                continue
            try:
                with m.http() as client:
                    headers = {}
                    if self.user:
                        token = client.post(f"{m.url}/v3/auth/authenticate", json={
                            "name": self.user[0], "password": self.user[1]}).json()["token"]
                        headers["Authorization"] = token
                    data: dict[str, object] = client.post(f"{m.url}/v3/{path}", json=body,
                                                          headers=headers, timeout=5.0).json()
            except httpx.HTTPError as exc:
                last = exc
                continue
            if "error" in data:
                last = RuntimeError(f"etcd {path}: {data}")
                continue
            return data
        raise RuntimeError(f"no etcd member answered {path}: {last}")

    def put(self, key: str, value: bytes | str) -> int:
        raw = value.encode() if isinstance(value, str) else value
        data = self.call("kv/put", {"key": _b64(key), "value": base64.b64encode(raw).decode()})
        return int(data["header"]["revision"])  # type: ignore[index]

    def delete(self, key: str) -> int:
        data = self.call("kv/deleterange", {"key": _b64(key)})
        return int(data["header"]["revision"])  # type: ignore[index]

    def revision(self) -> int:
        data = self.call("kv/range", {"key": _b64("\x00")})
        return int(data["header"]["revision"])  # type: ignore[index]

    def compact(self, revision: int | None = None) -> int:
        rev = revision if revision is not None else self.revision()
        self.call("kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def ctl(self, *args: str) -> str:
        """etcdctl against the cluster (auth/user admin), output as text."""
        binary = require_binary("etcdctl", HINT)
        argv = [binary, f"--endpoints={','.join(self.endpoints)}"]
        tls = self.members[0].tls
        if tls:
            argv += [f"--cacert={tls.ca}", f"--cert={tls.client_cert}", f"--key={tls.client_key}"]
        if self.user:
            argv += [f"--user={self.user[0]}:{self.user[1]}"]
        out = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "ETCDCTL_API": "3"}, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TcpProxy:
    """A loopback TCP relay to `target_port`; `cut()` drops every connection and refuses new ones.

    Runs in a daemon thread with select(); bounded to loopback. `restore()` lets clients in again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._listener.close()
        self._thread.join(5)
