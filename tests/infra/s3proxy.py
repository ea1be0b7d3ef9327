"""A real S3-compatible server for the tests: s3proxy 4.1.0 (Maven Central) on loopback.

`build()` resolves s3proxy's jars from s3proxy/pom.xml with `mvn dependency:copy-dependencies`
into the test cache, keyed by the pom's hash (~57 MB, once; scripts/deps/60-s3proxy.sh warms
it). `S3Proxy(dir).start()` runs `org.gaul.s3proxy.Main` with the `filesystem-nio2` backend
(objects are plain files under dir/data/BUCKET/KEY, so a test can tamper with one), SigV4
(and v2) authentication with a test identity, a 128 MiB heap and warnings-only logging.
Readiness: an anonymous `GET /` answers 403. A missing java/mvn fails the test, never skips.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from tests.infra.common import CACHE, Proc, free_port, require_binary, wait_until
from tests.infra.nacos_server import _locked, _run, _sha

HERE = Path(__file__).resolve().parent / "s3proxy"
POM = HERE / "pom.xml"
LOGBACK = HERE / "logback.xml"
PART = 32 * 1024 * 1024
HINT = "Java 17 JDK and Maven (scripts/deps/30-nacos.sh, scripts/deps/60-s3proxy.sh)"


def build() -> Path:
    """The directory of s3proxy's runtime jars (resolved once, cached by the pom's hash)."""
    mvn = require_binary("mvn", HINT)
    root = CACHE / "s3proxy" / _sha(POM)
    lib, done = root / "lib", root / "built"
    with _locked(CACHE / "s3proxy" / ".lock"):
        if not done.exists():
            _run([mvn, "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
                  f"-DoutputDirectory={lib}", "-DincludeScope=runtime"],
                 "resolving the s3proxy jars from Maven Central", 900)
            done.write_text("ok\n")
    return lib


class S3Proxy:
    def __init__(self, home: Path, region: str = "us-east-1") -> None:
        self.home = home
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.region = region
        self.access_key = "mw-access"
        self.secret_key = "mw-secret-" + secrets.token_hex(8)
        self.data = home / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.proc: Proc | None = None

    def start(self, timeout: float = 60) -> S3Proxy:
        lib = build()
        java = require_binary("java", HINT)
        conf = self.home / "s3proxy.conf"
        conf.write_text(
            f"s3proxy.endpoint={self.endpoint}\n"
            "s3proxy.authorization=aws-v2-or-v4\n"
            f"s3proxy.identity={self.access_key}\n"
            f"s3proxy.credential={self.secret_key}\n"
            "jclouds.provider=filesystem-nio2\n"
            f"jclouds.filesystem.basedir={self.data}\n")
        conf.chmod(0o600)
        self.proc = Proc([java, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                          f"-Dlogback.configurationFile={LOGBACK}", "-cp", f"{lib}/*",
                          "org.gaul.s3proxy.Main", "--properties", str(conf)],
                         self.home / "s3proxy.log", cwd=self.home)
        wait_until(self._ready, timeout, f"s3proxy on {self.endpoint}", interval=0.2)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError(f"s3proxy exited:\n{self.proc.output()[-3000:]}")
        return httpx.get(self.endpoint + "/", timeout=1).status_code == 403

    def client(self) -> Any:
        """A botocore S3 client for seeding (independent of the code under test)."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))

    def put(self, bucket: str, key: str, data: bytes) -> None:
        c = self.client()
        if not (self.data / bucket).exists():
            c.create_bucket(Bucket=bucket)
        if len(data) <= PART:
            c.put_object(Bucket=bucket, Key=key, Body=data)
            return
        # s3proxy refuses one large PutObject (MaxMessageLengthExceeded): multipart, as
        # real uploaders do (the ETag is then md5-N, not a content hash)
        upload = c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for n, start in enumerate(range(0, len(data), PART), 1):
            r = c.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                              Body=data[start:start + PART])
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                    MultipartUpload={"Parts": parts})

    def object_path(self, bucket: str, key: str) -> Path:
        return self.data / bucket / key

    def weights_settings(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "region": self.region,
                "access_key_id": self.access_key, "secret_access_key": self.secret_key}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
