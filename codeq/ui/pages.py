"""The dashboard's resources: page shells, HTML fragments, static files.

A page shell holds no data, so it needs no token: only the layout and the
fragment URLs its regions load from. Each fragment is authenticated like the
admin API (bearer token, scope codeq:admin, the admin rate limit; errors in
the API's JSON shape) and reads what the admin API reads, through the same
engine calls. Nothing here changes state: the pages' actions call the admin
API's own endpoints (static/dashboard.js).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

import falcon
import jinja2

from codeq.api.admin import ADMIN, command_param, cursor_param, cursor_text
from codeq.api.common import Context, task_id
from codeq.auth import Identity
from codeq.engine.admin import QueueStats
from codeq.errors import NotFound
from codeq.schemas import MAX_ADMIN_PAGE

UI = "/ui"
REFRESH_SECONDS = 3  # between two reads of a polled region
PAGE = 50  # rows of a DLQ or in-flight page
WINDOW = 300  # seconds the throughput charts cover
# The last seconds of the series may still be on their way from some process.
SETTLING = 2

# The pages load scripts and styles from here only; no inline script runs.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

# The overview's columns: the sort key (a QueueStats field), heading, numeric.
COLUMNS = (("command", "Command", False), ("ready", "Ready", True),
           ("delayed", "Delayed", True), ("in_progress", "In progress", True),
           ("dlq", "DLQ", True), ("oldest_ready_age", "Oldest ready", True))
SORTS = {key for key, _, _ in COLUMNS}


def seconds(value: float | None) -> str:
    """A duration for people: 0.4 s, 12 s, 3 min 4 s, 2 h 5 min, 3 d 4 h."""
    if value is None:
        return "\u2013"  # an en dash: none
    if value < 10:
        return f"{value:.1f} s"
    n = int(value)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60),
                                      ("min", 60, "s", 1)):
        if n >= size:
            rest = (n % size) // sub_size
            return f"{n // size} {unit}" + (f" {rest} {sub}" if rest else "")
    return f"{n} s"


def relative(when: datetime) -> str:
    """How far ``when`` is from now: "in 42 s" or "3 min ago"."""
    delta = when.timestamp() - time.time()
    return f"in {seconds(delta)}" if delta >= 0 else f"{seconds(-delta)} ago"


def clock(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty(text: Any) -> str:
    """JSON text (a str, or raw bytes) indented for reading; anything else as it is."""
    if not isinstance(text, str):
        text = bytes(text).decode()
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("codeq.ui"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(seconds=seconds, relative=relative, clock=clock, pretty=pretty,
                       query=lambda params: urlencode(
                           {k: v for k, v in params.items() if v is not None}))
    env.globals.update(ui=UI, refresh=REFRESH_SECONDS, bound=MAX_ADMIN_PAGE)
    return env


class Ui:
    """What the resources share: the API's context and the templates."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.env = _environment()
        self.auth = "on" if ctx.auth.enabled else "off"

    def render(self, resp: falcon.asgi.Response, template: str, **values: Any) -> None:
        resp.content_type = "text/html; charset=utf-8"
        resp.text = self.env.get_template(template).render(**values)
        resp.set_headers(HEADERS)
        resp.set_header("Cache-Control", "no-store")


class Shell:
    """GET /ui, /ui/queue?command=, /ui/task?id=: a page's layout, no data."""

    def __init__(self, ui: Ui, template: str, *params: str) -> None:
        self.ui = ui
        self.template = template
        self.params = params  # query parameters the page's fragments take

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        values = {p: req.get_param(p) or "" for p in self.params}
        self.ui.render(resp, self.template, auth=self.ui.auth, **values)


class Fragment:
    """A region of a page, rendered for a caller holding codeq:admin."""

    template = ""

    def __init__(self, ui: Ui) -> None:
        self.ui = ui
        self.engine = ui.ctx.engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who = await self.ui.ctx.caller(req, ADMIN, "admin")
        values = await self.read(req, who)
        self.ui.render(resp, self.template, tenant=who.tenant, **values)

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        raise NotImplementedError


