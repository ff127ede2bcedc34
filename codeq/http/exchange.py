"""One request and its response: the ASGI ``receive`` and ``send`` of one request."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from codeq.errors import CodeqError
from codeq.schemas import json_encoder

if TYPE_CHECKING:
    from codeq.http.connection import Connection

log = logging.getLogger("codeq.http")

STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}
# Statuses whose responses never carry a body (RFC 9110, 6.4.1).
BODILESS = frozenset({204, 304, *range(100, 200)})
DISCONNECT = {"type": "http.disconnect"}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CLOSE = b"connection: close\r\n"
GONE = "codeq.gone"  # scope key of Exchange.gone
REQUEST_ID_KEY = "codeq.request_id"  # scope key of the request's id
# The id of the request being handled, for log lines (see RequestIdFilter).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    """Put the current request's id on every log record (``%(request_id)s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def error_response(error: CodeqError, date: bytes) -> bytes:
    """Return a whole response that answers ``error`` in the JSON error shape and closes."""
    body = json_encoder.encode(error.to_dict())
    return (STATUS_LINES[error.status] + date
            + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            + CLOSE + b"\r\n" + body)


class Exchange:
    """A request read (or being read) off a connection and the response the app gives it.

    ``receive`` hands the body over as it arrives and, once it has all been
    taken, waits until the client disconnects or the response is complete
    (so a long poll can watch for the client leaving). ``send`` writes the
    response head and its body in one ``transport.write``.
    """

    __slots__ = ("chunked", "chunks", "conn", "continue_expected", "delivered", "disconnected",
                 "finished", "gone_future", "head_only", "head_sent", "headers", "keep_alive",
                 "more_body", "received", "request_id", "scope", "started", "status", "task",
                 "waiter")

    def __init__(self, conn: Connection, scope: dict[str, Any], keep_alive: bool,
                 continue_expected: bool, request_id: bytes) -> None:
        self.conn = conn
        self.request_id = request_id
        self.received = time.perf_counter()
        scope[REQUEST_ID_KEY] = request_id
        self.scope = scope
        self.keep_alive = keep_alive
        self.continue_expected = continue_expected
        self.head_only = scope["method"] == "HEAD"
        self.chunks: list[bytes] = []  # body bytes read and not yet received by the app
        self.more_body = True  # until the parser has seen the end of the body
        self.delivered = False  # the app has received the end of the body
        self.disconnected = False
        self.started = False  # http.response.start was sent
        self.head_sent = False
        self.finished = False  # the whole response was sent (or dropped: client gone)
        self.chunked = False
        self.status = 0
        self.headers: Any = ()
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.gone_future: asyncio.Future[None] | None = None
        scope[GONE] = self.gone

    # -- fed by the connection ------------------------------------------------

    def body_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.continue_expected = False  # it sends without waiting for our word
        self._wake()

    def message_complete(self) -> None:
        self.more_body = False
        self._wake()

    def disconnect(self) -> None:
        """The client is gone (or will get no answer from the app): end any wait."""
        self.disconnected = True
        self._wake()
        if self.gone_future is not None and not self.gone_future.done():
            self.gone_future.set_result(None)

    def gone(self) -> asyncio.Future[None]:
        """Return a future done once the client is gone (the ``codeq.gone`` scope
        extension: a long poll watches it instead of a task reading ``receive``)."""
        if self.gone_future is None:
            self.gone_future = self.conn.loop.create_future()
            if self.disconnected:
                self.gone_future.set_result(None)
        return self.gone_future

    def buffered(self) -> int:
        return sum(map(len, self.chunks))

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the ASGI side --------------------------------------------------------

    def app_done(self, task: asyncio.Task[None]) -> None:
        """Answer 500 if the app failed (or returned) before completing its response.

        PERF: a done callback rather than a wrapping coroutine, which would
        add a frame to every resumption of the request's task.
        """
        if task.cancelled():
            self.conn.abort()  # cut short at the end of a shutdown: no answer will come
            return
        error = task.exception()
        if error is not None:
            log.error("unhandled error in the ASGI app on %s %s", self.scope["method"],
                      self.scope["path"], exc_info=error)
        elif not self.finished:
            log.error("the ASGI app returned without completing its response on %s %s",
                      self.scope["method"], self.scope["path"])
        self._unfinished()

    def _unfinished(self) -> None:
        if self.finished or self.disconnected:
            return
        if self.head_sent:
            self.conn.close()  # a response cut short: the close tells the client so
            return
        # Nothing of the response went out: answer 500 in the JSON error shape.
        self.head_sent = self.finished = True
        self.keep_alive = False
        self.conn.write(error_response(CodeqError(), self.conn.server.date_header))
        self.conn.response_complete(self)

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.disconnected or self.finished:
                return DISCONNECT
            if self.chunks or not (self.more_body or self.delivered):
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.chunks = []
                self.delivered = not self.more_body
                self.conn.body_taken()
                return {"type": "http.request", "body": body, "more_body": self.more_body}
            if self.continue_expected and not self.head_sent:
                # The client waits for our word before it sends the body.
                self.continue_expected = False
                self.conn.write(CONTINUE)
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = message["status"]
            self.headers = message.get("headers", ())
        elif kind == "http.response.body":
            if not self.started or self.finished:
                raise RuntimeError("http.response.body outside a response")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not self.disconnected:
                self._write(body, more)
            if not more:
                self.finished = True
                self._wake()  # a receive() watching for a disconnect: the exchange is over
                self.conn.response_complete(self)
                hook = self.conn.server.on_response
                if hook is not None:
                    hook(self.scope, self.status, time.perf_counter() - self.received)
            elif self.conn.write_paused:
                await self.conn.drain()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _write(self, body: bytes, more: bool) -> None:
        if self.head_only or self.status in BODILESS:
            body = b""
        head = b""
        if not self.head_sent:
            head = self._head(body, more)  # decides the framing
            self.head_sent = True
        if self.chunked:
            body = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more:
                body += b"0\r\n\r\n"
        # PERF: head and body in one write, one send(2) (uvicorn makes two).
        if head or body:
            self.conn.write(head + body)

    def _head(self, body: bytes, more: bool) -> bytes:
        """Render the status line and headers, adding framing, date and close as needed."""
        headers = self.headers
        block = b"".join([b"%s: %s\r\n" % pair for pair in headers])
        # Each header line holds exactly one CR and one LF: any other is an
        # attempt to split the response (two C scans, no per-header check).
        if block.count(b"\n") != len(headers) or block.count(b"\r") != len(headers):
            raise RuntimeError("invalid character in a response header")
        framed = close = False
        for name, value in headers:
            name = name.lower()
            if name == b"content-length" or name == b"transfer-encoding":
                framed = True
            elif name == b"connection" and value.lower() == b"close":
                close = True
        extra = self.conn.server.date_header + b"x-request-id: %s\r\n" % self.request_id
        if not (framed or self.head_only or self.status in BODILESS):
            if more:
                self.chunked = True
                extra += b"transfer-encoding: chunked\r\n"
            else:
                extra += b"content-length: %d\r\n" % len(body)
        # A body still arriving leaves the connection mid-request: it cannot
        # carry another one (the 413 of a declared oversize closes so).
        if not self.keep_alive or self.more_body or self.conn.stopping:
            self.keep_alive = False
            if not close:
                extra += CLOSE
        elif close:
            self.keep_alive = False
        line = STATUS_LINES.get(self.status) or b"HTTP/1.1 %d \r\n" % self.status
        return line + block + extra + b"\r\n"
