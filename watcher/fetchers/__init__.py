"""Remote weights: fetchers by URI scheme, the content-addressed cache, staging.

A fetcher is chosen by the scheme of `model.uri` through `FETCHERS` (lazy "module:Class"
strings, as in watcher/plugins.py, so the S3 signer's optional dependency loads only when an
`s3://` URI is staged). See base.py for the interface and docs/weights.md for the whole.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from watcher.core.errors import PluginError

FETCHERS: dict[str, str] = {
    "oci": "watcher.fetchers.oci:OciFetcher",
    "http": "watcher.fetchers.http:HttpFetcher",
    "https": "watcher.fetchers.http:HttpFetcher",
    "s3": "watcher.fetchers.s3:S3Fetcher",
}


def scheme_of(uri: str) -> str:
    return urlsplit(uri).scheme.lower()


def fetcher_class(scheme: str) -> type[Any]:
    """The class registered for `scheme`; PluginError when unknown or its extra is missing."""
    if scheme not in FETCHERS:
        raise PluginError(f"no fetcher for {scheme}:// (known: {', '.join(sorted(FETCHERS))})")
    module_name, _, attr = FETCHERS[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"{scheme}:// weights need an optional dependency that is not "
                          f"installed ({exc.name}); install model-watcher[{scheme}]") from exc
    cls: type[Any] = getattr(module, attr)
    return cls