class WhoAmI(Fragment):
    """Who is signed in; what the login form checks a token with."""

    template = "fragments/whoami.html"

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        return {"principal": who.principal, "auth": self.ui.auth}


class Overview(Fragment):
    """Every queue of the tenant with its depths, sorted by a column."""

    template = "fragments/overview.html"

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        sort = req.get_param("sort") or "command"
        sort = sort if sort in SORTS else "command"
        order = "desc" if req.get_param("order") == "desc" else "asc"
        stats = await self.engine.admin.queues(who.tenant)

        def key(s: QueueStats) -> Any:
            value = getattr(s, sort)
            return (-1 if value is None else value, s.command)

        stats.sort(key=key, reverse=order == "desc")
        totals = {k: sum(getattr(s, k) for s in stats)
                  for k in ("ready", "delayed", "in_progress", "dlq")}
        return {"stats": stats, "totals": totals, "sort": sort, "order": order,
                "columns": COLUMNS, "now": datetime.now(UTC)}


class Throughput(Fragment):
    """The tenant's tasks created, completed and failed per second, for the charts."""

    template = "fragments/throughput.html"

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        last = int(time.time()) - SETTLING
        series = await self.engine.admin.throughput(who.tenant, last - WINDOW + 1, last)
        recent = {name: sum(values[-10:]) / 10 for name, values in series.items()}
        return {"series": {"start": last - WINDOW + 1, **series}, "recent": recent,
                "window": WINDOW}


class Depths(Fragment):
    """One queue's depths and its ready tasks by priority."""

    template = "fragments/depths.html"

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        command = command_param(req.get_param("command") or "")
        return {"s": await self.engine.admin.queue(who.tenant, command)}


class InFlight(Fragment):
    """A page of a queue's in-flight tasks, soonest lease expiry first."""

    template = "fragments/inflight.html"

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        command = command_param(req.get_param("command") or "")
        cursor = req.get_param("cursor")
        page, after = await self.engine.admin.inflight(who.tenant, command, PAGE,
                                                       cursor_param(cursor))
        return {"command": command, "tasks": page, "cursor": cursor,
                "next": cursor_text(after)}


class DeadLetters(Fragment):
    """A page of a queue's DLQ, oldest first, with what the actions need."""

    template = "fragments/dlq.html"

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        command = command_param(req.get_param("command") or "")
        cursor = req.get_param("cursor")
        page, after = await self.engine.admin.dlq(who.tenant, command, PAGE,
                                                  cursor_param(cursor))
        stats = await self.engine.admin.queue(who.tenant, command)
        return {"command": command, "letters": page, "cursor": cursor,
                "next": cursor_text(after), "total": stats.dlq}


class Task(Fragment):
    """One task: every field, payload and result, callback, the actions it allows."""

    template = "fragments/task.html"

    async def read(self, req: falcon.asgi.Request, who: Identity) -> dict[str, Any]:
        found, result, dead = await self.engine.admin.task(who.tenant,
                                                           task_id(req.get_param("id") or ""))
        return {"task": found, "result": result, "dead": dead}


class Static:
    """GET /ui/static/{name}: the dashboard's scripts and styles, read once."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for item in (resources.files("codeq.ui") / "static").iterdir():
            kind = STATIC_TYPES.get("." + item.name.rpartition(".")[2])
            if kind is not None:
                data = item.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
                self.files[item.name] = (data, kind, etag)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     name: str) -> None:
        found = self.files.get(name)
        if found is None:
            raise NotFound(f"no such file: {name}")
        data, kind, etag = found
        resp.set_header("ETag", etag)
        # Checked on every use (a 304 when unchanged): an upgrade is seen at once.
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Content-Type-Options", "nosniff")
        if req.get_header("If-None-Match") == etag:
            resp.status = 304
            return
        resp.content_type = kind
        resp.data = data
