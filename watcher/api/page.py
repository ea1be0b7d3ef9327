"""The status page: read-only HTML rendered on the server from the state and the audit log.

    GET /                 every model: applied version and revision, the last outcome and its
                          reason, stable revision; the daemon and its source; the latest audit
    GET /models/{name}    one model's history: each revision's outcome, reason, plan, source,
                          times and metadata (the model version registry)
    GET /audit            the latest audit lines

No script, no build step, no asset: every value from the state (which holds what documents
said) is HTML-escaped, and the answer forbids scripts and framing (Content-Security-Policy).
It refreshes itself every few seconds. Served by the API's listener, so loopback by default.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

if TYPE_CHECKING:
    from starlette.requests import Request

    from watcher.features import FeatureContext

HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff"}
STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;
padding:.3em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}
.applied,.noop,.rolled_back,.restarted{color:#17692a}.rejected,.failed{color:#a4161a;font-weight:600}
.pending,.superseded,.deleted{color:#8a6100}code{font-size:12px}small{color:#666}"""
REFRESH_SECONDS = 5


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(ts: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(ts))) + "Z" if ts else ""


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _outcome(label: Any) -> str:
    return f'<span class="{_e(label)}">{_e(label)}</span>' if label else ""


def _page(title: str, body: str) -> Response:
    doc = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
           f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
           f"<title>{_e(title)} - model-watcher</title><style>{STYLE}</style></head><body>"
           f'<h1>{_e(title)}</h1><p><a href="/">models</a> · <a href="/audit">audit</a></p>'
           f"{body}</body></html>")
    return Response(doc.encode(), 200, media_type="text/html; charset=utf-8", headers=HEADERS)


class StatusPage:
    def __init__(self, ctx: FeatureContext) -> None:
        self.ctx = ctx

    async def index(self, request: Request) -> Response:
        status = self.ctx.state.status()
        d: Mapping[str, Any] = status["daemon"]
        source = ("up" if d.get("source_up") else "DOWN" if d.get("source_up") is False else "?")
        daemon = _table(["daemon", "ready", "source", "since", "detail"], [[
            f"pid {_e(d.get('pid'))}" if d.get("running") else "not running",
            "yes" if self.ctx.ready() else "no", _e(f"{d.get('source_kind') or ''} {source}"),
            _when(d.get("source_since")), _e(d.get("source_detail"))]])
        models = _table(
            ["model", "applied version", "applied revision", "last revision", "last outcome",
             "reason", "stable revision"],
            ([f'<a href="/models/{_e(name)}">{_e(name)}</a>', _e(m["applied_version"]),
              f"<code>{_e(m['applied_revision'])}</code>", f"<code>{_e(m['last_revision'])}</code>",
              _outcome(m["last_outcome"]), _e(m["last_reason"]),
              f"<code>{_e(m['stable_revision'])}</code>"]
             for name, m in sorted(status["models"].items())))
        busy = ", ".join(_e(m) for m in status.get("intents", [])) or "none"
        return _page("model-watcher", f"{daemon}<h2>Models</h2>{models}"
                     f"<p>Applies in progress: {busy}</p><h2>Latest audit</h2>"
                     f"{self._audit(20)}")

    async def model(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        rows = self.ctx.state.history(name, limit=200)
        if not rows:
            return _page(f"{name}: unknown model", "<p>No revision of this model was seen.</p>")
        table = _table(
            ["revision", "version", "outcome", "reason", "plan", "source", "seen", "finished",
             "stable", "metadata"],
            ([f"<code>{_e(r['revision'])}</code>", _e(r.get("version")), _outcome(r["outcome"]),
              _e(r.get("reason")), _e(r.get("plan")), _e(r.get("source")), _when(r.get("seen_at")),
              _when(r.get("finished_at")), "yes" if r.get("stable") else "",
              _metadata(r.get("metadata"))] for r in rows))
        return _page(f"{name}: history", table)

    async def audit(self, request: Request) -> Response:
        return _page("audit", self._audit(200))

    def _audit(self, n: int) -> str:
        lines = self.ctx.audit.tail(n)
        return _table(["time", "action", "model", "revision", "version", "by", "reason"],
                      ([_e(a.get("ts")), _outcome(a.get("action")), _e(a.get("model")),
                        f"<code>{_e(a.get('revision'))}</code>", _e(a.get("version")),
                        _e(a.get("by")), _e(a.get("reason"))] for a in reversed(lines)))


def _metadata(meta: Any) -> str:
    if not isinstance(meta, Mapping):
        return ""
    shown = {k: v for k, v in meta.items() if v not in (None, {}, [])}
    return "<br>".join(f"<small>{_e(k)}</small> {_e(v)}" for k, v in shown.items())
