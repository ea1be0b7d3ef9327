"""`model-watcher validate FILE [--environment ENV]`: the daemon's own checks, for CI pipelines.

Exit status 0 when the document would be accepted, 1 with the one-line reason when not (never
a traceback). Checks: bounded decoding, schema and each field's grammar, the channel policy
for the environment and what the settings admit (env names, uri schemes, health caps), and
with --verify the checks that read this host (allowed roots with symlinks resolved, weights
digest, signature): `check_document` is the function the daemon's pipeline runs, in the same
order, so a hostile document gets the same reason here, from `publish` and in the daemon's
history (tests/unit/test_verdicts.py, tests/integration/hostile/).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from watcher.cli.common import settings_from_args
from watcher.core import policy
from watcher.core.errors import DocumentError, RejectedError
from watcher.core.spec import ModelSpec, parse_document
from watcher.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check a model document as the daemon would")
    p.add_argument("file", type=Path)
    p.add_argument("--environment", "-e", help="environment whose policy applies")
    p.add_argument("--verify", action="store_true",
                   help="also the checks that read this host: allowed roots, weights digest, signature")
    p.set_defaults(func=run)


def check_file(path: Path, settings: Settings, *, key: str | None, verify: bool) -> tuple[bytes, ModelSpec]:
    """Read `path`; raise RejectedError (with the reason) unless the daemon would accept it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"cannot read {path}: {exc.strerror}") from None
    return raw, check_document(raw, settings, key=key, verify=verify)


def check_document(raw: bytes, settings: Settings, *, key: str | None, verify: bool) -> ModelSpec:
    """Raise RejectedError (with the reason) unless the daemon would accept `raw`."""
    spec = parse_document(raw, key=key, max_bytes=settings.reconcile.max_document_bytes)
    policy.check(spec, environment=settings.environment, settings=settings.policy)
    if verify:
        from watcher.core import verify as verify_mod

        asyncio.run(verify_mod.verify_spec(spec, settings.trust))
    return spec


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        _, spec = check_file(args.file, settings, key=None, verify=args.verify)
    except RejectedError as exc:
        print(f"{args.file}: invalid: {exc.reason}", file=sys.stderr)
        return 1
    print(f"{args.file}: valid: {spec.name} {spec.version} ({spec.semver.channel}) "
          f"for environment {settings.environment!r}")
    return 0
