"""Operators' endpoints (scope codeq:admin): queue depths, the dead-letter queue,
in-flight tasks, one task with its result, cleanup."""

from __future__ import annotations

import re

import falcon

from codeq.api.common import Context, Resource, read_body, send, task_id
from codeq.engine.admin import QueueStats
from codeq.errors import BadRequest
from codeq.keys import NAME_PATTERN
from codeq.schemas import (
    MAX_ADMIN_PAGE as MAX_PAGE,
)
from codeq.schemas import (
    UUID_PATTERN,
    AdminTask,
    CleanupRequest,
    DeadLetter,
    Ids,
    Queue,
    QueueDetail,
)

_COMMAND = re.compile(NAME_PATTERN)
ADMIN = "codeq:admin"
DEFAULT_PAGE = 100


def _queue(s: QueueStats, detail: bool = False) -> Queue:
    age = None if s.oldest_ready_age is None else round(s.oldest_ready_age, 3)
    if detail:
        return QueueDetail(command=s.command, ready=s.ready, delayed=s.delayed,
                           inProgress=s.in_progress, dlq=s.dlq, oldestReadyAgeSeconds=age,
                           readyByPriority=s.ready_by_priority)
    return Queue(command=s.command, ready=s.ready, delayed=s.delayed, inProgress=s.in_progress,
                 dlq=s.dlq, oldestReadyAgeSeconds=age)


def command_param(raw: str) -> str:
    """Check a command named in a path or query; 400 unless it is a valid name."""
    if not _COMMAND.match(raw):
        raise BadRequest("command must be 1 to 128 of A-Z a-z 0-9 . _ : -", field="command")
    return raw


def cursor_param(raw: str | None) -> tuple[int, str] | None:
    """Read a page cursor (``cursor_text`` wrote it); 400 unless it is one."""
    if raw is None:
        return None
    score, _, task_id = raw.partition(":")
    if not re.fullmatch(r"[0-9]{1,15}", score) or not re.match(UUID_PATTERN, task_id):
        raise BadRequest("cursor must be a nextCursor this endpoint returned", field="cursor")
    return int(score), task_id


def cursor_text(after: tuple[int, str] | None) -> str | None:
    """The nextCursor of a page that ends at ``after`` (score, id); None: the last page."""
    return None if after is None else f"{after[0]}:{after[1]}"


def _limit(req: falcon.asgi.Request) -> int:
    raw = req.get_param("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest(f"limit must be 1 to {MAX_PAGE}", field="limit")
    return int(raw)


class Queues(Resource):
    """GET /v1/codeq/admin/queues"""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        stats = await self.ctx.engine.admin.queues(who.tenant)
        send(resp, {"queues": [_queue(s) for s in stats]})


class OneQueue(Resource):
    """GET /v1/codeq/admin/queues/{command}"""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     command: str) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        send(resp, _queue(await self.ctx.engine.admin.queue(who.tenant, command_param(command)),
                          detail=True))


class DeadLetters(Resource):
    """GET /v1/codeq/admin/queues/{command}/dlq?limit=&cursor="""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     command: str) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        page, after = await self.ctx.engine.admin.dlq(
            who.tenant, command_param(command), _limit(req),
            cursor_param(req.get_param("cursor")))
        tasks = [DeadLetter(**{f: getattr(d.task, f) for f in d.task.__struct_fields__},
                            deadLetteredAt=d.dead_lettered_at) for d in page]
        send(resp, {"tasks": tasks, "nextCursor": cursor_text(after)})


class InFlight(Resource):
    """GET /v1/codeq/admin/queues/{command}/inflight?limit=&cursor="""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     command: str) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        page, after = await self.ctx.engine.admin.inflight(
            who.tenant, command_param(command), _limit(req),
            cursor_param(req.get_param("cursor")))
        send(resp, {"tasks": page, "nextCursor": cursor_text(after)})


class OneTask(Resource):
    """GET /v1/codeq/admin/tasks/{id}"""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        task, result, dead = await self.ctx.engine.admin.task(who.tenant, task_id(id))
        send(resp, AdminTask(task=task, result=result, deadLetteredAt=dead))


class DlqAction(Resource):
    """POST /v1/codeq/admin/queues/{command}/dlq/requeue or /purge {ids?}:
    200 {requeued} or {removed}."""

    def __init__(self, ctx: Context, action: str, answer: str) -> None:
        super().__init__(ctx)
        self.action = action  # the engine's Admin method: requeue or purge
        self.answer = answer

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      command: str) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        body = await read_body(req, self.ctx, Ids, optional=True)
        act = getattr(self.ctx.engine.admin, self.action)
        count = await act(who.tenant, command_param(command), _lower(body.ids))
        send(resp, {self.answer: count})


class Cleanup(Resource):
    """POST /v1/codeq/admin/tasks/cleanup {limit?}"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        body = await read_body(req, self.ctx, CleanupRequest, optional=True)
        send(resp, {"removed": await self.ctx.engine.admin.cleanup(who.tenant, body.limit)})


def _lower(ids: list[str] | None) -> list[str] | None:
    return None if ids is None else [i.lower() for i in ids]

