"""model-watcher: keeps a running model server in line with its published configuration."""

import sys

# httpx imports its command-line client (click, and pygments/rich when present) from its
# package __init__ whenever click is installed, as it is beside uvicorn: ~3 MiB and tens of
# ms in every daemon and CLI run that never uses it (upstream: encode/httpx#3547). A None
# entry makes that optional import fail the way httpx already handles (httpx.main then only
# says the CLI is not installed).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

__version__ = "0.1.0"
