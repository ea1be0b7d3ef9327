#!/usr/bin/env bash
# `make demo`: set up, start the example model server, run the daemon on config/ in the
# foreground. Edit config/models/example.yaml in another terminal and watch it apply.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps/00-python.sh
export PATH="$HOME/.local/bin:$PATH"
uv sync --frozen --all-extras --quiet
mkdir -p .demo
py=.venv/bin/python
# Start (or replace) the example model server on 127.0.0.1:8765, as the command runtime would.
"$py" examples/model_server.py restart --port 8765 --pidfile .demo/model_server.pid --log .demo/model_server.log
stop_server() { kill "$(cat .demo/model_server.pid 2>/dev/null)" 2>/dev/null || true; }
trap stop_server EXIT
cat <<'MSG'

  model-watcher demo: the example model server listens on http://127.0.0.1:8765
  In another terminal:
    curl -s 127.0.0.1:8765/config | python3 -m json.tool     # what the server serves
    $EDITOR config/models/example.yaml                         # temperature -> hot swap,
                                                               # SERVER_FLAVOR -> restart,
                                                               # version: "1.2" -> rejected
    .venv/bin/model-watcher status ; .venv/bin/model-watcher history example
  Ctrl-C stops the daemon and the example server.

MSG
"$py" -m watcher --config config/watcher.toml --log-format text run
