"""uvicorn's httptools protocol with bounds on how clients send requests.

As shipped it buffers a header of any size (httptools accumulates each value
in memory) and runs no timer while a request is read, nor on a connection
that has sent nothing yet: one client could hold memory and connections for
ever. Here each request's line and headers are counted before the parser
sees them (431 past ``max_header_bytes``); they must arrive within
``header_timeout`` of their first byte, and the body within ``body_timeout``
of the headers (408); and an idle connection is closed after
``keepalive_timeout`` from the start, not only after a first response.

No timer runs while a request is handled: a long poll has read its whole body
before it waits, so it is bounded by its own ``waitSeconds`` only.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from codeq.config import Settings
from codeq.errors import CodeqError, HeadersTooLarge, RequestTimeout
from codeq.schemas import json_encoder

END_OF_HEAD = b"\r\n\r\n"


def protocol_for(settings: Settings) -> type[BoundedProtocol]:
    """Return the protocol class to give uvicorn (its ``http``), bound to ``settings``."""

    class Bound(BoundedProtocol):
        pass

    Bound.settings = settings
    return Bound


class BoundedProtocol(HttpToolsProtocol):
    """One connection: uvicorn's protocol, bounded (see the module docstring)."""

    settings: ClassVar[Settings]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the current request's line and headers so far; None while
        # its body is read (body bytes never count).
        self.head_bytes: int | None = 0
        self.tail = b""  # the last 3 bytes read: an end of head may span two reads
        self.read_timer: asyncio.TimerHandle | None = None  # header timer, then body timer

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its idle timer only after a response: a client that
        # connects and sends nothing would keep the connection for ever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        # uvicorn cancels its idle timer only on a clean close; on a reset it
        # would keep this protocol alive until the timer fires.
        self._unset_keepalive_if_required()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is not None:
            self.head_bytes += self._head_part(data)
            # Checked before the parser sees the bytes: it never holds more
            # than the limit plus this one read.
            if self.head_bytes > self.settings.max_header_bytes:
                self._fail(HeadersTooLarge(
                    f"request line and headers exceed {self.settings.max_header_bytes} bytes"))
                return
        self.tail = (self.tail + data[-3:])[-3:]
        super().data_received(data)
        if self.read_timer is None and self.head_bytes != 0:
            self._time_the_rest()

    def _head_part(self, data: bytes) -> int:
        """Return how many bytes of ``data`` belong to the request's head."""
        across = (self.tail + data[:3]).find(END_OF_HEAD)
        if across >= 0:
            return across + len(END_OF_HEAD) - len(self.tail)
        end = data.find(END_OF_HEAD)
        return len(data) if end < 0 else end + len(END_OF_HEAD)

    def _time_the_rest(self) -> None:
        """Arm the timer of the part of a request that this read left unfinished.

        PERF: a request read in one go arms no timer at all (call_later and
        cancel take 2.7 us under uvloop, twice per request otherwise).
        """
        if self.head_bytes is None:
            limit, message = self.settings.body_timeout, "request body"
        else:  # armed at the end of the read holding the first byte
            limit, message = self.settings.header_timeout, "request line and headers"
        self._arm(limit, f"{message} not received within {limit:g} s")

    def on_headers_complete(self) -> None:
        self._cancel_timer()  # the body's timer starts now, if a body is still to come
        self.head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The request is in; the next byte starts the next one.
        self._cancel_timer()
        self.head_bytes = 0
        super().on_message_complete()

    def shutdown(self) -> None:
        # A body still arriving would hold the drain until uvicorn cancels its
        # handler, 0.1 s after shutdown_timeout, with a bare 500: answer 408
        # at shutdown_timeout instead.
        limit = self.settings.shutdown_timeout
        timer = self.read_timer
        if self.head_bytes is None and timer and timer.when() - self.loop.time() > limit:
            self._arm(limit, f"request body not received within {limit:g} s of shutdown")
        super().shutdown()

    def _arm(self, seconds: float, message: str) -> None:
        self._cancel_timer()
        self.read_timer = self.loop.call_later(seconds, self._expired, seconds, message)

    def _cancel_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _expired(self, seconds: float, message: str) -> None:
        self.read_timer = None
        if self.flow.read_paused:
            # We stopped reading (a pipelined request waits for the one before
            # it, or the handler has yet to take the body read so far): the
            # wait is ours, not the client's.
            self._arm(seconds, message)
            return
        self._fail(RequestTimeout(message))

    def _fail(self, error: CodeqError) -> None:
        """Answer ``error`` unless another response is owed first; close."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started or self.head_bytes is not None:
                # Mid-response, or the request in flight is an earlier one:
                # an answer now would be taken for its answer.
                self.transport.close()
                return
            # The handler of the stalled request waits for its body: end the
            # wait as a disconnect, so whatever it answers later is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(self._error_response(error))
        self.transport.close()

    def _error_response(self, error: CodeqError) -> bytes:
        body = json_encoder.encode(error.to_dict())
        lines = [STATUS_LINE[error.status]]
        lines += [name + b": " + value + b"\r\n"
                  for name, value in self.server_state.default_headers]
        lines.append(b"content-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n" % len(body))
        return b"".join(lines) + body
