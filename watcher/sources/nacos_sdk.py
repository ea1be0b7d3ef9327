"""The nacos-sdk-python 3.x (`v2.nacos`) config service as this source needs it: created
with no on-disk snapshot fallback and its logs kept quiet and inside the state directory,
woken where its own loops would idle, shut down without its 5 s idle wait. Imported by
nacos_client.py and the fleet's Nacos backend, so the SDK loads only when Nacos is chosen."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from watcher.sources.nacos_options import NacosOptions

SDK_LOGGER = "config"  # nacos-sdk-python's config module logger


class _SdkRootRecords(logging.Filter):
    """The SDK logs each failed reconnect attempt as an ERROR on the root logger; the
    source reports outages itself (once), so those records become DEBUG of `v2.nacos`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}v2{os.sep}nacos{os.sep}" in record.pathname:
            record.levelno, record.levelname, record.name = logging.DEBUG, "DEBUG", "v2.nacos"
        return True


_ROOT_FILTER = _SdkRootRecords()


def _end_streams_on_close() -> None:
    """Make a closed SDK connection end its bi-stream's request iterator.

    grpc.aio feeds a stream's requests from a task that stops only when a write fails or
    the call is cancel()ed; the SDK lets a broken stream end by error, then closes the
    channel, so each outage left that task waiting on the connection's queue until garbage
    collection destroyed it: two asyncio ERRORs per outage ("Task was destroyed but it is
    pending", "aclose(): asynchronous generator is already running"). Closing a connection
    now puts an end marker on its queue and the iterator returns at it.
    """
    from v2.nacos.transport.grpc_connection import GrpcConnection

    if getattr(GrpcConnection, "_model_watcher_patched", False):
        return
    close = GrpcConnection.close

    async def request_payloads(self: Any) -> AsyncIterator[Any]:
        while (payload := await self.queue.get()) is not None:
            yield payload

    async def close_and_end_stream(self: Any) -> None:
        self.queue.put_nowait(None)
        await close(self)

    GrpcConnection.request_payloads = request_payloads
    GrpcConnection.close = close_and_end_stream
    GrpcConnection._model_watcher_patched = True


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
    _end_streams_on_close()
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
