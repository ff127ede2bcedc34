"""Producers' resources: create a task, read a task."""

from __future__ import annotations

import falcon

from codeq.api.common import Resource, read_body, send, task_id
from codeq.schemas import CreateTask


class Tasks(Resource):
    """POST /v1/codeq/tasks"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_body(req, self.ctx, CreateTask)
        task, _ = await self.ctx.engine.create(
            self.ctx.tenant(req),
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


class Task(Resource):
    """GET /v1/codeq/tasks/{id}"""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        send(resp, await self.ctx.engine.get(self.ctx.tenant(req), task_id(id)))
