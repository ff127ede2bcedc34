"""Request ids: taken from X-Request-Id (or made), returned, and in every log
line written while the request is handled; at debug level, one access line
per request."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

import falcon

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_VALID = re.compile(r"^[\x21-\x7e]{1,128}$")
access = logging.getLogger("codeq.access")


class RequestIdFilter(logging.Filter):
    """Put the current request's id on every log record (``%(request_id)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class RequestIds:
    """Falcon middleware: name each request, echo the name, log it."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        given = req.get_header("X-Request-Id")
        rid = given if given and _VALID.match(given) else uuid.uuid4().hex
        # Each request runs in a task of its own: the value stays with it.
        REQUEST_ID.set(rid)
        req.context.request_id = rid
        req.context.received = time.perf_counter()
        resp.set_header("X-Request-Id", rid)

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: object, req_succeeded: bool) -> None:
        if access.isEnabledFor(logging.DEBUG):
            received = getattr(req.context, "received", time.perf_counter())
            access.debug("%s %s %s %.1f ms %s", req.method, req.path, str(resp.status)[:3],
                         (time.perf_counter() - received) * 1000,
                         getattr(req.context, "principal", "-"))
