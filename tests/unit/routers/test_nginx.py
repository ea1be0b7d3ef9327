"""The nginx router without nginx: rendering, the weights marker, step plans, access-log
verdicts, and route() (through a recording subclass of NginxUpstream)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from watcher.routers.base import StepPlan
from watcher.routers.nginx import (
    AccessWindow,
    NginxOptions,
    NginxRouter,
    NginxRouterOptions,
    NginxUpstream,
    TrafficError,
    log_format_name,
    read_weights,
    render,
)

A, B = "127.0.0.1:21000", "127.0.0.1:21001"


def opts(tmp_path: Path) -> NginxOptions:
    return NginxOptions(upstream_file=tmp_path / "up.conf", upstream="qwen-chat",
                        access_log=tmp_path / "access.log")


def test_render_weights_backup_and_log_format(tmp_path: Path) -> None:
    text = render(opts(tmp_path), {B: 30, A: 70})
    assert "upstream qwen-chat {" in text
    assert f"server {B} weight=30 max_fails=0;" in text
    assert f"server {A} weight=70 max_fails=0;" in text
    assert "log_format mw_qwen_chat escape=json" in text
    text = render(opts(tmp_path), {B: 100}, backup=[A])
    assert f"server {A} backup max_fails=0;" in text
    assert f"server {A} weight" not in text


def test_render_refuses_an_empty_upstream(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one server"):
        render(opts(tmp_path), {A: 0})


def test_read_weights_round_trip_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "up.conf"
    assert read_weights(path) == {}
    path.write_text(render(opts(tmp_path), {A: 95, B: 5}))
    assert read_weights(path) == {A: 95, B: 5}
    path.write_text("upstream x { server 127.0.0.1:9 down; }\n")
    assert read_weights(path) == {}


def test_log_format_name_is_an_nginx_identifier() -> None:
    assert log_format_name("qwen-chat.v2") == "mw_qwen_chat_v2"


@pytest.mark.parametrize("steps", [[], [50], [10, 5, 100], [0, 100], [10, 10, 100], [50, 101]])
def test_step_plan_must_ascend_to_100(steps: list[int]) -> None:
    with pytest.raises(ValidationError):
        StepPlan(steps=steps)


def test_step_plan_default_is_a_single_switch() -> None:
    assert StepPlan().steps == [100]


def _log(path: Path, *records: tuple[str, str, str]) -> None:
    with path.open("a") as fh:
        for addr, status, rt in records:
            fh.write(json.dumps({"t": 1.0, "addr": addr, "status": status, "rt": rt}) + "\n")


def test_access_window_counts_only_new_records_for_the_address(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    _log(log, (B, "500", "0.001"))  # before the window: ignored
    window = AccessWindow(log)
    _log(log, (B, "200", "0.010"), (A, "500", "0.001"), (f"{B}, {A}", "502, 200", "0.001, 0.002"),
         (B, "200", "0.300"), ("-", "-", "-"))
    stats = window.stats(B)
    assert (stats.requests, stats.errors) == (3, 1)
    assert stats.p95_ms == pytest.approx(300)
    assert window.stats(A).requests == 2


def test_verdict_thresholds(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.touch()
    window = AccessWindow(log)
    _log(log, *[(B, "200", "0.010")] * 18, *[(B, "503", "0.010")] * 2)
    assert "error rate 10.0%" in (window.verdict(B, StepPlan(max_error_rate=0.05)) or "")
    assert window.verdict(B, StepPlan(max_error_rate=0.2)) is None
    assert window.verdict(B, StepPlan(max_error_rate=0.05, min_requests=50)) is None
    assert "p95 latency" in (window.verdict(B, StepPlan(max_error_rate=1, max_latency_ms=5)) or "")
    assert AccessWindow(None).verdict(B, StepPlan()) is None


class Recording(NginxUpstream):
    def __init__(self, tmp_path: Path, fail_on: int | None = None) -> None:
        super().__init__(opts(tmp_path))
        self.calls: list[tuple[dict[str, int], list[str] | None]] = []
        self.fail_on = fail_on

    async def apply(self, weights: dict[str, int], backup: list[str] | None = None) -> None:
        self.calls.append((dict(weights), backup))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise TrafficError("nginx -t failed")


async def test_the_router_sets_weights_with_zero_as_backup(tmp_path: Path) -> None:
    router = NginxRouter(NginxRouterOptions(upstream_file=tmp_path / "{model}.conf",
                                            upstream="{model}", steps=[10, 100]))
    up = Recording(tmp_path)
    router._upstreams["m"] = up
    await router.route("m", {B: 10, A: 90})
    await router.route("m", {B: 100, A: 0})
    await router.route("m", {B: 100})
    assert up.calls == [({B: 10, A: 90}, None), ({B: 100}, [A]), ({B: 100}, None)]
    assert router.plan.steps == [10, 100]
    assert router.upstream("other").opts.upstream_file == tmp_path / "other.conf"


async def test_apply_restores_the_previous_file_when_nginx_refuses(tmp_path: Path) -> None:
    o = opts(tmp_path).model_copy(update={"binary": "/bin/true", "settle": 0})
    await NginxUpstream(o).apply({A: 100})
    assert read_weights(o.upstream_file) == {A: 100}
    bad = o.model_copy(update={"binary": "/bin/false"})
    with pytest.raises(TrafficError, match="exited with status 1"):
        await NginxUpstream(bad).apply({B: 100})
    assert read_weights(o.upstream_file) == {A: 100}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


async def test_apply_with_a_missing_binary_is_a_traffic_error(tmp_path: Path) -> None:
    o = opts(tmp_path).model_copy(update={"binary": str(tmp_path / "no-nginx")})
    with pytest.raises(TrafficError, match="cannot run"):
        await NginxUpstream(o).apply({A: 100})
    assert not o.upstream_file.exists()


async def test_an_unwritable_upstream_file_is_a_clean_switch_failure(tmp_path: Path) -> None:
    """An OSError writing the file (read-only under ProtectSystem=strict, permissions) is a
    TrafficError, so the promotion fails (core/promotion.py) and the executor stops the new
    instance; nginx is never asked to reload."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    up = NginxUpstream(NginxOptions(upstream_file=blocker / "up.conf", upstream="m",
                                    binary="/nonexistent/nginx"))
    with pytest.raises(TrafficError, match="cannot write the nginx upstream file"):
        await up.apply({A: 100})


def test_cgroup_dir_finds_the_units_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from watcher.routers import nginx_control

    v1 = tmp_path / "systemd"
    (v1 / "system.slice" / "nginx.service").mkdir(parents=True)
    (v1 / "system.slice" / "nginx.service" / "cgroup.procs").write_text("10\n11\n12\n")
    monkeypatch.setattr(nginx_control, "CGROUP_ROOTS", (tmp_path / "unified", tmp_path, v1))
    found = nginx_control.cgroup_dir("/system.slice/nginx.service")
    assert found == v1 / "system.slice" / "nginx.service"
    assert nginx_control.cgroup_procs(found) == {10, 11, 12}
    assert nginx_control.cgroup_dir("relative") is None
    assert nginx_control.cgroup_dir("/system.slice/gone.service") is None
