"""One HTTP/1.1 connection: httptools parsing, bounds on how clients send, pipelining.

Bounds (each answered in the JSON error shape, then the connection closes):

- a request's line and headers are counted before the parser sees them, so
  at most ``max_header_bytes`` plus one read is ever buffered (431 beyond);
- they must arrive within ``header_timeout`` of their first byte, the body
  within ``body_timeout`` of the headers (408);
- a connection idle before its first request or between requests is closed
  after ``keepalive_timeout``.

No timer runs while a request is handled: a long poll has read its whole body
before it waits, so it is bounded by its own ``waitSeconds`` only.

Requests pipelined behind one being answered are parsed and queued, and
reading stops until the queue is empty again; they are answered in order.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools

from codeq.errors import BadRequest, CodeqError, HeadersTooLarge, RequestTimeout
from codeq.http.exchange import REQUEST_ID, Exchange, error_response

if TYPE_CHECKING:
    from codeq.http.server import HttpServer

END_OF_HEAD = b"\r\n\r\n"
# Body bytes held for an app that has not taken them yet, before we stop reading.
HIGH_WATER = 64 * 1024
ASGI = {"version": "3.0", "spec_version": "2.3"}
METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")}
_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,128}$")
# PERF: a made request id is this process' random prefix and a serial
# (uuid4 per request was 5 % of a server's CPU: getrandom and a UUID object).
_PREFIX = uuid.uuid4().hex[:16].encode()
_serial = itertools.count()


class Connection(asyncio.Protocol):
    """The protocol of one client connection (see the module docstring)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.settings = server.settings
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set on connect
        self.addresses: tuple[Any, Any] = (None, None)  # (server, client), as ASGI wants them
        # The request being parsed: its URL and headers so far, then its exchange.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.request_id: bytes | None = None  # the client's X-Request-Id, when valid
        self.expect_continue = False
        self.in_head = False  # between the first byte of a request and the end of its head
        self.reading: Exchange | None = None  # head complete, body still arriving
        self.active: Exchange | None = None  # the request being answered
        self.pipeline: deque[Exchange] = deque()  # read while another one is answered
        # Bytes of the current request's line and headers so far; None while
        # its body is read (body bytes never count).
        self.head_bytes: int | None = 0
        self.tail = b""  # the last 3 bytes read: an end of head may span two reads
        self.read_timer: asyncio.TimerHandle | None = None  # header timer, then body timer
        self.idle_since: float | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.read_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.stopping = False
        self.lost = False
        self.last_request_read = False  # one that closes the connection after its answer

    # -- transport events -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = transport.get_extra_info("sockname")
        client = transport.get_extra_info("peername")
        self.addresses = (tuple(server[:2]) if server else None,
                          tuple(client[:2]) if client else None)
        self.server.connections.add(self)
        self.idle_since = self.loop.time()
        self.idle_timer = self.loop.call_later(self.settings.keepalive_timeout, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.forget(self)
        self._cancel_read_timer()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        for exchange in (self.active, self.reading):
            if exchange is not None:
                exchange.disconnect()
        self.pipeline.clear()
        self._wake_drain()

    def data_received(self, data: bytes) -> None:
        if self.last_request_read:
            return  # nothing after it is answered: the connection closes then
        if self.head_bytes is not None:
            self.head_bytes += self._head_part(data)
            # Checked before the parser sees the bytes: it never holds more
            # than the limit plus this one read.
            if self.head_bytes > self.settings.max_header_bytes:
                self.fail(HeadersTooLarge(
                    f"request line and headers exceed {self.settings.max_header_bytes} bytes"))
                return
        self.tail = (self.tail + data[-3:])[-3:]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol switch here (h2c, websocket): the request is
            # answered as plain HTTP, and what follows it cannot be parsed.
            self._close_after_answer()
        except httptools.HttpParserError as exc:
            if not self.last_request_read:  # else bytes after it in the same read
                self.fail(BadRequest(f"malformed HTTP request: {exc}"))
            return
        if self.read_timer is None and (self.in_head or self.reading is not None):
            self._time_the_rest()

    def eof_received(self) -> bool | None:
        return None  # a half-closed client is a gone client: close (a long poll notices)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain()
        self._flow()

    # -- httptools callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.idle_since = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        elif name == b"x-request-id" and _REQUEST_ID.match(value):
            self.request_id = value
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._cancel_read_timer()  # the body's timer starts now, if a body is still to come
        self.in_head = False
        self.head_bytes = None
        parser = self.parser
        url, self.url = self.url, b""
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        else:  # absolute form (sent to proxies), or an asterisk
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        scope = {
            "type": "http", "asgi": ASGI, "http_version": parser.get_http_version(),
            "server": self.addresses[0], "client": self.addresses[1], "scheme": "http",
            "method": METHODS.get(method) or method.decode("latin-1"), "root_path": "",
            "path": path, "raw_path": raw_path, "query_string": query, "headers": self.headers,
        }
        self.headers = []
        rid = self.request_id or b"%s%08x" % (_PREFIX, next(_serial))
        self.request_id = None
        exchange = Exchange(self, scope, parser.should_keep_alive(), self.expect_continue, rid)
        self.expect_continue = False
        self.reading = exchange
        if self.active is None:
            self._start(exchange)
        else:
            self.pipeline.append(exchange)
            self._flow()

    def on_body(self, body: bytes) -> None:
        exchange = self.reading
        assert exchange is not None
        exchange.body_received(body)
        if len(exchange.chunks) > 1 and not self.read_paused:
            self._flow()

    def on_message_complete(self) -> None:
        # The request is in; the next byte starts the next one.
        self._cancel_read_timer()
        if self.reading is not None:
            self.reading.message_complete()
            self.last_request_read = not self.reading.keep_alive
        self.reading = None
        self.head_bytes = 0

    # -- used by the exchanges ------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the client has taken enough of what we wrote (or is gone)."""
        if self.write_paused and not self.lost:
            self.drain_waiter = self.loop.create_future()
            await self.drain_waiter

    def body_taken(self) -> None:
        if self.read_paused:
            self._flow()

    def response_complete(self, exchange: Exchange) -> None:
        """Go on to the next request, or close when this response said so."""
        self.active = None
        if self.transport.is_closing():
            return
        if not exchange.keep_alive or self.stopping:
            self.transport.close()
        elif self.pipeline:
            self._start(self.pipeline.popleft())
            self._flow()
        elif not self.in_head and self.reading is None:
            self.idle_since = self.loop.time()

    def fail(self, error: CodeqError) -> None:
        """Answer ``error`` unless another response is owed first; close."""
        if self.transport.is_closing():
            return
        active = self.active
        if active is not None:
            if active.head_sent or active is not self.reading:
                # Mid-response, or the request in flight is an earlier one:
                # an answer now would be taken for its answer.
                self.transport.close()
                return
            # The handler of the stalled request waits for its body: end the
            # wait as a disconnect, so whatever it answers later is dropped.
            active.disconnect()
        self.transport.write(error_response(error, self.server.date_header))
        self.transport.close()

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    # -- shutdown -------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop taking requests: close now if none is in flight, else after its answer."""
        self.stopping = True
        if self.active is None:
            self.transport.close()

    def force_close(self, limit: float) -> None:
        """The drain is over: tell a client still sending its body why, close the rest."""
        active = self.active
        if active is not None and active is self.reading and not active.head_sent:
            self.fail(RequestTimeout(f"request body not received within {limit:g} s "
                                     "of shutdown"))
        else:
            self.transport.abort()

    # -- internals ------------------------------------------------------------

    def _start(self, exchange: Exchange) -> None:
        self.active = exchange
        # The request's task copies the context as it is made: its log
        # lines carry the request id (set here, and put back after).
        token = REQUEST_ID.set(exchange.request_id.decode("latin-1"))
        task = self.loop.create_task(
            self.server.app(exchange.scope, exchange.receive, exchange.send))
        REQUEST_ID.reset(token)
        task.add_done_callback(exchange.app_done)
        exchange.task = task

    def _close_after_answer(self) -> None:
        """Answer the requests read so far, up to an upgrade request; ignore what follows."""
        self.last_request_read = True
        last = self.pipeline[-1] if self.pipeline else self.active
        if last is None:
            self.transport.close()
        else:
            last.keep_alive = False

    def _flow(self) -> None:
        """Stop reading while requests wait in line, the client does not read our
        answers, or the app has not taken the body read so far; resume after."""
        reading = self.reading
        hold = bool(self.pipeline) or self.write_paused or (
            reading is not None and reading.buffered() > HIGH_WATER)
        if hold != self.read_paused and not self.transport.is_closing():
            self.read_paused = hold
            if hold:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _wake_drain(self) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _head_part(self, data: bytes) -> int:
        """Return how many bytes of ``data`` belong to the request's head."""
        across = (self.tail + data[:3]).find(END_OF_HEAD)
        if across >= 0:
            return across + len(END_OF_HEAD) - len(self.tail)
        end = data.find(END_OF_HEAD)
        return len(data) if end < 0 else end + len(END_OF_HEAD)

    def _idle_check(self) -> None:
        """Close the connection once idle for ``keepalive_timeout``.

        PERF: one timer per connection that re-arms itself, rather than a
        call_later and a cancel per request (2.7 us under uvloop).
        """
        timeout = self.settings.keepalive_timeout
        since = self.idle_since
        now = self.loop.time()
        if since is not None and now - since >= timeout:
            self.idle_timer = None
            # Answers the client never read would keep a close() waiting.
            self.transport.abort() if self.transport.get_write_buffer_size() else self.close()
            return
        wait = timeout if since is None else since + timeout - now
        self.idle_timer = self.loop.call_later(wait, self._idle_check)

    def _time_the_rest(self) -> None:
        """Arm the timer of the part of a request that this read left unfinished.

        PERF: a request read in one go arms no timer at all (call_later and
        cancel take 2.7 us under uvloop, twice per request otherwise).
        """
        if self.in_head:  # armed at the end of the read holding the first byte
            limit, message = self.settings.header_timeout, "request line and headers"
        else:
            limit, message = self.settings.body_timeout, "request body"
        self.read_timer = self.loop.call_later(limit, self._expired, limit,
                                               f"{message} not received within {limit:g} s")

    def _cancel_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _expired(self, seconds: float, message: str) -> None:
        self.read_timer = None
        if self.read_paused:
            # We stopped reading (a pipelined request waits for the one before
            # it, or the app has yet to take the body read so far): the wait
            # is ours, not the client's.
            self.read_timer = self.loop.call_later(seconds, self._expired, seconds, message)
            return
        self.fail(RequestTimeout(message))
