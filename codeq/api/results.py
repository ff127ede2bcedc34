"""Results: a worker submits one, a producer reads (or long-polls) it."""

from __future__ import annotations

import falcon

from codeq.api.common import Resource, lease_id, query_seconds, read_body, send, task_id, worker_id
from codeq.api.disconnect import watch_disconnect
from codeq.schemas import MAX_RESULT_WAIT_SECONDS, Result, ResultRequest, TaskWithResult


class TaskResult(Resource):
    """POST (submit) and GET (read, long-poll) /v1/codeq/tasks/{id}/result"""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        tid, worker = task_id(id), worker_id(req)
        body = await read_body(req, self.ctx, ResultRequest)
        record = await self.ctx.engine.submit_result(
            self.ctx.tenant(req), tid, worker, lease_id(req, body.leaseId), body.status,
            bytes(body.result), body.error, bytes(body.artifacts))
        send(resp, Result.from_record(record))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, id: str) -> None:
        tid = task_id(id)
        wait = query_seconds(req, "waitSeconds", MAX_RESULT_WAIT_SECONDS)
        with watch_disconnect(req, active=wait > 0) as gone:
            task, record = await self.ctx.engine.get_result(self.ctx.tenant(req), tid, wait,
                                                            gone=gone)
        send(resp, TaskWithResult(task=task, result=Result.from_record(record)))
