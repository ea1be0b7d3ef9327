"""`s3://BUCKET/KEY`: one weights file in S3-compatible storage (MinIO, Ceph RGW, AWS).

Each attempt gets a fresh presigned GET (SigV4 query authentication, signed with
botocore's signer, the `s3` extra), which the shared transfer then reads with `Range`
resume exactly like any HTTP download: no second HTTP stack, no SDK client. Multipart
ETags (`md5-N`) are not content hashes: the document's `model.sha256` is what is checked.
Credentials: `weights.s3.access_key_id/secret_access_key`, else the AWS_* environment.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, urlsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from watcher.core.errors import DocumentError, SettingsError
from watcher.fetchers.base import Artifact, Blob, FetchFailed, Location, check_host, file_name
from watcher.fetchers.options import WeightsOptions

_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>[^\x00-\x1f\x7f]{1,1024})$")


def parse(uri: str) -> tuple[str, str]:
    m = _URI.match(uri)
    if m is None or ".." in m["bucket"] or m["key"].startswith("/"):
        raise DocumentError(f"model.uri {uri!r} is not s3://BUCKET/KEY")
    return m["bucket"], m["key"]


class S3Fetcher:
    def __init__(self, options: WeightsOptions) -> None:
        self.options = options
        s3 = options.s3
        self.endpoint = (s3.endpoint or f"https://s3.{s3.region}.amazonaws.com").rstrip("/")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise SettingsError(f"weights.s3.endpoint {self.endpoint!r} is not an http(s) URL")

    @classmethod
    def create(cls, options: WeightsOptions, fallback: object = None) -> S3Fetcher:
        return cls(options)

    def _credentials(self) -> Credentials:
        s3 = self.options.s3
        access = s3.access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
        secret = (s3.secret_access_key.get_secret_value() if s3.secret_access_key
                  else os.environ.get("AWS_SECRET_ACCESS_KEY"))
        if not access or not secret:
            raise FetchFailed("s3: no credentials (weights.s3.access_key_id/secret_access_key or "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)", retryable=False, status=401)
        return Credentials(access, secret, os.environ.get("AWS_SESSION_TOKEN") if not s3.access_key_id else None)

    def url(self, uri: str) -> str:
        bucket, key = parse(uri)
        parts = urlsplit(self.endpoint)
        check_host(parts.netloc, self.options.allowed_hosts, uri)
        path = quote(key, safe="/-_.~")
        if self.options.s3.addressing_style == "virtual":
            return f"{parts.scheme}://{bucket}.{parts.netloc}/{path}"
        return f"{self.endpoint}/{bucket}/{path}"

    async def resolve(self, uri: str, digest: str) -> Artifact:
        self.url(uri)
        return Artifact(digest, (Blob(digest, None, file_name(uri)),))

    async def locate(self, uri: str, blob: Blob, *, refresh: bool = False) -> Location:
        request = AWSRequest(method="GET", url=self.url(uri))
        signer = S3SigV4QueryAuth(self._credentials(), "s3", self.options.s3.region,
                                  expires=self.options.s3.presign_seconds)
        signer.add_auth(request)
        return Location(str(request.url), {})

    async def aclose(self) -> None:
        return None
