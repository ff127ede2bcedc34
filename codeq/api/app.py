"""Build the Falcon ASGI application: routes, error handlers, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.asgi

from codeq import ui
from codeq.api import admin, claims, health, openapi, results, subscriptions, tasks
from codeq.api.common import Context, send
from codeq.api.requests import response_hook
from codeq.auth import Authenticator
from codeq.config import Settings
from codeq.engine import Engine
from codeq.errors import (
    CodeqError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
)
from codeq.metrics.prom import Counting, MetricsResource
from codeq.push import Push
from codeq.schemas import json_encoder

log = logging.getLogger("codeq.api")
PREFIX = "/v1/codeq"


class Lifecycle:
    """Open the engine, start push and auth on ASGI startup; the reverse on shutdown."""

    def __init__(self, engine: Engine, push: Push, auth: Authenticator,
                 counting: Counting) -> None:
        self.engine = engine
        self.push = push
        self.auth = auth
        self.counting = counting

    async def process_startup(self, scope: dict, event: dict) -> None:
        await self.engine.open()
        self.counting.start()
        self.push.start()
        await self.auth.start()
        if self.auth.tokens is not None:
            # The tokens file is reread on SIGHUP (sent to every server process).
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.auth.reload)

    async def process_shutdown(self, scope: dict, event: dict) -> None:
        await self.auth.close()
        await self.push.stop()
        await self.engine.close()
        await self.counting.stop()


async def _codeq_error(req: Any, resp: falcon.asgi.Response, exc: CodeqError, params: Any) -> None:
    send(resp, exc.to_dict(), exc.status)
    if isinstance(exc, Unauthorized):
        resp.set_header("WWW-Authenticate", exc.challenge)
    elif isinstance(exc, RateLimited):
        resp.set_header("Retry-After", str(max(1, math.ceil(exc.retry_after))))
    elif isinstance(exc, StoreUnavailable):
        resp.set_header("Retry-After", "1")
    elif isinstance(exc, PayloadTooLarge):
        # The body was left unread: close rather than read it to find the next request.
        resp.set_header("Connection", "close")


async def _unexpected(req: Any, resp: falcon.asgi.Response, exc: Exception, params: Any) -> None:
    log.exception("unhandled error on %s %s", req.method, req.path)
    send(resp, CodeqError().to_dict(), 500)


def _http_error(req: Any, resp: falcon.asgi.Response, exc: falcon.HTTPError) -> None:
    """Serialize falcon's own errors (unknown route, bad method) in our shape."""
    status = exc.status_code
    if status == 404:
        body = NotFound(f"no such endpoint: {req.method} {req.path}").to_dict()
    elif status == 405:
        body = MethodNotAllowed(f"method {req.method} not allowed on {req.path}").to_dict()
    else:
        message = exc.title if not exc.description else f"{exc.title}: {exc.description}"
        body = {"error": message, "code": "HTTP_ERROR"}
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json_encoder.encode(body)


@dataclass
class Service:
    """The ASGI app, and what its HTTP server calls after each response."""

    app: falcon.asgi.App
    on_response: Callable[[dict[str, Any], int, float], None]


def create_app(engine: Engine, settings: Settings) -> Service:
    """Wire the v1 routes to ``engine``; the store comes with the engine."""
    counting = Counting(engine.store)
    engine.observer = counting
    push = Push(engine, settings)
    auth = Authenticator(settings)
    ctx = Context(engine, settings, push, auth)
    lifecycle: Any = Lifecycle(engine, push, auth, counting)
    app = falcon.asgi.App(middleware=[lifecycle])
    app.req_options.strip_url_path_trailing_slash = True
    templates: list[str] = []

    def route(template: str, resource: object) -> None:
        templates.append(template)
        app.add_route(template, resource)


    route("/healthz", health.Health())
    route("/readyz", health.Ready(ctx))
    route("/metrics", MetricsResource(engine, counting))
    route(f"{PREFIX}/openapi.json", openapi.OpenApi())
    route(f"{PREFIX}/tasks", tasks.Tasks(ctx))
    route(f"{PREFIX}/tasks/batch", tasks.TaskBatch(ctx))
    route(f"{PREFIX}/tasks/claim", claims.Claim(ctx))
    route(f"{PREFIX}/tasks/claim/batch", claims.ClaimBatch(ctx))
    route(f"{PREFIX}/tasks/batch/results", results.BatchResults(ctx))
    route(f"{PREFIX}/tasks/{{id}}", tasks.Task(ctx))
    route(f"{PREFIX}/tasks/{{id}}/heartbeat", claims.Heartbeat(ctx))
    route(f"{PREFIX}/tasks/{{id}}/abandon", claims.Abandon(ctx))
    route(f"{PREFIX}/tasks/{{id}}/nack", claims.Nack(ctx))
    route(f"{PREFIX}/tasks/{{id}}/result", results.TaskResult(ctx))
    route(f"{PREFIX}/admin/queues", admin.Queues(ctx))
    route(f"{PREFIX}/admin/queues/{{command}}", admin.OneQueue(ctx))
    route(f"{PREFIX}/admin/queues/{{command}}/dlq", admin.DeadLetters(ctx))
    route(f"{PREFIX}/admin/queues/{{command}}/inflight", admin.InFlight(ctx))
    route(f"{PREFIX}/admin/queues/{{command}}/dlq/requeue",
          admin.DlqAction(ctx, "requeue", "requeued"))
    route(f"{PREFIX}/admin/queues/{{command}}/dlq/purge",
          admin.DlqAction(ctx, "purge", "removed"))
    route(f"{PREFIX}/admin/tasks/cleanup", admin.Cleanup(ctx))
    route(f"{PREFIX}/admin/tasks/{{id}}", admin.OneTask(ctx))
    route(f"{PREFIX}/workers/subscriptions", subscriptions.Subscribe(ctx))
    route(f"{PREFIX}/workers/subscriptions/{{id}}", subscriptions.OneSubscription(ctx))
    route(f"{PREFIX}/workers/subscriptions/{{id}}/heartbeat",
                  subscriptions.SubscriptionHeartbeat(ctx))
    if settings.ui == "on":
        ui.mount(app, route, ctx, counting)

    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(CodeqError, _codeq_error)
    app.set_error_serializer(_http_error)
    return Service(app, response_hook(counting, templates))
