"""Weights download throughput and staging cost, each next to its baseline in the same run.

    python -m bench.weights --size-mb 512 --repeat 3      # full size (docs/performance.md)
    python -m bench.weights --size-mb 16 --repeat 1       # smoke size (CI)

For one random file of `--size-mb`, served on loopback by nginx, by the private registry
(pushed with `push-weights`) and by s3proxy:
- baseline: `curl -o FILE` of the same bytes (registry: a plain blob GET with basic auth;
  s3proxy: a presigned URL), followed by `sha256sum` and `sync FILE` (what the stager does:
  hash, write, fsync);
- the stager (model-watcher's own download path: http.client in a thread, 1 MiB reads),
  into a fresh cache, in a child process whose peak RSS (VmHWM) is recorded;
- httpx's async stream (the alternative the stager does not use), same work, for contrast.
Then: peak RSS of the stager at 1/4 and full size (memory must be flat), and what staging
adds to an update: a fresh download vs a cache hit (a prefetched revision). Runs alternate
between clients so a noisy neighbour hits all of them alike; the median is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, emit, table

MB = 1_000_000


def _child(argv: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "bench.weights", "--child", *argv], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child(kind: str, uri: str, digest: str, cache: str, settings: str) -> None:
    """One download in this process; prints seconds and peak RSS as JSON."""
    from watcher.core.spec import ModelSpec
    from watcher.fetchers.options import parse_weights_options
    from watcher.fetchers.stage import Stager

    rss0 = _hwm()
    start = time.perf_counter()
    if kind == "stager":
        st = Stager(parse_weights_options(json.loads(settings)), Path(cache))
        spec = ModelSpec.model_validate({"name": "bench", "version": "v1.0.0",
                                         "model": {"uri": uri, "sha256": digest}})

        async def go() -> None:
            await st.stage(spec)
            await st.aclose()

        asyncio.run(go())
    else:  # httpx: async stream, sha256 while writing, fsync
        import httpx

        async def go_httpx() -> None:
            h = hashlib.sha256()
            headers = json.loads(settings).get("headers", {})
            with open(Path(cache) / "out.bin", "wb") as f:
                async with httpx.AsyncClient() as c, c.stream("GET", uri, headers=headers) as r:
                    async for chunk in r.aiter_raw():
                        h.update(chunk)
                        f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            assert h.hexdigest() == digest

        asyncio.run(go_httpx())
    print(json.dumps({"seconds": time.perf_counter() - start, "rss0": rss0, "hwm": _hwm()}))


def curl(url: str, out: Path, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    argv = ["curl", "-sf", "-o", str(out), url]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    subprocess.run(argv, check=True, timeout=1800)
    subprocess.run(["sha256sum", str(out)], check=True, capture_output=True)
    subprocess.run(["sync", str(out)], check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=5)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    from tests.infra.artifacts import StaticNginx
    from tests.infra.registry import Registry
    from tests.infra.s3proxy import S3Proxy
    from tests.integration.weights.conftest import push_weights, weights_settings
    from watcher.fetchers.options import parse_weights_options
    from watcher.fetchers.s3 import S3Fetcher

    tmp = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    size = args.size_mb * MB
    data_path = tmp / "weights.bin"
    with data_path.open("wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(MB))
    digest = hashlib.sha256(data_path.read_bytes()).hexdigest() if size < 2**31 else ""
    servers: list[Any] = []
    try:
        reg = Registry(tmp / "registry").start()
        servers.append(reg)
        ng = StaticNginx(tmp / "nginx").start()
        servers.append(ng)
        s3 = S3Proxy(tmp / "s3").start()
        servers.append(s3)
        os.link(data_path, ng.www / "weights.bin")
        s3.put("bench", "weights.bin", data_path.read_bytes())
        pushed = push_weights(tmp, reg, data_path, "bench/weights:v1")
        wsettings = weights_settings(reg, s3)
        import base64

        basic = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
        presigned = asyncio.run(S3Fetcher(parse_weights_options(wsettings)).locate(
            "s3://bench/weights.bin", None)).url  # type: ignore[arg-type]
        targets = {
            "nginx": (f"{ng.url}/weights.bin", digest, f"{ng.url}/weights.bin", {}),
            "registry": (f"oci://{reg.address}/bench/weights:v1", pushed["sha256"],
                         f"http://{reg.address}/v2/bench/weights/blobs/sha256:{digest}",
                         {"Authorization": f"Basic {basic}"}),
            "s3proxy": ("s3://bench/weights.bin", digest, presigned, {}),
        }
        rows, results = [], {}
        for name, (uri, doc_digest, plain, headers) in targets.items():
            runs: dict[str, list[float]] = {"curl": [], "stager": [], "httpx": []}
            hwm = []
            for i in range(args.repeat):
                out = tmp / f"curl-{name}-{i}.bin"
                runs["curl"].append(curl(plain, out, headers))
                out.unlink()
                cache = tmp / f"cache-{name}-{i}"
                r = _child(["stager", uri, doc_digest, str(cache), json.dumps(wsettings)])
                runs["stager"].append(r["seconds"])
                hwm.append(r["hwm"])
                shutil.rmtree(cache)
                hx = tmp / f"httpx-{name}-{i}"
                hx.mkdir()
                r = _child(["httpx", plain, digest, str(hx), json.dumps({"headers": headers})])
                runs["httpx"].append(r["seconds"])
                shutil.rmtree(hx)
            mbps = {k: size / statistics.median(v) / MB for k, v in runs.items()}
            results[name] = {"MB/s": mbps, "seconds": runs, "stager_peak_rss_mb": max(hwm) / MB}
            rows.append([name, f"{mbps['curl']:.0f}", f"{mbps['stager']:.0f}",
                         f"{100 * mbps['stager'] / mbps['curl']:.0f} %", f"{mbps['httpx']:.0f}",
                         f"{max(hwm) / MB:.0f}"])
        # memory flat: the same stager on a quarter of the file
        quarter = ng.www / "quarter.bin"
        with data_path.open("rb") as src, quarter.open("wb") as dst:
            dst.write(src.read(size // 4))
        qd = hashlib.sha256(quarter.read_bytes()).hexdigest()
        small = _child(["stager", f"{ng.url}/quarter.bin", qd, str(tmp / "cache-q"), json.dumps(wsettings)])
        # what staging adds to an update: fresh download vs cache hit (a prefetched revision)
        cache = tmp / "cache-update"
        fresh = _child(["stager", f"{ng.url}/weights.bin", digest, str(cache), json.dumps(wsettings)])
        hit = _child(["stager", f"{ng.url}/weights.bin", digest, str(cache), json.dumps(wsettings)])
        results["memory"] = {"quarter_size_peak_rss_mb": small["hwm"] / MB,
                             "full_size_peak_rss_mb": results["nginx"]["stager_peak_rss_mb"]}
        results["update"] = {"fresh_seconds": fresh["seconds"], "cache_hit_seconds": hit["seconds"]}
        text = table(f"weights download throughput, {args.size_mb} MB file, median of {args.repeat} "
                     "(MB/s; write + sha256 + fsync; peak RSS of the stager process)",
                     ["server", "curl", "stager", "stager/curl", "httpx", "peak RSS MB"], rows)
        text += "\n\n" + table("memory and staging cost", ["measure", "value"], [
            [f"stager peak RSS, {args.size_mb // 4} MB file", f"{small['hwm'] / MB:.0f} MB"],
            [f"stager peak RSS, {args.size_mb} MB file", f"{results['nginx']['stager_peak_rss_mb']:.0f} MB"],
            [f"staging a new {args.size_mb} MB revision (nginx)", f"{fresh['seconds']:.2f} s"],
            ["staging a prefetched (cached) revision", f"{hit['seconds'] * 1000:.0f} ms"],
        ])
        emit("weights", text, {"size_mb": args.size_mb, "repeat": args.repeat, "results": results})
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
