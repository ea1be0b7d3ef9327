"""Staging: a revision's remote weights fetched, verified and in the cache before the apply.

    staged = await stager.stage(spec)   # the spec with file:// URIs into the cache
    stager.local(spec)                  # the same rewrite from the cache alone (no network)

`stage` is the one seam into the core (Executor.verify): it runs after the signature
check and before any apply, so the old model serves throughout and a failure is a recorded
revision, never a half-swapped server. Per URI: refuse what the document does not pin,
resolve the artifact (cached record, else the fetcher: OCI reads and verifies the manifest),
download its missing blobs (at most `max_parallel` at once, one download per blob even when
two revisions share it, each retried with exponential backoff by tenacity), then link the
view the server is given. Digest mismatches are VerificationError (rejected); exhausted
retries, 401/403/404, quota and disk full are FetchError (failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from watcher.core.errors import FetchError, VerificationError
from watcher.core.spec import ModelSpec
from watcher.fetchers import fetcher_class, scheme_of
from watcher.fetchers.base import Artifact, Blob, Fetcher, FetchFailed
from watcher.fetchers.cache import BlobCache
from watcher.fetchers.options import Credential, WeightsOptions, parse_weights_options
from watcher.fetchers.progress import STATS, Board
from watcher.fetchers.protect import protected_digests
from watcher.fetchers.transfer import Cancel, Limits, Stopped, discard, download
from watcher.settings import Settings

log = logging.getLogger("watcher.fetchers")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, FetchFailed) and exc.retryable


class Stager:
    def __init__(self, options: WeightsOptions, state_dir: Path, *,
                 fallback_credential: Credential | None = None) -> None:
        self.options = options
        self.state_db = state_dir / "state.db"
        self.cache = BlobCache(options.cache_dir or state_dir / "blobs", int(options.quota),
                               int(options.partial_quota))
        self.board = Board(self.cache.root / "progress.json")
        self.fallback = fallback_credential
        ctx = ssl.create_default_context(cafile=str(options.ca_file)) if options.ca_file else None
        self.limits = Limits(options.connect_timeout, options.read_timeout, ctx)
        self._fetchers: dict[str, Fetcher] = {}
        self._slots: asyncio.Semaphore | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._pinned: dict[str, set[str]] = {}

    def handles(self, uri: str) -> bool:
        return self.options.stage and scheme_of(uri) in self.options.schemes

    def remote(self, spec: ModelSpec) -> bool:
        """Whether `spec` has weights this stager fetches (model or an adapter)."""
        return any(self.handles(uri) for _, uri, _ in _uris(spec))

    @property
    def prefetches(self) -> bool:
        """Whether a revision waiting for its admission has its weights staged meanwhile."""
        return self.options.stage and self.options.prefetch

    def fetcher(self, uri: str) -> Fetcher:
        scheme = scheme_of(uri)
        if scheme not in self._fetchers:
            self._fetchers[scheme] = fetcher_class(scheme).create(self.options, self.fallback)
        return self._fetchers[scheme]

    async def aclose(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        for f in self._fetchers.values():
            await f.aclose()

    # -- the seam ---------------------------------------------------------------------
    async def stage(self, spec: ModelSpec) -> ModelSpec:
        """Fetch and verify every remote URI of `spec`; return it with local file:// URIs."""
        places: dict[str, Path] = {}
        self._pinned.pop(spec.name, None)  # only models with remote weights keep an entry
        for what, uri, digest in _uris(spec):
            if not self.handles(uri):
                continue
            if digest is None:
                raise VerificationError(f"{what}.sha256 is required for remote weights ({uri}): "
                                        "the download is verified against it")
            self.cache.ready()
            artifact = await self._artifact(uri, digest)
            self._pinned.setdefault(spec.name, set()).update(
                {digest, *(b.digest for b in artifact.blobs)})
            await self._fetch_all(spec.name, uri, artifact)
            places[uri] = self.cache.view(artifact)
        return _rewrite(spec, places)

    def local(self, spec: ModelSpec) -> ModelSpec:
        """`spec` with every staged URI pointing into the cache; unstaged ones left as they are."""
        places: dict[str, Path] = {}
        for _, uri, digest in _uris(spec):
            if self.handles(uri) and digest is not None:
                path = self.cache.has_view(digest)
                if path is not None:
                    places[uri] = path
                else:
                    log.warning("%s: weights %s are not in the cache; the server gets the URI",
                                spec.name, uri, extra={"model": spec.name})
        return _rewrite(spec, places)

    # -- steps ------------------------------------------------------------------------
    async def _artifact(self, uri: str, digest: str) -> Artifact:
        found = self.cache.artifact(digest)
        if found is not None:
            return found
        fetcher = self.fetcher(uri)
        artifact: Artifact = await self._retrying(lambda: fetcher.resolve(uri, digest),
                                                  f"resolving {uri}")
        if artifact.manifest is not None:
            self.cache.put(digest, artifact.manifest)
        self.cache.record(artifact)
        return artifact

    async def _fetch_all(self, model: str, uri: str, artifact: Artifact) -> None:
        missing = [b for b in artifact.blobs if not self.cache.has(b.digest)]
        cached = sum(b.size or 0 for b in artifact.blobs if b not in missing)
        sizes = [b.size for b in artifact.blobs]
        total = None if None in sizes else sum(s or 0 for s in sizes)
        scheme = scheme_of(uri)
        if not missing:
            self.cache.touch(self.cache.members(artifact.digest))
            STATS.fetches[(scheme, "cached")] += 1
            return
        self.board.start(model, uri, total, cached)
        try:
            await asyncio.gather(*(self._blob(model, uri, b) for b in missing))
        except (FetchError, VerificationError) as exc:
            STATS.fetches[(scheme, "failed")] += 1
            self.board.finish(model, "failed", exc.reason)
            raise
        except BaseException:
            self.board.finish(model, "failed", "interrupted")
            raise
        self.cache.touch(self.cache.members(artifact.digest))
        STATS.fetches[(scheme, "fetched")] += 1
        STATS.cache_bytes = self.cache.usage()
        self.board.finish(model, "done")

    async def _blob(self, model: str, uri: str, blob: Blob) -> None:
        """One download per blob digest at a time; a second revision waits for the first."""
        task = self._inflight.get(blob.digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._download(model, uri, blob),
                                                          name=f"fetch:{blob.digest[:12]}")
            self._inflight[blob.digest] = task
            task.add_done_callback(functools.partial(self._done, blob.digest))
        await asyncio.shield(task)

    def _done(self, digest: str, task: asyncio.Task[None]) -> None:
        self._inflight.pop(digest, None)
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaited it reports it

    async def _download(self, model: str, uri: str, blob: Blob) -> None:
        what = f"{uri} blob sha256:{blob.digest[:12]}"
        refresh = [False]

        async def attempt() -> None:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.options.max_parallel)
            async with self._slots:
                loc = await self.fetcher(uri).locate(uri, blob, refresh=refresh[0])
                try:
                    await self._in_thread(model, uri, blob, loc, what)
                except FetchFailed as exc:
                    if exc.status == 401 and not refresh[0]:
                        refresh[0] = True  # expired token: once more with fresh credentials
                        exc.retryable = True
                    raise

        part = self.cache.part(blob.digest)
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                await self._retrying(attempt, what)
                return
            except FetchError:
                # A flapping link that still moves the download forward does not use up the
                # attempts: each run of them starts again as long as the partial grew.
                if not part.exists() or part.stat().st_size <= before:
                    raise

    async def _retrying(self, step: Callable[[], Any], what: str) -> Any:
        o = self.options
        try:
            async for trying in AsyncRetrying(
                    stop=stop_after_attempt(o.attempts), reraise=True,
                    wait=wait_exponential(multiplier=o.backoff_initial, max=o.backoff_max),
                    retry=retry_if_exception(_retryable),
                    before_sleep=lambda rs: log.warning(
                        "%s: attempt %d failed (%s); retrying", what, rs.attempt_number,
                        getattr(rs.outcome.exception(), "reason", rs.outcome.exception()) if rs.outcome else "")):
                with trying:
                    return await step()
        except FetchFailed as exc:
            if exc.retryable:
                raise FetchError(f"{exc.reason} (gave up after {o.attempts} attempts)") from exc
            raise
        raise AssertionError("unreachable")

    async def _in_thread(self, model: str, uri: str, blob: Blob, loc: Any, what: str) -> None:
        protected = protected_digests(self.state_db, self.cache) | set().union(*self._pinned.values())
        cancel = Cancel()
        scheme = scheme_of(uri)

        def run() -> None:
            with self.cache.locked(blob.digest, cancel.event):
                if self.cache.has(blob.digest):
                    return  # another process (`pull`, a second daemon) just fetched it
                part = self.cache.part(blob.digest)
                self.cache.prune_partials(blob.digest, blob.size or 0)
                try:
                    download(loc, part, digest=blob.digest, size=blob.size, what=what,
                             limits=self.limits, cancel=cancel,
                             on_bytes=lambda n: self.board.add(model, scheme, n),
                             reserve=lambda n: self.cache.make_room(n, protected))
                except FetchFailed as exc:
                    if not exc.retryable:
                        discard(part)  # disk full, refused, not found: nothing partial stays
                    raise
                self.cache.commit(part, blob.digest)

        future = asyncio.get_running_loop().run_in_executor(None, run)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(future), 30)
            raise
        except (Stopped, InterruptedError):
            raise FetchError(f"{what}: cancelled") from None
        except OSError as exc:
            raise FetchError(f"{what}: cache error: {exc.strerror or exc}") from None


