"""Liveness and readiness probes."""

from __future__ import annotations

import falcon

from codeq.api.common import Resource, send


class Health:
    """GET /healthz: the process is up."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        send(resp, {"status": "ok"})


class Ready(Resource):
    """GET /readyz: the store answers, so requests can be served."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if await self.ctx.engine.ping():
            send(resp, {"status": "ready"})
        else:
            send(resp, {"status": "unavailable", "error": "store unavailable"}, 503)
