"""A thin boundary over nacos-sdk-python 3.x (`v2.nacos`, gRPC, asyncio) and Nacos's open API.

Everything the SDK raises is translated here into the daemon's errors:
SourceUnavailable (cannot reach Nacos: retried by the caller), NacosAuthError (credentials
refused: reported once, retried rarely) or SourceError. The SDK is imported lazily, so the
`nacos` extra is needed only when this source is chosen.

Three SDK habits shape this module:
* it would fall back to its on-disk snapshot when a read fails: disabled
  (`disable_use_config_cache`), so a read is the server's truth or an error, and the daemon's
  own state is the last-known-good;
* it logs access tokens and published content at INFO: its logger is kept at WARNING, with
  its log file inside the daemon's state directory;
* without credentials it only learns of refused ones by failing every request: credentials
  are checked once up front with a login through the open API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any, Protocol

import httpx

from watcher.core.errors import SettingsError, SourceError, SourceUnavailable
from watcher.sources.base import SourceAuthError
from watcher.sources.nacos_options import NacosOptions

SDK_LOGGER = "config"  # nacos-sdk-python's config module logger
PAGE_SIZE = 200


class NacosAuthError(SourceAuthError):
    """Nacos refused the credentials: no point retrying quickly."""


class PushListener(Protocol):
    async def __call__(self, tenant: str, group: str, data_id: str, content: str) -> None: ...


class NacosClient:
    """One connection to a Nacos cluster for one namespace and group."""

    def __init__(self, options: NacosOptions, state_dir: Path, logger: logging.Logger) -> None:
        self.options = options
        self.dir = state_dir / "nacos"
        self.log = logger
        self._service: Any = None
        self._token: str | None = None
        self._http = httpx.AsyncClient(timeout=options.timeout, verify=self._verify())
        self.where = ", ".join(options.server_addresses)

    def _verify(self) -> ssl.SSLContext | bool:
        """TLS for the open API (login, listing), from the same files as the SDK's gRPC."""
        tls = self.options.tls
        if not (tls and tls.enabled):
            return True
        try:
            context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            if tls.cert_file and tls.key_file:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(f"source.tls: cannot load TLS files: {exc}") from None
        return context

    # -- connecting ----------------------------------------------------------------------
    async def check(self) -> None:
        """Can we talk to Nacos with these credentials? SourceUnavailable / NacosAuthError."""
        if self.options.username:
            await self.login()
            return
        loop = asyncio.get_running_loop()
        for host, port in self.options.grpc_endpoints():
            try:
                await loop.run_in_executor(None, _tcp_probe, host, port, self.options.timeout)
                return
            except OSError:
                continue
        raise SourceUnavailable(f"Nacos unreachable at {self.where}")

    async def login(self) -> str:
        """A fresh access token from the first server that answers."""
        assert self.options.username and self.options.password
        form = {"username": self.options.username,
                "password": self.options.password.get_secret_value()}
        last = "no server answered"
        for base in self.options.base_urls():
            try:
                r = await self._http.post(f"{base}/v3/auth/user/login", data=form)
            except httpx.HTTPError as exc:
                last = f"{base}: {type(exc).__name__}"
                continue
            if r.status_code in (502, 503, 504):
                last = f"{base}: HTTP {r.status_code}"
                continue
            if r.status_code != 200:
                # 403 for an unknown user; Nacos 3.1 answers a wrong password with a 500
                raise NacosAuthError(f"Nacos at {self.where} refused the credentials of user "
                                     f"{self.options.username!r} (HTTP {r.status_code}); "
                                     "fix source.username/source.password")
            token = r.json().get("accessToken")
            if token:
                self._token = str(token)
                return self._token
            last = f"{base}: no access token in the answer"
        raise SourceUnavailable(f"Nacos unreachable at {self.where} ({last})")

    async def service(self) -> Any:
        """The SDK's config service, created once (it reconnects by itself afterwards)."""
        if self._service is None:
            await self.check()
            self._service = await _create_service(self.options, self.dir)
        return self._service

    async def healthy(self) -> bool:
        if self._service is None:
            return False
        try:
            return bool(await self._service.server_health())
        except Exception:  # the SDK's own state check; any failure means "not connected"
            return False

    # -- reading and writing ----------------------------------------------------------------
    async def get(self, data_id: str) -> str | None:
        """The config's content, None when it does not exist; SourceUnavailable when down."""
        from v2.nacos import ConfigParam

        service = await self.service()
        try:
            content = await service.get_config(ConfigParam(data_id=data_id, group=self.options.group))
        except Exception as exc:
            raise await self._translate(exc, f"reading {data_id!r}") from exc
        return str(content) if content else None

    async def publish(self, data_id: str, content: str, cas_md5: str = "") -> None:
        """Write (with Nacos's CAS when `cas_md5` is set); SourceError when refused."""
        from v2.nacos import ConfigParam

        service = await self.service()
        param = ConfigParam(data_id=data_id, group=self.options.group, content=content,
                            cas_md5=cas_md5, type=_content_type(data_id))
        try:
            ok = await service.publish_config(param)
        except Exception as exc:
            raise await self._translate(exc, f"publishing {data_id!r}") from exc
        if not ok:
            raise SourceError(f"Nacos did not accept {data_id!r}")

    async def remove(self, data_id: str) -> None:
        from v2.nacos import ConfigParam

        service = await self.service()
        try:
            await service.remove_config(ConfigParam(data_id=data_id, group=self.options.group))
        except Exception as exc:
            raise await self._translate(exc, f"removing {data_id!r}") from exc

    async def listen(self, data_id: str, listener: PushListener) -> None:
        service = await self.service()
        try:
            await service.add_listener(data_id, self.options.group, listener)
        except Exception as exc:
            raise await self._translate(exc, f"listening to {data_id!r}") from exc
        _kick_listen_loop(service)

    async def _translate(self, exc: BaseException, what: str) -> SourceError:
        code = getattr(exc, "error_code", None)
        if code in (401, 403):
            return NacosAuthError(f"Nacos refused {what}: permission denied ({code})")
        if not await self.healthy():
            return SourceUnavailable(f"Nacos unreachable at {self.where} while {what}")
        return SourceError(f"Nacos failed {what}: {exc}")

    # -- listing (pattern mode) ---------------------------------------------------------------
    async def list_data_ids(self) -> list[str]:
        """Every data id in the group, through the admin open API (paged)."""
        ids: list[str] = []
        page = 1
        while True:
            data = await self._admin_get("/v3/admin/cs/config/list", {
                "pageNo": page, "pageSize": PAGE_SIZE, "search": "blur", "dataId": "",
                "groupName": self.options.group, "namespaceId": self.options.namespace or "public"})
            items = data.get("pageItems") or []
            ids += [str(item["dataId"]) for item in items if item.get("dataId")]
            if page >= int(data.get("pagesAvailable") or 1) or not items:
                return ids
            page += 1

    async def _admin_get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        last = "no server answered"
        for attempt in (1, 2):
            if self.options.username and (self._token is None or attempt == 2):
                await self.login()
            query = dict(params)
            if self._token:
                query["accessToken"] = self._token
            for base in self.options.base_urls():
                try:
                    r = await self._http.get(base + path, params=query)
                except httpx.HTTPError as exc:
                    last = f"{base}: {type(exc).__name__}"
                    continue
                if r.status_code in (401, 403) and attempt == 1 and self.options.username:
                    break  # token expired: log in again once
                if r.status_code in (401, 403):
                    raise NacosAuthError(
                        f"Nacos refused listing configs (HTTP {r.status_code}); data_id_pattern "
                        "needs a user allowed to use the admin API, or list source.data_ids")
                if r.status_code != 200:
                    last = f"{base}: HTTP {r.status_code}"
                    continue
                body: dict[str, Any] = r.json()
                return dict(body.get("data") or {})
            else:
                break
        raise SourceUnavailable(f"Nacos unreachable at {self.where} ({last})")

    async def aclose(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            with contextlib.suppress(Exception):
                await _shutdown(service)
        await self._http.aclose()
        _drop_log_handlers(self.dir)


class _SdkRootRecords(logging.Filter):
    """The SDK logs each failed reconnect attempt as an ERROR on the root logger; the
    source reports outages itself (once), so those records become DEBUG of `v2.nacos`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}v2{os.sep}nacos{os.sep}" in record.pathname:
            record.levelno, record.levelname, record.name = logging.DEBUG, "DEBUG", "v2.nacos"
        return True


_ROOT_FILTER = _SdkRootRecords()


def _tcp_probe(host: str, port: int, timeout: float) -> None:
    with socket.create_connection((host, port), timeout=timeout):
        pass


def _content_type(data_id: str) -> str:
    return {"yaml": "yaml", "yml": "yaml", "json": "json"}.get(data_id.rpartition(".")[2], "text")


async def _create_service(options: NacosOptions, root: Path) -> Any:
    from v2.nacos import NacosConfigService

    config = client_config(options, root)
    config.disable_use_config_cache = True  # a failed read raises; no stale snapshot
    config.load_cache_at_start = False
    return await NacosConfigService.create_config_service(config)


def client_config(options: NacosOptions, root: Path) -> Any:
    """The SDK's ClientConfig for `options` (address, namespace, auth, TLS, timeouts, logs
    and cache under `root`); the fleet's naming client is built from it too."""
    from v2.nacos import ClientConfigBuilder, GRPCConfig, TLSConfig

    (root / "cache").mkdir(parents=True, exist_ok=True)
    (root / "log").mkdir(parents=True, exist_ok=True)
    builder = (ClientConfigBuilder()
               .server_address(",".join(options.server_addresses))
               .namespace_id(options.namespace)
               .context_path(options.context_path)
               .timeout_ms(int(options.timeout * 1000))
               .log_level(logging.WARNING)
               .cache_dir(str(root / "cache"))
               .log_dir(str(root / "log"))
               .grpc_config(GRPCConfig(grpc_timeout=int(options.timeout * 1000),
                                       port_offset=options.grpc_port_offset)))
    if options.username and options.password:
        builder = builder.username(options.username).password(options.password.get_secret_value())
    if options.tls and options.tls.enabled:
        tls = options.tls
        builder = builder.tls_config(TLSConfig(
            enabled=True, ca_file=str(tls.ca_file or ""), cert_file=str(tls.cert_file or ""),
            key_file=str(tls.key_file or ""), server_name_override=tls.server_name_override))
    root_logger = logging.getLogger()
    if _ROOT_FILTER not in root_logger.filters:
        root_logger.addFilter(_ROOT_FILTER)
    return builder.build()


def _kick_listen_loop(service: Any) -> None:
    """Register new listeners with the server now: the SDK's listen loop otherwise only
    wakes every 5 s, and until then the server pushes nothing for them."""
    proxy = getattr(service, "grpc_client_proxy", None)
    with contextlib.suppress(Exception):
        proxy.execute_config_listen_channel.put_nowait(None)  # type: ignore[union-attr]


async def _shutdown(service: Any) -> None:
    """The SDK's shutdown waits up to 5 s for its listen loop's idle poll: wake it first."""
    proxy = getattr(service, "grpc_client_proxy", None)
    if proxy is not None:
        proxy.stop_event.set()
        with contextlib.suppress(Exception):
            proxy.execute_config_listen_channel.put_nowait(None)
    await service.shutdown()


def _drop_log_handlers(root: Path) -> None:
    """The SDK adds a file handler to a module-global logger per client: remove ours."""
    logger = logging.getLogger(SDK_LOGGER)
    for handler in list(logger.handlers):
        if str(getattr(handler, "baseFilename", "")).startswith(str(root)):
            logger.removeHandler(handler)
            handler.close()
