"""Run an external command as an argv list (never a shell), with a deadline.

One place for what the `command` and `systemd` runtimes and nginx control need: spawn
errors, a timeout that kills the child, cancellation that kills the child, and a non-zero
exit, each raised as the caller's own error type with the last lines of output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from watcher.core.errors import WatcherError


async def run_argv(argv: Sequence[str], *, seconds: float, error: type[WatcherError],
                   env: Mapping[str, str] | None = None) -> str:
    """Run `argv`; return its stdout+stderr. `error` on spawn failure, `seconds` passing, exit != 0."""
    args = list(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, env=dict(env) if env is not None else None, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise error(f"cannot run {args[0]}: {exc.strerror or exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds)
    except (TimeoutError, asyncio.CancelledError) as exc:
        proc.kill()
        await proc.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise error(f"{' '.join(args)}: no exit within {seconds:g}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        tail = " | ".join(text.strip().splitlines()[-3:])
        raise error(f"{' '.join(args)} exited with status {proc.returncode}: {tail}")
    return text
