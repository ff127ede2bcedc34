"""Results: a worker submits one (or a batch), a producer reads (or long-polls) one."""

from __future__ import annotations

from typing import Any

import falcon

from codeq.api.common import (
    Resource,
    decode_items,
    lease_id,
    query_seconds,
    read_body,
    send,
    task_id,
)
from codeq.api.disconnect import client_gone
from codeq.errors import BadRequest, CodeqError
from codeq.schemas import (
    MAX_RESULT_WAIT_SECONDS,
    BatchResultItem,
    ResultBatch,
    ResultRequest,
    TaskWithResult,
)


class TaskResult(Resource):
    """POST (submit) and GET (read, long-poll) /v1/codeq/tasks/{id}/result"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        who, worker = await self.ctx.worker(req, "codeq:result", "result")
        tid = task_id(id)
        body = await read_body(req, self.ctx, ResultRequest)
        send(resp, await self.ctx.engine.submit_result(
            who.tenant, tid, worker, lease_id(req, body.leaseId), body.status,
            bytes(body.result), body.error, bytes(body.artifacts)))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        who = await self.ctx.caller(req, "codeq:produce")
        tid = task_id(id)
        wait = query_seconds(req, "waitSeconds", MAX_RESULT_WAIT_SECONDS)
        task, result = await self.ctx.engine.get_result(who.tenant, tid, wait,
                                                        gone=client_gone(req, wait > 0))
        send(resp, TaskWithResult(task=task, result=result))


class BatchResults(Resource):
    """POST /v1/codeq/tasks/batch/results: 200 {results: [{taskId, result} |
    {taskId, error, code, field?}]} in order; each item with its own leaseId."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        who, worker = await self.ctx.worker(req, "codeq:result", "result")
        body = await read_body(req, self.ctx, ResultBatch)
        items = decode_items(body.results, BatchResultItem)
        good = [i for i in items if not isinstance(i, BadRequest)]
        outcomes = iter(await self.ctx.engine.submit_results(
            who.tenant, worker,
            [(i.taskId.lower(), i.leaseId, i.status, bytes(i.result), i.error,
              bytes(i.artifacts)) for i in good]))
        out: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, CodeqError):
                out.append(item.to_dict())
                continue
            outcome = next(outcomes)
            if isinstance(outcome, CodeqError):
                out.append({"taskId": item.taskId.lower(), **outcome.to_dict()})
            else:
                out.append({"taskId": item.taskId.lower(), "result": outcome})
        send(resp, {"results": out})
