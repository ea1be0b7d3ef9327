"""A `FROM scratch` image running the cached llama-server, pushed to the test registry.

There is no public registry here, so the image is assembled from the host: the binary is
built with static llama/ggml libraries but still links libstdc++, libgomp, libm, libgcc_s and
libc dynamically, so those (as `ldd` lists them) and the dynamic loader are copied in at the
same paths. The entrypoint serves on 0.0.0.0:8080 inside the container; `runtime.args` of a
document (the container's Cmd) adds the model and its settings, e.g. `--ctx-size 512`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.infra.images import BuiltImage
from tests.infra.llama_build import ensure_built
from tests.infra.podman import PodmanEnv
from tests.infra.registry import Registry

REPO = "mw/llama-server"
ENTRYPOINT = ["/bin/llama-server", "--host", "0.0.0.0", "--port", "8080", "--no-webui"]


def shared_libraries(binary: Path) -> list[Path]:
    """Absolute paths of every library `binary` loads, the dynamic loader included."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True,
                         timeout=30).stdout
    libs = [Path(m) for m in re.findall(r"(/\S+\.so[.\d]*)", out)]
    if not any("ld-linux" in p.name for p in libs):
        raise RuntimeError(f"ldd named no dynamic loader for {binary}:\n{out}")
    return libs


def context(dir: Path) -> Path:
    binary = ensure_built()
    shutil.rmtree(dir, ignore_errors=True)
    (dir / "root" / "bin").mkdir(parents=True)
    (dir / "root" / "tmp").mkdir()
    shutil.copy2(binary, dir / "root" / "bin" / "llama-server")
    for lib in shared_libraries(binary):
        dest = dir / "root" / lib.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib.resolve(), dest)  # the file, not the symlink, at the linked name
    (dir / "Containerfile").write_text(
        "FROM scratch\nCOPY root /\nENV LLAMA_CACHE=/tmp\nEXPOSE 8080\n"
        f"ENTRYPOINT {json.dumps(ENTRYPOINT)}\n"
    )
    return dir


def build_and_push(builder: PodmanEnv, registry: Registry, tag: str = "v1") -> BuiltImage:
    ref = f"{registry.address}/{REPO}:{tag}"
    ctx = context(builder.root / "contexts" / f"llama-{tag}")
    builder.cli("build", "--quiet", "--tag", ref, str(ctx), timeout=300)
    creds = f"{registry.username}:{registry.password}"
    builder.cli("push", "--quiet", "--creds", creds, "--tls-verify=false", ref, timeout=300)
    return BuiltImage(ref, tag, "llama-server", registry.manifest_digest(REPO, tag))
