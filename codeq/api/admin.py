"""Operators' endpoints (scope codeq:admin): queue depths, the dead-letter queue, cleanup."""

from __future__ import annotations

import re

import falcon

from codeq.api.common import Context, Resource, read_body, send
from codeq.engine.admin import QueueStats
from codeq.errors import BadRequest
from codeq.keys import NAME_PATTERN
from codeq.schemas import (
    MAX_ADMIN_PAGE as MAX_PAGE,
)
from codeq.schemas import (
    UUID_PATTERN,
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


def _command(raw: str) -> str:
    if not _COMMAND.match(raw):
        raise BadRequest("command must be 1 to 128 of A-Z a-z 0-9 . _ : -", field="command")
    return raw


def _cursor(raw: str | None) -> tuple[int, str] | None:
    if raw is None:
        return None
    score, _, task_id = raw.partition(":")
    if not score.isdigit() or not re.match(UUID_PATTERN, task_id):
        raise BadRequest("cursor must be a nextCursor this endpoint returned", field="cursor")
    return int(score), task_id


def _limit(req: falcon.asgi.Request) -> int:
    raw = req.get_param("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
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
        send(resp, _queue(await self.ctx.engine.admin.queue(who.tenant, _command(command)),
                          detail=True))


class DeadLetters(Resource):
    """GET /v1/codeq/admin/queues/{command}/dlq?limit=&cursor="""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     command: str) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        page, after = await self.ctx.engine.admin.dlq(
            who.tenant, _command(command), _limit(req), _cursor(req.get_param("cursor")))
        tasks = [DeadLetter(**{f: getattr(d.task, f) for f in d.task.__struct_fields__},
                            deadLetteredAt=d.dead_lettered_at) for d in page]
        send(resp, {"tasks": tasks,
                    "nextCursor": None if after is None else f"{after[0]}:{after[1]}"})


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
        count = await act(who.tenant, _command(command), _lower(body.ids))
        send(resp, {self.answer: count})


class Cleanup(Resource):
    """POST /v1/codeq/admin/tasks/cleanup {limit?}"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who = await self.ctx.caller(req, ADMIN, "admin")
        body = await read_body(req, self.ctx, CleanupRequest, optional=True)
        send(resp, {"removed": await self.ctx.engine.admin.cleanup(who.tenant, body.limit)})


def _lower(ids: list[str] | None) -> list[str] | None:
    return None if ids is None else [i.lower() for i in ids]

