"""The Nacos source against the real server: snapshot, pushes, deletes, discovery, CAS publish."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.infra.common import eventually
from tests.infra.nacos_server import NacosServer
from watcher.core.errors import ConflictError
from watcher.fakes.sink import watching
from watcher.sources.base import DELETED
from watcher.sources.nacos import NacosSource
from watcher.sources.nacos_options import content_md5

Make = Callable[..., NacosSource]


async def test_snapshot_then_pushes_and_deletes(nacos: NacosServer, group: str,
                                                make_source: Make) -> None:
    md5_a = nacos.put("alpha.yaml", "name: alpha\n", group)
    md5_b = nacos.put("beta.yaml", "name: beta\n", group)
    nacos.put("other.yaml", "name: other\n", group)  # not listed: ignored
    await eventually(lambda: nacos.get("beta.yaml", group), 10, "the configs to be readable")
    source = make_source(data_ids=["alpha.yaml", "beta.yaml", "gamma.yaml"])
    async with watching(source) as w:
        await w.sink.until(lambda: w.sink.of("snapshot"), 15, "the initial snapshot")
        first = w.sink.of("snapshot")[0]
        assert {k: (c.revision, c.content) for k, c in first.items()} == {
            "alpha": (md5_a, b"name: alpha\n"), "beta": (md5_b, b"name: beta\n")}
        assert w.sink.of("up") and not w.sink.of("down")

        started = time.monotonic()
        md5_a2 = nacos.put("alpha.yaml", "name: alpha\nv: 2\n", group)
        await w.sink.until(lambda: w.sink.of("changed"), 10, "the push of alpha")
        latency = time.monotonic() - started
        nacos.delete("beta.yaml", group)
        md5_g = nacos.put("gamma.yaml", "name: gamma\n", group)
        want = {"alpha": (md5_a2, b"name: alpha\nv: 2\n"), "gamma": (md5_g, b"name: gamma\n")}
        await w.sink.until(lambda: w.sink.state() == want, 15, "the pushes of beta and gamma")
        changes = [(c.key, c.revision) for c in w.sink.of("changed")]
        assert sorted(changes) == [("alpha", md5_a2), ("beta", DELETED), ("gamma", md5_g)]
        assert latency < 5, f"a push took {latency:.2f}s"
        assert md5_a2 == nacos.get("alpha.yaml", group)[1]  # type: ignore[index]


async def test_pattern_mode_discovers_new_configs(nacos: NacosServer, group: str,
                                                  make_source: Make) -> None:
    md5_a = nacos.put("a.yaml", "name: a\n", group)
    nacos.put("notes.txt", "not a model\n", group)
    await eventually(lambda: nacos.get("a.yaml", group), 10, "a.yaml to be readable")
    source = make_source(data_id_pattern="*.yaml", discovery_interval=0.5)
    async with watching(source) as w:
        await w.sink.until(lambda: w.sink.of("snapshot"), 15, "the initial snapshot")
        assert set(w.sink.of("snapshot")[0]) == {"a"}
        assert w.sink.of("snapshot")[0]["a"].revision == md5_a
        md5_c = nacos.put("c.yaml", "name: c\n", group)
        await w.sink.until(lambda: "c" in w.sink.state(), 15, "c.yaml to be discovered")
        assert w.sink.state()["c"] == (md5_c, b"name: c\n")
        assert "notes" not in w.sink.state()


async def test_snapshot(nacos: NacosServer, group: str, make_source: Make) -> None:
    md5s = {name: nacos.put(f"{name}.yaml", f"name: {name}\n", group) for name in ("m1", "m2")}
    await eventually(lambda: nacos.get("m2.yaml", group), 10, "the configs to be readable")
    source = make_source(data_ids=["m1.yaml", "m2.yaml", "m3.yaml"])
    try:
        changes = (await source.snapshot()).documents
    finally:
        await source.aclose()
    assert {k: c.revision for k, c in changes.items()} == md5s


async def test_publish_compare_and_swap(nacos: NacosServer, group: str, make_source: Make) -> None:
    source = make_source(data_ids=["qwen.yaml"])
    try:
        first = await source.publish("qwen", b"name: qwen\nv: 1\n", if_revision="0")
        assert first == content_md5(b"name: qwen\nv: 1\n")
        await eventually(lambda: nacos.get("qwen.yaml", group), 10, "qwen.yaml to be readable")
        assert nacos.get("qwen.yaml", group) == ("name: qwen\nv: 1\n", first)
        with pytest.raises(ConflictError) as exists:
            await source.publish("qwen", b"name: qwen\nagain: 1\n", if_revision="0")
        assert f"at md5 {first}" in exists.value.reason

        second = await source.publish("qwen", b"name: qwen\nv: 2\n", if_revision=first)
        with pytest.raises(ConflictError) as stale:
            await source.publish("qwen", b"name: qwen\nv: 3\n", if_revision=first)
        assert f"is at md5 {second}" in stale.value.reason
        assert f"expected {first}" in stale.value.reason
        assert nacos.get("qwen.yaml", group) == ("name: qwen\nv: 2\n", second)

        with pytest.raises(ConflictError) as absent:
            await source.publish("other", b"name: other\n", if_revision=first)
        assert "does not exist" in absent.value.reason
        assert nacos.get("other.yaml", group) is None
    finally:
        await source.aclose()


async def test_namespace_is_respected(nacos: NacosServer, group: str, make_source: Make) -> None:
    namespace = f"mw-{group.lower()}"
    nacos.create_namespace(namespace)
    md5_ns = nacos.put("m.yaml", "name: m\nin: namespace\n", group, namespace=namespace)
    nacos.put("m.yaml", "name: m\nin: public\n", group)
    await eventually(lambda: nacos.get("m.yaml", group, namespace), 10, "m.yaml to be readable")
    for selector in ({"data_ids": ["m.yaml", "n.yaml"]}, {"data_id_pattern": "*.yaml"}):
        source = make_source(namespace=namespace, **selector)
        async with watching(source) as w:
            await w.sink.until(lambda: w.sink.of("snapshot"), 15, "the initial snapshot")
            assert w.sink.state() == {"m": (md5_ns, b"name: m\nin: namespace\n")}, selector
            md5_n = await source.publish("n", b"name: n\n")
            await w.sink.until(lambda: "n" in w.sink.state(), 15, "the publish to be pushed")
            assert w.sink.state()["n"][0] == md5_n
        assert nacos.get("n.yaml", group, namespace) is not None
        assert nacos.get("n.yaml", group) is None
        nacos.delete("n.yaml", group, namespace)
        await eventually(lambda: nacos.get("n.yaml", group, namespace) is None, 10, "n deleted")


async def test_periodic_full_reread(nacos: NacosServer, group: str, make_source: Make) -> None:
    md5_r = nacos.put("r.yaml", "name: r\n", group)
    await eventually(lambda: nacos.get("r.yaml", group), 10, "r.yaml to be readable")
    source = make_source(data_ids=["r.yaml"], resync_interval=1.0)
    async with watching(source) as w:
        await w.sink.until(lambda: len(w.sink.of("snapshot")) >= 3, 15, "three full re-reads")
        assert all(s["r"].revision == md5_r for s in w.sink.of("snapshot"))
        assert not w.sink.of("down")
