"""The OpenAPI 3.1 document of the v1 API, built from the msgspec Structs the
endpoints decode and encode, so that it cannot drift from them.

Served at ``GET /v1/codeq/openapi.json``; CI runs schemathesis against a real
``codeq serve`` with it (tests/api/test_openapi.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import msgspec

from codeq import __version__, schemas
from codeq.api.common import send

PREFIX = "/v1/codeq"
REF = "#/components/schemas/{name}"
# Errors any call may answer, besides its own.
COMMON_ERRORS = {"400": "invalid input (the field is named)",
                 "401": "no token, or an invalid one (authentication on)",
                 "403": "a scope or command the token lacks",
                 "413": "body too large", "415": "body not JSON",
                 "429": "rate limited (Retry-After)", "503": "store unavailable (Retry-After)"}


@dataclass
class Op:
    method: str
    path: str
    summary: str
    scope: str | None
    body: type | None = None
    ok: dict[str, type | None] = field(default_factory=dict)  # status -> body type
    errors: tuple[str, ...] = ()  # more error statuses (404, 409)
    worker: bool = False  # takes X-Worker-Id (authentication off)
    query: tuple[tuple[str, dict[str, Any]], ...] = ()


S = schemas
OPS = [
    Op("post", "/tasks", "Create a task", "codeq:produce", S.CreateTask, {"202": S.Task}),
    Op("post", "/tasks/batch", "Create up to 100 tasks, each on its own",
       "codeq:produce", S.CreateBatch, {"200": S.CreateOutcomes}),
    Op("post", "/tasks/claim", "Claim a task (long poll up to waitSeconds)", "codeq:claim",
       S.ClaimRequest, {"200": S.Task, "204": None}, worker=True),
    Op("post", "/tasks/claim/batch", "Claim up to count tasks", "codeq:claim",
       S.ClaimBatchRequest, {"200": S.Tasks, "204": None}, worker=True),
    Op("post", "/tasks/batch/results", "Submit up to 100 results, each on its own",
       "codeq:result", S.ResultBatch, {"200": S.ResultOutcomes}, worker=True),
    Op("get", "/tasks/{id}", "Read a task", "codeq:produce", None, {"200": S.Task}, ("404",)),
    Op("post", "/tasks/{id}/heartbeat", "Extend the lease", "codeq:heartbeat",
       S.HeartbeatRequest, {"200": S.HeartbeatResponse}, ("404", "409"), worker=True),
    Op("post", "/tasks/{id}/abandon", "Give the task back at once", "codeq:abandon",
       S.LeaseBody, {"200": S.RequeueResponse}, ("404", "409"), worker=True),
    Op("post", "/tasks/{id}/nack", "Refuse the delivery: retry later, or dead-letter",
       "codeq:nack", S.NackRequest, {"200": S.RequeueResponse}, ("404", "409"), worker=True),
    Op("post", "/tasks/{id}/result", "Submit the terminal result", "codeq:result",
       S.ResultRequest, {"200": S.Result}, ("404", "409"), worker=True),
    Op("get", "/tasks/{id}/result", "Read a task's result, long-polled up to waitSeconds",
       "codeq:produce", None, {"200": S.TaskWithResult}, ("404",),
       query=(("waitSeconds", {"type": "number", "minimum": 0, "maximum": 60}),)),
    Op("post", "/workers/subscriptions", "Subscribe to availability webhooks",
       "codeq:subscribe", S.SubscribeRequest, {"200": S.Subscription}),
    Op("post", "/workers/subscriptions/{id}/heartbeat", "Renew a subscription",
       "codeq:subscribe", None, {"200": S.Subscription}, ("404",)),
    Op("delete", "/workers/subscriptions/{id}", "Unsubscribe", "codeq:subscribe", None,
       {"204": None}, ("404",)),
    Op("get", "/admin/queues", "Every queue of the tenant with its depths", "codeq:admin",
       None, {"200": S.Queues}),
    Op("get", "/admin/queues/{command}", "One queue's depths", "codeq:admin", None,
       {"200": S.QueueDetail}),
    Op("get", "/admin/queues/{command}/dlq", "Dead-lettered tasks, oldest first",
       "codeq:admin", None, {"200": S.DeadLetterPage},
       query=(("limit", {"type": "integer", "minimum": 1, "maximum": S.MAX_ADMIN_PAGE}),
              ("cursor", {"type": "string"}))),
    Op("get", "/admin/queues/{command}/inflight", "In-flight tasks, soonest lease expiry first",
       "codeq:admin", None, {"200": S.InFlightPage},
       query=(("limit", {"type": "integer", "minimum": 1, "maximum": S.MAX_ADMIN_PAGE}),
              ("cursor", {"type": "string"}))),
    Op("post", "/admin/queues/{command}/dlq/requeue", "Requeue dead-lettered tasks",
       "codeq:admin", S.Ids, {"200": S.Requeued}),
    Op("post", "/admin/queues/{command}/dlq/purge", "Remove dead-lettered tasks",
       "codeq:admin", S.Ids, {"200": S.Removed}),
    Op("get", "/admin/tasks/{id}", "Read a task with its result and DLQ entry",
       "codeq:admin", None, {"200": S.AdminTask}, ("404",)),
    Op("post", "/admin/tasks/cleanup", "Remove finished tasks past retention now",
       "codeq:admin", S.CleanupRequest, {"200": S.Removed}),
]


def _path_params(path: str) -> list[dict[str, Any]]:
    out = []
    if "{id}" in path:
        out.append({"name": "id", "in": "path", "required": True,
                    "schema": {"type": "string", "format": "uuid"}})
    if "{command}" in path:
        out.append({"name": "command", "in": "path", "required": True,
                    "schema": {"type": "string", "pattern": schemas.NAME_PATTERN}})
    return out


@cache
def document() -> bytes:
    types = {t for op in OPS for t in (op.body, *op.ok.values()) if t is not None}
    refs, components = msgspec.json.schema_components(
        sorted((*types, schemas.Error), key=lambda t: t.__name__), ref_template=REF)
    ref = {t: r for t, r in zip(sorted((*types, schemas.Error), key=lambda t: t.__name__),
                                refs, strict=True)}
    error = {"description": "", "content": {"application/json": {"schema": ref[schemas.Error]}}}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPS:
        params = _path_params(op.path)
        params += [{"name": n, "in": "query", "required": False, "schema": s}
                   for n, s in op.query]
        if op.worker:
            params.append({"name": "X-Worker-Id", "in": "header", "required": False,
                           "description": "the worker's name (authentication off)",
                           "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,256}$"}})
        responses: dict[str, Any] = {}
        for status, kind in op.ok.items():
            responses[status] = {"description": "done"} if kind is None else {
                "description": "done", "content": {"application/json": {"schema": ref[kind]}}}
        for status in (*op.errors, *COMMON_ERRORS):
            responses[status] = {**error, "description": COMMON_ERRORS.get(status, {
                "404": "unknown (or another tenant's)", "409": "wrong state"}.get(status, ""))}
        operation: dict[str, Any] = {
            "summary": op.summary, "operationId": _operation_id(op), "parameters": params,
            "responses": responses}
        if op.scope:
            operation["security"] = [{"bearer": [op.scope]}, {}]
        if op.body is not None:
            operation["requestBody"] = {"required": op.body not in _OPTIONAL_BODIES,
                                        "content": {"application/json": {
                                            "schema": ref[op.body]}}}
        paths.setdefault(PREFIX + op.path, {})[op.method] = operation
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "codeQ", "version": __version__,
                 "description": "Queueing and completion service: producers create tasks "
                                "under a command, workers claim them with a lease, heartbeat "
                                "and submit a result."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "a JWT or a static token (authentication on)"}}},
    }
    return msgspec.json.encode(doc)


# Bodies that may be left out entirely.
_OPTIONAL_BODIES = frozenset({schemas.HeartbeatRequest, schemas.LeaseBody, schemas.NackRequest,
                              schemas.Ids, schemas.CleanupRequest})


def _operation_id(op: Op) -> str:
    words = [w for w in op.path.replace("{", "").replace("}", "").split("/") if w]
    return op.method + "".join(w[:1].upper() + w[1:] for w in words)


class OpenApi:
    """GET /v1/codeq/openapi.json"""

    async def on_get(self, req: Any, resp: Any) -> None:
        send(resp, msgspec.Raw(document()))