def _uris(spec: ModelSpec) -> list[tuple[str, str, str | None]]:
    model = spec.model
    return [("model", model.uri, model.sha256),
            *((f"adapter {a.name}", a.uri, a.sha256) for a in model.adapters)]


def _rewrite(spec: ModelSpec, places: dict[str, Path]) -> ModelSpec:
    if not places:
        return spec
    model = spec.model
    adapters = [a.model_copy(update={"uri": places[a.uri].as_uri()}) if a.uri in places else a
                for a in model.adapters]
    uri = places[model.uri].as_uri() if model.uri in places else model.uri
    return spec.model_copy(update={"model": model.model_copy(update={"uri": uri, "adapters": adapters})})


def stager_for(settings: Settings) -> Stager:
    """The stager of the daemon's settings (`[weights]`); registry credentials fall back on
    the docker runtime's `registry_auth` for its `serveraddress`, as images are pulled."""
    options = parse_weights_options(settings.weights)
    fallback = None
    runtime = settings.runtime
    auth = (runtime.model_extra or {}).get("registry_auth") if runtime and runtime.kind == "docker" else None
    if isinstance(auth, dict) and auth.get("serveraddress") and auth.get("username"):
        host = str(auth["serveraddress"]).split("://", 1)[-1].rstrip("/")
        with contextlib.suppress(ValueError):
            fallback = Credential(host=host, username=str(auth["username"]),
                                  password=SecretStr(str(auth.get("password", ""))))
    return Stager(options, settings.state_dir, fallback_credential=fallback)
