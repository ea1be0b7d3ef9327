"""The minimal Nacos watcher, as the SDK's own docs show it: one listener that forwards each
pushed content to a URL. The latency benchmark's Nacos baseline (same SDK, no daemon).

    python -m bench.baselines.nacos_listener --server 127.0.0.1:8848 --group G \
        --data-id bench.yaml --post http://127.0.0.1:PORT/  (credentials from NACOS_USER/NACOS_PASSWORD)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile

import httpx


async def main() -> None:
    from v2.nacos import ClientConfigBuilder, NacosConfigService

    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--data-id", required=True)
    p.add_argument("--post", required=True)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="nacos-baseline-")
    builder = (ClientConfigBuilder().server_address(args.server).log_level(logging.WARNING)
               .cache_dir(tmp).log_dir(tmp))
    if os.environ.get("NACOS_USER"):
        builder = builder.username(os.environ["NACOS_USER"]).password(os.environ["NACOS_PASSWORD"])
    service = await NacosConfigService.create_config_service(builder.build())
    client = httpx.AsyncClient(timeout=5)

    async def listener(tenant: str, data_id: str, group: str, content: str) -> None:
        await client.post(args.post, content=content.encode())

    await service.add_listener(args.data_id, args.group, listener)
    print("listening", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
