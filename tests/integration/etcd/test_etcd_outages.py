"""The etcd source through outages: member killed and restarted, compaction while cut off,
a three-member cluster losing its leader in the middle of a stream of publishes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.infra.etcd import EtcdCluster, TcpProxy
from tests.integration.etcd.conftest import etcd_state
from watcher.fakes.sink import watching
from watcher.sources.etcd import EtcdSource


def no_duplicates(delivered: list[tuple[str, str]]) -> None:
    dup = [kr for kr, n in Counter(delivered).items() if n > 1]
    assert not dup, f"delivered twice: {dup}"
    per_key: dict[str, int] = {}
    for key, rev in delivered:
        assert int(rev) > per_key.get(key, 0), f"{key} went back to revision {rev}"
        per_key[key] = int(rev)


async def test_kill_and_restart_same_data_dir(tmp_path: Path, make_source: type[EtcdSource],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="watcher.sources")
    cluster = EtcdCluster(tmp_path).start()
    member = cluster.members[0]
    prefix = "/model-watcher/models/"
    try:
        cluster.put(prefix + "alpha", "a1")
        async with watching(make_source(endpoints=cluster.endpoints, prefix=prefix)) as w:
            await w.sink.until(lambda: w.sink.snapshots, 10, "the initial snapshot")
            # changes just before the kill: written to etcd; the watch may or may not see them
            for i in range(5):
                cluster.put(prefix + "alpha", f"a{i + 2}")
            cluster.put(prefix + "beta", "b1")
            member.kill9()
            await w.sink.until(lambda: any(not up for up, _ in w.sink.edges), 10,
                             "connectivity down")
            await asyncio.sleep(2.5)  # several reconnect attempts while it is down
            member.start()
            cluster.put(prefix + "gamma", "g1")
            cluster.delete(prefix + "beta")
            expected = etcd_state(cluster, prefix)
            await w.sink.until(lambda: w.sink.state() == expected, 20, "catch-up after restart")
            no_duplicates(w.sink.revisions())
            assert len(w.sink.snapshots) == 1, "a resume must not need a re-read"
            assert [up for up, _ in w.sink.edges] == [True, False, True]
        # the outage is logged once (the edge, a WARNING); before it at most the one
        # immediate reconnect (INFO), after it each retry only at DEBUG
        loud = [r for r in caplog.records
                if r.levelno >= logging.INFO and "unreachable" in r.getMessage()]
        edges = [r for r in loud if r.levelno >= logging.WARNING]
        assert len(edges) == 1, [r.getMessage() for r in loud]
        assert all("reconnecting at once" in r.getMessage() for r in loud if r not in edges)
        assert len(loud) <= 2, [r.getMessage() for r in loud]
        retries = [r for r in caplog.records if "still unreachable" in r.getMessage()]
        assert retries and all(r.levelno == logging.DEBUG for r in retries)
    finally:
        cluster.stop()


async def test_compaction_while_disconnected_rereads(tmp_path: Path,
                                                     make_source: type[EtcdSource]) -> None:
    cluster = EtcdCluster(tmp_path).start()
    proxy = TcpProxy(cluster.members[0].client_port)
    prefix = "/model-watcher/models/"
    try:
        cluster.put(prefix + "alpha", "a1")
        cluster.put(prefix + "beta", "b1")
        source = make_source(endpoints=[proxy.url], prefix=prefix)
        async with watching(source) as w:
            await w.sink.until(lambda: w.sink.snapshots, 10, "the initial snapshot")
            proxy.cut()
            await w.sink.until(lambda: any(not up for up, _ in w.sink.edges), 10,
                             "connectivity down")
            cluster.put(prefix + "alpha", "a2")
            cluster.delete(prefix + "beta")
            cluster.put(prefix + "gamma", "g1")
            cluster.put("/unrelated", "x")
            cluster.compact()
            proxy.restore()
            expected = etcd_state(cluster, prefix)
            await w.sink.until(lambda: len(w.sink.snapshots) >= 2, 20, "a re-read snapshot")
            await w.sink.until(lambda: w.sink.state() == expected, 10, "the final state")
            assert set(w.sink.snapshots[-1]) == {"alpha", "gamma"}  # beta is gone: a delete
            assert w.sink.edges[-1][0] is True
            # and the watch goes on after the re-read
            rev = cluster.put(prefix + "delta", "d1")
            await w.sink.until(lambda: w.sink.state().get("delta") == (str(rev), b"d1"), 10, "d1")
    finally:
        proxy.close()
        cluster.stop()


async def test_cluster_leader_killed_during_publishes(tmp_path: Path,
                                                      make_source: type[EtcdSource]) -> None:
    cluster = EtcdCluster(tmp_path, size=3).start()
    prefix = "/model-watcher/models/"
    try:
        leader = cluster.leader()
        # the watcher prefers the leader, so killing it breaks the stream in flight
        ordered = [leader.url] + [m.url for m in cluster.members if m is not leader]
        watcher = make_source(endpoints=ordered, prefix=prefix)
        publisher = make_source(endpoints=cluster.endpoints, prefix=prefix)
        async with watching(watcher) as w:
            await w.sink.until(lambda: w.sink.snapshots, 10, "the initial snapshot")
            published: list[str] = []
            started = time.monotonic()
            for i in range(40):
                if i == 15:
                    leader.kill9()
                for _attempt in range(50):  # a put during the election may be refused: retry
                    try:
                        published.append(await publisher.publish(f"m{i % 4}", f"v{i}".encode()))
                        break
                    except Exception:
                        await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"publish {i} never went through")
                await asyncio.sleep(0.02)
            assert time.monotonic() - started < 60
            expected = etcd_state(cluster, prefix)
            assert max(int(r) for r, _ in expected.values()) == int(published[-1])
            await w.sink.until(lambda: w.sink.state() == expected, 20, "the last revision")
            no_duplicates(w.sink.revisions())
            assert watcher.gateway.endpoint != leader.url
        await publisher.aclose()
    finally:
        cluster.stop()


async def test_hung_member_is_detected_and_left(tmp_path: Path,
                                                make_source: type[EtcdSource]) -> None:
    """A member that stops answering (SIGSTOP: the TCP connection stays open) is found out by
    the keepalive probe, and the watch resumes on another member without loss."""
    cluster = EtcdCluster(tmp_path, size=3).start()
    prefix = "/model-watcher/models/"
    hung = cluster.members[0]
    try:
        source = make_source(endpoints=cluster.endpoints, prefix=prefix)  # watches on m0 first
        async with watching(source) as w:
            await w.sink.until(lambda: w.sink.snapshots, 10, "the initial snapshot")
            assert source.gateway.endpoint == hung.url
            hung.pause()
            try:
                started = time.monotonic()
                for i in range(3):
                    await asyncio.to_thread(_put_retrying, cluster, prefix + "alpha", f"a{i}")
                expected = etcd_state(cluster, prefix)
                await w.sink.until(lambda: w.sink.state() == expected, 20, "the watch to move on")
                assert time.monotonic() - started < 20
                assert source.gateway.endpoint != hung.url
                no_duplicates(w.sink.revisions())
            finally:
                hung.resume()
    finally:
        cluster.stop()


def _put_retrying(cluster: EtcdCluster, key: str, value: str) -> None:
    for _ in range(100):
        try:
            cluster.put(key, value)
            return
        except RuntimeError:
            time.sleep(0.1)
    raise AssertionError(f"put {key} never went through")
