"""Workers' resources: claim tasks and act on the lease they hold."""

from __future__ import annotations

from datetime import UTC, datetime

import falcon

from codeq.api.common import Resource, lease_id, read_body, send, task_id
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
        who, worker = await self.ctx.worker(req, "codeq:claim", "claim")
        body = await read_body(req, self.ctx, ClaimRequest)
        who.allow(body.commands)
        tasks = await self.ctx.engine.claim(
            who.tenant, body.commands, worker, lease_seconds=body.leaseSeconds,
            wait_seconds=body.waitSeconds, gone=client_gone(req, body.waitSeconds > 0))
        if tasks:
            send(resp, tasks[0])
        else:
            resp.status = 204


class ClaimBatch(Resource):
    """POST /v1/codeq/tasks/claim/batch: 200 {tasks: [...]} (up to count), 204 when none came."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who, worker = await self.ctx.worker(req, "codeq:claim", "claim")
        body = await read_body(req, self.ctx, ClaimBatchRequest)
        who.allow(body.commands)
        tasks = await self.ctx.engine.claim(
            who.tenant, body.commands, worker, lease_seconds=body.leaseSeconds,
            wait_seconds=body.waitSeconds, count=body.count,
            gone=client_gone(req, body.waitSeconds > 0))
        if tasks:
            send(resp, Tasks(tasks=tasks))
        else:
            resp.status = 204


class Heartbeat(Resource):
    """POST /v1/codeq/tasks/{id}/heartbeat"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        who, worker = await self.ctx.worker(req, "codeq:heartbeat")
        tid = task_id(id)
        body = await read_body(req, self.ctx, HeartbeatRequest, optional=True)
        until = await self.ctx.engine.heartbeat(
            who.tenant, tid, worker, lease_id(req, body.leaseId), body.extendSeconds)
        send(resp, HeartbeatResponse(ok=True, leaseUntil=datetime.fromtimestamp(until, UTC)))


class Abandon(Resource):
    """POST /v1/codeq/tasks/{id}/abandon"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        who, worker = await self.ctx.worker(req, "codeq:abandon")
        tid = task_id(id)
        body = await read_body(req, self.ctx, LeaseBody, optional=True)
        await self.ctx.engine.abandon(who.tenant, tid, worker,
                                      lease_id(req, body.leaseId))
        send(resp, RequeueResponse(status="requeued"))


class Nack(Resource):
    """POST /v1/codeq/tasks/{id}/nack"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        who, worker = await self.ctx.worker(req, "codeq:nack")
        tid = task_id(id)
        body = await read_body(req, self.ctx, NackRequest, optional=True)
        outcome, delay = await self.ctx.engine.nack(
            who.tenant, tid, worker, lease_id(req, body.leaseId),
            body.delaySeconds, body.reason)
        send(resp, RequeueResponse(status=outcome, delaySeconds=delay))
