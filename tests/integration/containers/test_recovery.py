"""The engine itself restarting under a serving container. (A daemon killed -9 mid-promotion
is in test_daemon_docker: it resumes or reverts through core/recovery.py.)"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.infra.common import http_ok, wait_until
from tests.infra.dockerd import Dockerd
from tests.infra.images import BuiltImage
from tests.infra.nginx import Nginx
from tests.integration.containers.conftest import (
    DOCKER_ONLY,
    RuntimeFactory,
    deploy,
    make_spec,
)


@pytest.mark.parametrize("engine", DOCKER_ONLY, indirect=True)
async def test_serving_container_is_back_after_dockerd_restarts(
    make_runtime: RuntimeFactory, images: dict[str, BuiltImage], nginx: Nginx,
    dockerd: Dockerd, model: str,
) -> None:
    """dockerd's shutdown (a package upgrade, a reboot) stops every container, and only a
    restart policy starts one again; the daemon would not redeploy a revision it applied.
    (Podman's API service can restart under its containers: they keep running.)"""
    rt = make_runtime()
    first = await deploy(rt, make_spec(model, images["v1.0.0"]), "r1")
    await asyncio.to_thread(dockerd.restart)
    await asyncio.to_thread(wait_until, lambda: http_ok(nginx.url + "/version") and
                            _get(nginx.url + "/version") == "v1.0.0", 30,
                            "the container to serve again after dockerd restarted")
    assert [i.id for i in await rt.instances(model)] == [first.id]
    second = await deploy(rt, make_spec(model, images["v1.1.0"]), "r2")
    assert [i.id for i in await rt.instances(model)] == [second.id]
    assert _get(nginx.url + "/version") == "v1.1.0"


def _get(url: str) -> str:
    return httpx.get(url, timeout=2).text.strip()
