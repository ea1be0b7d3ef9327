"""`model-watcher push-weights DIR|FILE oci://REGISTRY/REPO:TAG`: publish weights to a registry.

Uploads each file as a layer of a ModelPack OCI artifact (chunked, resumable, blobs the
registry has are skipped) and prints what the model document needs: the `uri` pinned by
digest and the `sha256` (the manifest digest); with `--key`, the signature over it too.
Credentials: `--username` + `--password-stdin` (never argv), else `weights.credentials`
for the registry host, else the docker runtime's `registry_auth`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from watcher.cli.common import settings_from_args
from watcher.cli.pull import ByteBar
from watcher.core.errors import SettingsError
from watcher.observability import logs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("push-weights", help="upload weights to a registry as an OCI artifact")
    p.add_argument("path", type=Path, help="a weights file, or a directory of files")
    p.add_argument("ref", help="oci://REGISTRY/REPOSITORY:TAG")
    p.add_argument("--username", help="registry user (with --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--key", type=Path, help="ed25519 private key: also print the signature")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: every command module is imported to build the parser, `run` included
    from pydantic import SecretStr

    from watcher.fetchers.oci_api import OciRef
    from watcher.fetchers.oci_push import Pusher
    from watcher.fetchers.options import Credential, parse_weights_options

    settings = settings_from_args(args)
    logs.setup("WARNING", "text")
    options = parse_weights_options(settings.weights)
    ref = OciRef.parse(args.ref)
    if ref.tag is None:
        raise SettingsError("push-weights needs a tag: oci://REGISTRY/REPOSITORY:TAG")
    credential = options.credential(ref.registry)
    if args.username:
        if not args.password_stdin:
            raise SettingsError("--username needs --password-stdin (a password never goes in argv)")
        password = sys.stdin.readline().rstrip("\n")
        logs.register_secret(password)
        credential = Credential(host=ref.registry, username=args.username, password=SecretStr(password))
    if credential is None:
        from watcher.fetchers.stage import stager_for

        credential = stager_for(settings).fallback
    bar = ByteBar(sys.stderr, "push")
    pusher = Pusher(ref, options, credential, progress=bar.update)
    try:
        pushed = asyncio.run(pusher.push(args.path))
    finally:
        bar.done()
    size = sum(x.size for x in pushed.layers)
    print(f"pushed {len(pushed.layers)} file(s), {size / 1e6:.1f} MB "
          f"({pushed.uploaded} blob(s) uploaded, the rest already there)", file=sys.stderr)
    print(f"uri: oci://{ref.registry}/{ref.repository}@sha256:{pushed.digest}")
    print(f"sha256: {pushed.digest}")
    if args.key:
        from watcher.cli.sign import load_private_key, sign_digest

        print(f"signature: {sign_digest(load_private_key(args.key), pushed.digest)}")
    return 0
