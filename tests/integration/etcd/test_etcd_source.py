"""The etcd source against a real single member: snapshot, changes, deletes, CAS publish, resync."""

from __future__ import annotations

import pytest

from tests.infra.etcd import EtcdCluster
from tests.integration.etcd.conftest import etcd_state
from watcher.core.errors import ConflictError, SourceUnavailable
from watcher.fakes.sink import watching
from watcher.sources.etcd import EtcdSource


async def test_snapshot_then_changes_and_deletes(etcd: EtcdCluster, prefix: str,
                                                 make_source: type[EtcdSource]) -> None:
    rev_a = etcd.put(prefix + "alpha", "a1")
    rev_b = etcd.put(prefix + "beta", "b1")
    etcd.put(prefix.rstrip("/") + "-other/alpha", "not ours")  # a sibling prefix is ignored
    async with watching(make_source(endpoints=etcd.endpoints, prefix=prefix)) as w:
        await w.sink.until(lambda: w.sink.snapshots, 10, "the initial snapshot")
        first = w.sink.snapshots[0]
        assert {k: (c.revision, c.content) for k, c in first.items()} == {
            "alpha": (str(rev_a), b"a1"), "beta": (str(rev_b), b"b1")}
        assert w.sink.edges[0][0] is True

        rev_a2 = etcd.put(prefix + "alpha", "a2")
        rev_del = etcd.delete(prefix + "beta")
        rev_g = etcd.put(prefix + "gamma", "g1")
        await w.sink.until(lambda: len(w.sink.changes) >= 3, 10, "three changes")
        assert [(c.key, c.revision, c.content) for c in w.sink.changes] == [
            ("alpha", str(rev_a2), b"a2"), ("beta", str(rev_del), None), ("gamma", str(rev_g), b"g1")]
        assert w.sink.changes[1].deleted
        assert w.sink.state() == etcd_state(etcd, prefix)
        assert len(w.sink.snapshots) == 1


async def test_snapshot_is_one_consistent_read(etcd: EtcdCluster, prefix: str,
                                               make_source: type[EtcdSource]) -> None:
    revs = {name: etcd.put(prefix + name, name.upper()) for name in ("m1", "m2", "m3")}
    source = make_source(endpoints=etcd.endpoints, prefix=prefix)
    try:
        changes = (await source.snapshot()).documents
    finally:
        await source.aclose()
    assert {k: (c.revision, c.content) for k, c in changes.items()} == {
        name: (str(rev), name.upper().encode()) for name, rev in revs.items()}


async def test_publish_compare_and_swap(etcd: EtcdCluster, prefix: str,
                                        make_source: type[EtcdSource]) -> None:
    source = make_source(endpoints=etcd.endpoints, prefix=prefix)
    try:
        first = await source.publish("qwen", b"v1", if_revision="0")  # must not exist yet
        assert etcd_state(etcd, prefix) == {"qwen": (first, b"v1")}
        with pytest.raises(ConflictError) as absent:
            await source.publish("qwen", b"again", if_revision="0")
        assert f"is at revision {first}" in absent.value.reason
        second = await source.publish("qwen", b"v2", if_revision=first)
        assert int(second) > int(first)
        with pytest.raises(ConflictError) as stale:
            await source.publish("qwen", b"v3", if_revision=first)
        assert f"is at revision {second}" in stale.value.reason
        assert f"expected revision {first}" in stale.value.reason
        assert etcd_state(etcd, prefix) == {"qwen": (second, b"v2")}  # the loser wrote nothing
        third = await source.publish("qwen", b"v3")  # unconditional
        assert etcd_state(etcd, prefix) == {"qwen": (third, b"v3")}
        with pytest.raises(ConflictError, match="does not exist"):
            await source.publish("other", b"x", if_revision=third)
    finally:
        await source.aclose()


async def test_periodic_resync_delivers_fresh_snapshots(etcd: EtcdCluster, prefix: str,
                                                        make_source: type[EtcdSource]) -> None:
    etcd.put(prefix + "alpha", "a1")
    source = make_source(endpoints=etcd.endpoints, prefix=prefix, resync_interval=0.5)
    async with watching(source) as w:
        await w.sink.until(lambda: len(w.sink.snapshots) >= 3, 10, "three snapshots")
        rev = etcd.put(prefix + "alpha", "a2")
        await w.sink.until(lambda: w.sink.state().get("alpha") == (str(rev), b"a2"), 10, "a2")
        # a change is delivered once: by the watch or by a snapshot, never by both streams twice
        assert w.sink.revisions().count(("alpha", str(rev))) <= 1
        assert all(up for up, _ in w.sink.edges)


async def test_requested_resync_rereads_inside_the_watch(etcd: EtcdCluster, prefix: str,
                                                         make_source: type[EtcdSource]) -> None:
    etcd.put(prefix + "alpha", "a1")
    source = make_source(endpoints=etcd.endpoints, prefix=prefix, resync_interval=0)
    async with watching(source) as w:
        await w.sink.until(lambda: len(w.sink.snapshots) == 1, 10, "the first snapshot")
        w.session.request_resync()
        await w.sink.until(lambda: len(w.sink.snapshots) == 2, 10, "a snapshot on request")
        rev = etcd.put(prefix + "alpha", "a2")
        await w.sink.until(lambda: w.sink.state().get("alpha") == (str(rev), b"a2"), 10, "a2 after it")


async def test_unreachable_endpoint_is_skipped(etcd: EtcdCluster, prefix: str,
                                               make_source: type[EtcdSource]) -> None:
    from tests.infra.common import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    rev = etcd.put(prefix + "alpha", "a1")
    async with watching(make_source(endpoints=[dead, *etcd.endpoints], prefix=prefix)) as w:
        await w.sink.until(lambda: w.sink.snapshots, 10, "a snapshot through the live endpoint")
        assert w.sink.state() == {"alpha": (str(rev), b"a1")}
        assert [up for up, _ in w.sink.edges] == [True]


async def test_snapshot_with_nothing_reachable_raises(make_source: type[EtcdSource]) -> None:
    from tests.infra.common import free_port

    source = make_source(endpoints=[f"http://127.0.0.1:{free_port()}"])
    try:
        with pytest.raises(SourceUnavailable, match="etcd unreachable: no endpoint answered"):
            await source.snapshot()
    finally:
        await source.aclose()
