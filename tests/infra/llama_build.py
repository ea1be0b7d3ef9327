"""Build llama.cpp's `llama-server` from the pinned PyPI sdist of llama-cpp-python, once.

There is no Debian package; PyPI's `llama-cpp-python` sdist carries llama.cpp's whole source
under `vendor/llama.cpp` (tools/server included). The sdist is fetched with pip (hash-pinned,
no git), only the server target is built (about 5 minutes on 2 cores), and the binary is kept
at `CACHE/llama/<VERSION>-<flags hash>/llama-server`, so only a fresh machine pays for it.

Stdlib only: scripts/deps runs it with the system python3 before the project's venv exists.

    python3 tests/infra/llama_build.py start   # build in the background unless cached; returns
    python3 tests/infra/llama_build.py wait    # wait for that build (or build now); 1 on failure

`start` takes the build lock before it returns and hands it to the detached builder, so a
later `wait` (or a test's `ensure_built()`) cannot slip in between and start a second build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VERSION = "0.3.36"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF",
    # portable: a cached binary must not die with SIGILL on another CPU of the fleet
    "-DGGML_NATIVE=OFF",
)
ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODEL_WATCHER_TEST_CACHE", ROOT / ".cache"))
#: Keyed on the pinned version and the flags: changing either builds again.
KEY = f"{VERSION}-{hashlib.sha256(' '.join(CMAKE_FLAGS).encode()).hexdigest()[:8]}"
HOME = CACHE / "llama" / KEY
BINARY = HOME / "llama-server"
BUILD_LOG = HOME / "build.log"
LOCK = CACHE / "llama" / ".build.lock"
#: A build on a loaded 2-core machine: generous, but bounded.
BUILD_TIMEOUT = 45 * 60


def cached() -> bool:
    return BINARY.is_file() and os.access(BINARY, os.X_OK)


def _lock_fd() -> int:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    return os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)


def _run(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True,
                       timeout=BUILD_TIMEOUT)


def build() -> Path:
    """Download the sdist, build llama-server, install it into the cache (the caller locks)."""
    HOME.mkdir(parents=True, exist_ok=True)
    BUILD_LOG.write_text(f"building llama-server from llama-cpp-python {VERSION}\n")
    with tempfile.TemporaryDirectory(prefix="llama-build-", dir=HOME.parent) as tmp:
        work = Path(tmp)
        req = work / "requirements.txt"
        req.write_text(f"llama-cpp-python=={VERSION} --hash=sha256:{SDIST_SHA256}\n")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
              "--no-deps", "--no-binary", ":all:", "--require-hashes", "-r", str(req),
              "-d", str(work)], BUILD_LOG)
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        # only the vendored llama.cpp is needed: skip the Python package around it
        _run(["tar", "-xzf", str(sdist), "-C", str(work), "--wildcards",
              "*/vendor/llama.cpp/*"], BUILD_LOG)
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        out = work / "build"
        _run(["cmake", "-S", str(source), "-B", str(out), *CMAKE_FLAGS], BUILD_LOG)
        jobs = str(max(1, min(os.cpu_count() or 1, 4)))
        _run(["cmake", "--build", str(out), "--target", "llama-server", "-j", jobs], BUILD_LOG)
        staged = HOME / ".llama-server.new"
        shutil.copy2(out / "bin" / "llama-server", staged)
        staged.replace(BINARY)  # atomic: a reader sees no binary or a whole one
    return BINARY


def ensure_built(timeout: float = BUILD_TIMEOUT) -> Path:
    """The cached binary; waits for a build in progress, or builds now (under the lock)."""
    if cached():
        return BINARY
    fd = _lock_fd()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"llama-server build still running after {timeout:g}s "
                                       f"(log: {BUILD_LOG})") from None
                time.sleep(2)
        if cached():
            return BINARY
        try:
            return build()
        except (subprocess.SubprocessError, OSError, StopIteration) as exc:
            tail = BUILD_LOG.read_text(errors="replace")[-3000:] if BUILD_LOG.exists() else ""
            raise RuntimeError(f"building llama-server {VERSION} failed: {exc!r}\n{tail}") from exc
    finally:
        os.close(fd)


def start_background() -> str:
    """Start a detached build unless cached or already building; returns what it did."""
    if cached():
        return f"cached: {BINARY}"
    fd = _lock_fd()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return "a build is already running"
    HOME.mkdir(parents=True, exist_ok=True)
    # The child inherits the locked file description, so the lock is held until it exits.
    with open(HOME / "background.log", "ab") as log:
        child = subprocess.Popen(
            [sys.executable, __file__, "_child"], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, pass_fds=(fd,), env={**os.environ, "LLAMA_LOCK_FD": str(fd)},
            start_new_session=True,
        )
    os.close(fd)
    return f"building in the background (pid {child.pid}, log {BUILD_LOG})"


def _child() -> int:
    """The detached builder: already holds the lock (fd inherited from `start`)."""
    fd = int(os.environ["LLAMA_LOCK_FD"])
    try:
        if not cached():
            build()
        return 0
    except (subprocess.SubprocessError, OSError, StopIteration) as exc:
        print(f"llama-server build failed: {exc!r}", flush=True)
        return 1
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "wait"
    if command == "start":
        print(start_background())
        return 0
    if command == "_child":
        return _child()
    if command == "wait":
        started = time.monotonic()
        try:
            path = ensure_built()
        except (RuntimeError, TimeoutError) as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"llama-server {VERSION}: {path} (waited {time.monotonic() - started:.0f}s)")
        return 0
    print(f"usage: {Path(__file__).name} start|wait", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
