"""Producers' resources: create a task (or a batch of them), read a task."""

from __future__ import annotations

import falcon

from codeq.api.common import Resource, check_url, decode_items, read_body, send, task_id
from codeq.errors import BadRequest
from codeq.schemas import CreateBatch, CreateTask


class Tasks(Resource):
    """POST /v1/codeq/tasks"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who = await self.ctx.caller(req, "codeq:produce", "create")
        body = await read_body(req, self.ctx, CreateTask)
        check_url(self.ctx, body.webhook, "webhook")
        task, _ = await self.ctx.engine.create(
            who.tenant,
            body.command,
            bytes(body.payload),
            priority=body.priority,
            max_attempts=body.maxAttempts,
            webhook=body.webhook,
            idempotency_key=body.idempotencyKey,
            run_at=body.runAt,
            delay_seconds=body.delaySeconds,
        )
        send(resp, task, 202)


class TaskBatch(Resource):
    """POST /v1/codeq/tasks/batch: 200 {results: [{task} | {error, code, field?}]} in order."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who = await self.ctx.caller(req, "codeq:produce", "create")
        body = await read_body(req, self.ctx, CreateBatch)
        items = [self._checked(item) for item in decode_items(body.tasks, CreateTask)]
        good = [item for item in items if not isinstance(item, BadRequest)]
        created = iter(await self.ctx.engine.create_many(who.tenant, good))
        send(resp, {"results": [item.to_dict() if isinstance(item, BadRequest)
                                else {"task": next(created)[0]} for item in items]})


    def _checked(self, item: CreateTask | BadRequest) -> CreateTask | BadRequest:
        if isinstance(item, CreateTask):
            try:
                check_url(self.ctx, item.webhook, "webhook")
            except BadRequest as exc:
                return exc
        return item


class Task(Resource):
    """GET /v1/codeq/tasks/{id}"""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        who = await self.ctx.caller(req, "codeq:produce")
        send(resp, await self.ctx.engine.get(who.tenant, task_id(id)))
