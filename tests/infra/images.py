"""Test images built `FROM scratch` around Debian's static busybox, pushed to the registry.

Every image runs `busybox httpd` on port 8080 under a tiny shell that turns SIGTERM into
a clean exit (PID 1 ignores signals it has no handler for). Kinds:

    good       /health 200, / and /version answer the version
    unhealthy  no /health (404): fails every health gate
    flaky      /health 200, but / answers 500 (a CGI): passes the gate, fails real traffic
    crash      says why on stderr and exits 3 at once (a server that cannot load its model)

They are built in a build storage of their own and pushed with credentials, so the engine
under test holds only what it pulled through the Engine API, as a production host would.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.infra.podman import PodmanEnv
from tests.infra.registry import Registry

BUSYBOX_HINT = "Debian package busybox-static (scripts/deps/40-containers.sh)"
REPO = "mw/model-server"
ENTRYPOINT = (
    'trap "kill \\$P; exit 0" TERM INT; '
    "busybox httpd -f -p 8080 -h /www & P=$!; wait $P"
)
CRASH = "echo 'model server: cannot load the weights' >&2; exit 3"
FAIL_CGI = "#!/bin/sh\nprintf 'Status: 500 Internal Server Error\\r\\n\\r\\nbroken\\n'\n"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    tag: str
    kind: str
    digest: str


def _busybox() -> Path:
    for p in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if p.exists():
            return p
    raise RuntimeError(f"busybox is not installed ({BUSYBOX_HINT}); run scripts/install-deps.sh")


def _context(dir: Path, tag: str, kind: str) -> Path:
    shutil.rmtree(dir, ignore_errors=True)
    (dir / "bin").mkdir(parents=True)
    (dir / "www" / "cgi-bin").mkdir(parents=True)
    shutil.copy2(_busybox(), dir / "bin" / "busybox")
    (dir / "bin" / "sh").symlink_to("busybox")
    www = dir / "www"
    (www / "version").write_text(tag + "\n")
    if kind != "unhealthy":
        (www / "health").write_text("ok\n")
    if kind == "flaky":
        cgi = www / "cgi-bin" / "index.cgi"
        cgi.write_text(FAIL_CGI)
        cgi.chmod(0o755)
    else:
        (www / "index.html").write_text(tag + "\n")
    (dir / "Containerfile").write_text(
        "FROM scratch\nCOPY bin /bin\nCOPY www /www\n"
        f'ENV PATH=/bin\nLABEL org.example.kind="{kind}"\nEXPOSE 8080\n'
        f"ENTRYPOINT [\"/bin/sh\", \"-c\", {json.dumps(CRASH if kind == 'crash' else ENTRYPOINT)}]\n"
    )
    return dir


def build_and_push(builder: PodmanEnv, registry: Registry, images: dict[str, str],
                   repo: str = REPO) -> dict[str, BuiltImage]:
    """Build tag -> kind, push each with credentials; return tag -> BuiltImage."""
    out = {}
    creds = f"{registry.username}:{registry.password}"
    for tag, kind in images.items():
        ref = f"{registry.address}/{repo}:{tag}"
        ctx = _context(builder.root / "contexts" / tag, tag, kind)
        builder.cli("build", "--quiet", "--tag", ref, str(ctx), timeout=300)
        builder.cli("push", "--quiet", "--creds", creds, "--tls-verify=false", ref, timeout=300)
        out[tag] = BuiltImage(ref, tag, kind, registry.manifest_digest(repo, tag))
    return out
