"""The Nacos source when things go wrong: refused credentials, and the server going away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from tests.infra.common import eventually
from tests.infra.nacos_server import NacosServer
from watcher.core.errors import SourceError
from watcher.fakes.sink import watching
from watcher.sources.nacos import NacosSource

Make = Callable[..., NacosSource]


async def test_wrong_credentials_give_one_clear_error(nacos: NacosServer, group: str,
                                                      make_source: Make,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="watcher")
    secret = "not-the-password-" + str(time.monotonic_ns())
    source = make_source(data_ids=["m.yaml"], password=secret, auth_retry_interval=60)
    async with watching(source) as w:
        await w.sink.until(lambda: w.sink.of("down"), 10, "the refusal to be reported")
        await asyncio.sleep(3)  # a retry storm would show here
        downs = w.sink.of("down")
        assert len(downs) == 1 and not w.sink.of("snapshot") and not w.sink.of("up")
        assert "refused the credentials of user 'nacos'" in downs[0]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("watcher")]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "source.username/source.password" in errors[0].getMessage()
    assert secret not in caplog.text

    publisher = make_source(data_ids=["m.yaml"], password=secret)
    try:
        with pytest.raises(SourceError) as refused:
            await publisher.publish("m", b"name: m\n")
        assert "refused the credentials" in refused.value.reason
    finally:
        await publisher.aclose()
    assert nacos.get("m.yaml", group) is None


async def test_outage_is_reported_once_and_the_source_converges(
        nacos: NacosServer, group: str, make_source: Make) -> None:
    md5_1 = nacos.put("m.yaml", "name: m\nv: 1\n", group)
    await eventually(lambda: nacos.get("m.yaml", group), 10, "m.yaml to be readable")
    source = make_source(data_ids=["m.yaml", "n.yaml"])
    async with watching(source) as w:
        await w.sink.until(lambda: w.sink.of("snapshot"), 15, "the initial snapshot")
        assert w.sink.state() == {"m": (md5_1, b"name: m\nv: 1\n")}
        nacos.stop()
        try:
            await w.sink.until(lambda: w.sink.of("down"), 20, "the outage to be reported")
            assert "unreachable" in w.sink.of("down")[0]
            await asyncio.sleep(4)  # several reconnect attempts (max_backoff 1 s)
            assert len(w.sink.of("down")) == 1, "one report per outage"
        finally:
            nacos.start()
        await w.sink.until(lambda: len(w.sink.of("snapshot")) >= 2, 60, "a fresh snapshot")
        assert w.sink.events[-1][0] == "up" or w.sink.of("up")[-1]
        started = time.monotonic()
        md5_2 = nacos.put("m.yaml", "name: m\nv: 2\n", group)
        md5_n = nacos.put("n.yaml", "name: n\n", group)
        want = {"m": (md5_2, b"name: m\nv: 2\n"), "n": (md5_n, b"name: n\n")}
        await w.sink.until(lambda: w.sink.state() == want, 30, "pushes after the return")
        assert time.monotonic() - started < 15
        assert len(w.sink.of("down")) == 1
