"""Workers' resources: claim tasks and act on the lease they hold."""

from __future__ import annotations

from datetime import UTC, datetime

import falcon

from codeq.api.common import Resource, lease_id, read_body, send, task_id, worker_id
from codeq.api.disconnect import client_gone
from codeq.schemas import (
    ClaimBatchRequest,
    ClaimRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    LeaseBody,
    NackRequest,
    RequeueResponse,
    Tasks,
)


class Claim(Resource):
    """POST /v1/codeq/tasks/claim: 200 with a task, 204 when none came."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        worker = worker_id(req)
        body = await read_body(req, self.ctx, ClaimRequest)
        tasks = await self.ctx.engine.claim(
            self.ctx.tenant(req), body.commands, worker, lease_seconds=body.leaseSeconds,
            wait_seconds=body.waitSeconds, gone=client_gone(req, body.waitSeconds > 0))
        if tasks:
            send(resp, tasks[0])
        else:
            resp.status = 204


class ClaimBatch(Resource):
    """POST /v1/codeq/tasks/claim/batch: 200 {tasks: [...]} (up to count), 204 when none came."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        worker = worker_id(req)
        body = await read_body(req, self.ctx, ClaimBatchRequest)
        tasks = await self.ctx.engine.claim(
            self.ctx.tenant(req), body.commands, worker, lease_seconds=body.leaseSeconds,
            wait_seconds=body.waitSeconds, count=body.count,
            gone=client_gone(req, body.waitSeconds > 0))
        if tasks:
            send(resp, Tasks(tasks=tasks))
        else:
            resp.status = 204


class Heartbeat(Resource):
    """POST /v1/codeq/tasks/{id}/heartbeat"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        tid, worker = task_id(id), worker_id(req)
        body = await read_body(req, self.ctx, HeartbeatRequest, optional=True)
        until = await self.ctx.engine.heartbeat(
            self.ctx.tenant(req), tid, worker, lease_id(req, body.leaseId), body.extendSeconds)
        send(resp, HeartbeatResponse(ok=True, leaseUntil=datetime.fromtimestamp(until, UTC)))


class Abandon(Resource):
    """POST /v1/codeq/tasks/{id}/abandon"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        tid, worker = task_id(id), worker_id(req)
        body = await read_body(req, self.ctx, LeaseBody, optional=True)
        await self.ctx.engine.abandon(self.ctx.tenant(req), tid, worker,
                                      lease_id(req, body.leaseId))
        send(resp, RequeueResponse(status="requeued"))


class Nack(Resource):
    """POST /v1/codeq/tasks/{id}/nack"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        tid, worker = task_id(id), worker_id(req)
        body = await read_body(req, self.ctx, NackRequest, optional=True)
        outcome, delay = await self.ctx.engine.nack(
            self.ctx.tenant(req), tid, worker, lease_id(req, body.leaseId),
            body.delaySeconds, body.reason)
        send(resp, RequeueResponse(status=outcome, delaySeconds=delay))
