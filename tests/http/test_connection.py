"""codeQ's HTTP server byte by byte: requests fed to one connection in fragments,
pipelined, oversized or slow, answered by small ASGI apps; no store, no sockets.

The transport is a fake that records every write, so a test sees each
``transport.write`` the server makes, and when it pauses reading.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from codeq.config import Settings
from codeq.http.connection import HIGH_WATER, Connection
from codeq.http.server import HttpServer
from tests.support import parse_response

GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = self.reading_paused = False
        self.protocol: Connection | None = None
        self.buffered = 0

    def write(self, data: Any) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(
            name, default)

    @property
    def output(self) -> bytes:
        return b"".join(self.writes)


def settings(**changes: Any) -> Settings:
    return Settings(**{"max_header_bytes": 1024, "header_timeout": 5.0, "body_timeout": 5.0,
                       "keepalive_timeout": 5.0, **changes})


async def connect(app: Any, **changes: Any) -> tuple[Connection, FakeTransport]:
    server = HttpServer(app, settings(**changes))
    conn = Connection(server)
    transport = FakeTransport()
    transport.protocol = conn
    conn.connection_made(transport)
    return conn, transport


async def settle(rounds: int = 20) -> None:
    """Let the app tasks the connection started run as far as they can."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split ``raw`` into responses framed by content-length (or bodiless)."""
    out = []
    while raw:
        status, headers, body, raw = parse_response(raw)
        out.append((status, headers, body))
    return out


async def echo(scope: dict, receive: Any, send: Any) -> None:
    """Answer with the path and the whole body, as JSON."""
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    data = json.dumps({"path": scope["path"], "query": scope["query_string"].decode(),
                       "method": scope["method"], "body": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})


# Framing and fragments


async def test_a_response_is_one_write_of_head_and_body():
    conn, transport = await connect(echo)
    conn.data_received(b"POST /a?b=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
    await settle()
    assert len(transport.writes) == 1
    [(status, headers, body)] = responses(transport.output)
    assert status == 200 and headers["date"] and "connection" not in headers
    assert json.loads(body) == {"path": "/a", "query": "b=1", "method": "POST", "body": "hi"}
    assert not transport.closed


async def test_a_request_fed_one_byte_at_a_time():
    conn, transport = await connect(echo)
    request = b"POST /frag%20ment HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    for i in range(len(request)):
        conn.data_received(request[i:i + 1])
        await settle(2)
    await settle()
    [(status, _, body)] = responses(transport.output)
    assert status == 200
    assert json.loads(body)["path"] == "/frag ment"  # percent-decoded, as ASGI wants
    assert json.loads(body)["body"] == "hello"


async def test_a_chunked_request_body():
    conn, transport = await connect(echo)
    conn.data_received(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"3\r\nabc\r\n")
    await settle()
    conn.data_received(b"2\r\nde\r\n0\r\n\r\n")
    await settle()
    [(status, _, body)] = responses(transport.output)
    assert status == 200 and json.loads(body)["body"] == "abcde"


async def test_a_streamed_response_without_length_is_chunked():
    async def stream(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"c"})

    conn, transport = await connect(stream)
    conn.data_received(GET)
    await settle()
    assert transport.output.endswith(b"\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
    assert b"transfer-encoding: chunked\r\n" in transport.output


async def test_head_and_204_carry_no_body():
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        status = 204 if scope["path"] == "/none" else 200
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"3")] if status == 200 else []})
        await send({"type": "http.response.body", "body": b"abc" if status == 200 else b""})

    conn, transport = await connect(app)
    conn.data_received(b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\nGET /none HTTP/1.1\r\nHost: t\r\n\r\n")
    await settle()
    head, _, rest = transport.output.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 3" in head
    assert rest.startswith(b"HTTP/1.1 204 No Content\r\n") and rest.endswith(b"\r\n\r\n")
    assert b"content-length" not in rest


# Pipelining


async def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    order: list[str] = []

    async def slow_first(scope: dict, receive: Any, send: Any) -> None:
        order.append("start " + scope["path"])
        if scope["path"] == "/1":
            await asyncio.sleep(0.05)
        order.append("end " + scope["path"])
        await echo(scope, receive, send)

    conn, transport = await connect(slow_first)
    conn.data_received(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n"
                       b"POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                       b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n")
    await settle()
    assert transport.reading_paused  # requests wait in line: no more reading meanwhile
    await asyncio.sleep(0.1)
    await settle()
    got = [json.loads(body) for _, _, body in responses(transport.output)]
    assert [(g["path"], g["body"]) for g in got] == [("/1", ""), ("/2", "abc"), ("/3", "")]
    assert order == ["start /1", "end /1", "start /2", "end /2", "start /3", "end /3"]
    assert not transport.reading_paused and not transport.closed


async def test_connection_close_and_http_1_0_close_after_the_answer():
    for request in (b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    b"GET /x HTTP/1.0\r\n\r\n"):
        conn, transport = await connect(echo)
        conn.data_received(request + GET)  # anything after it is not answered
        await settle()
        [(status, headers, _)] = responses(transport.output)
        assert status == 200 and headers["connection"] == "close"
        assert transport.closed


async def test_an_upgrade_request_is_answered_as_plain_http_then_the_connection_closes():
    conn, transport = await connect(echo)
    conn.data_received(b"GET /up HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                       b"Upgrade: h2c\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    conn.data_received(b"more frames")
    await settle()
    [(status, headers, body)] = responses(transport.output)
    assert status == 200 and json.loads(body)["path"] == "/up"
    assert headers["connection"] == "close" and transport.closed


# Bounds


async def test_a_head_past_the_limit_gets_431_before_the_parser_buffers_it():
    conn, transport = await connect(echo)
    conn.data_received(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 600)
    assert not transport.writes
    conn.data_received(b"a" * 600)
    [(status, headers, body)] = responses(transport.output)
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(body)["code"] == "HEADERS_TOO_LARGE"
    assert transport.closed


async def test_a_head_at_the_limit_passes_and_body_bytes_do_not_count():
    conn, transport = await connect(echo)
    top = b"POST /x HTTP/1.1\r\nContent-Length: 2000\r\nX-Pad: "
    head = top + b"p" * (1024 - len(top) - 4) + b"\r\n\r\n"
    assert len(head) == 1024
    # The end of the head split across two reads.
    conn.data_received(head[:-2])
    conn.data_received(head[-2:] + b"b" * 2000)
    await settle()
    [(status, _, body)] = responses(transport.output)
    assert status == 200 and len(json.loads(body)["body"]) == 2000


async def test_a_malformed_request_gets_400_and_the_connection_closes():
    conn, transport = await connect(echo)
    conn.data_received(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n")
    [(status, _, body)] = responses(transport.output)
    assert status == 400 and json.loads(body)["code"] == "BAD_REQUEST"
    assert transport.closed


async def test_an_unread_body_stops_reading_and_closes_after_the_answer():
    async def refuse(scope: dict, receive: Any, send: Any) -> None:
        await receive()  # the first piece only, as a 413 does
        await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body"})

    conn, transport = await connect(refuse)
    conn.data_received(b"POST /x HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n")
    await settle()
    for _ in range(3):
        conn.data_received(b"b" * HIGH_WATER)
    assert transport.reading_paused  # never more than HIGH_WATER and one read held
    await asyncio.sleep(0.02)
    await settle()
    [(status, headers, _)] = responses(transport.output)
    assert status == 413 and headers["connection"] == "close"
    assert transport.closed


async def test_a_header_that_would_split_the_response_is_refused_with_500():
    async def inject(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-a", b"1\r\nset-cookie: evil=1")]})
        await send({"type": "http.response.body", "body": b"ok"})

    conn, transport = await connect(inject)
    conn.data_received(GET)
    await settle()
    [(status, _, body)] = responses(transport.output)
    assert status == 500 and b"evil" not in transport.output
    assert json.loads(body) == {"error": "internal error", "code": "INTERNAL"}


async def test_an_app_that_fails_before_answering_gets_500():
    async def broken(scope: dict, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    conn, transport = await connect(broken)
    conn.data_received(GET)
    await settle()
    [(status, headers, _)] = responses(transport.output)
    assert status == 500 and headers["connection"] == "close"


# Timers


async def test_the_header_timer_runs_from_the_first_byte():
    conn, transport = await connect(echo, header_timeout=0.1)
    conn.data_received(b"GET /x HTTP/1.1\r\n")
    await asyncio.sleep(0.06)
    conn.data_received(b"X-A: 1\r\n")  # more bytes do not restart it
    await asyncio.sleep(0.06)
    [(status, _, body)] = responses(transport.output)
    assert status == 408 and json.loads(body)["code"] == "REQUEST_TIMEOUT"
    assert transport.closed


async def test_a_stalled_body_gets_408_and_its_handler_sees_a_disconnect():
    seen: list[dict] = []

    async def reader(scope: dict, receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            seen.append(event)
            if not event.get("more_body"):
                return

    conn, transport = await connect(reader, body_timeout=0.05)
    conn.data_received(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    await asyncio.sleep(0.1)
    await settle()
    [(status, _, _)] = responses(transport.output)
    assert status == 408
    assert seen[-1] == {"type": "http.disconnect"}


async def test_no_timer_while_a_request_is_handled_then_the_idle_timer():
    answered = asyncio.get_running_loop().create_future()

    async def long_poll(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        answered.set_result(asyncio.get_running_loop().time())

    conn, transport = await connect(long_poll, header_timeout=0.05, body_timeout=0.05,
                                    keepalive_timeout=0.3)
    conn.data_received(b"POST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
    answered_at = await asyncio.wait_for(answered, 5)
    # Past the 0.05 s header and body timeouts, the connection is still open.
    assert responses(transport.output)[0][0] == 204 and not transport.closed
    while not transport.closed:
        await asyncio.sleep(0.005)
    assert 0.28 < asyncio.get_running_loop().time() - answered_at < 1.5


async def test_a_connection_that_sends_nothing_idles_out():
    _, transport = await connect(echo, keepalive_timeout=0.05)
    await asyncio.sleep(0.1)
    assert transport.closed and not transport.writes


# Expect: 100-continue and disconnects


async def test_100_continue_is_sent_when_the_app_asks_for_the_body():
    gate = asyncio.Event()

    async def later(scope: dict, receive: Any, send: Any) -> None:
        await gate.wait()
        await echo(scope, receive, send)

    conn, transport = await connect(later)
    conn.data_received(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    await settle()
    assert not transport.writes  # not before the app wants the body
    gate.set()
    await settle()
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    conn.data_received(b"ok")
    await settle()
    assert json.loads(responses(transport.output.split(b"\r\n\r\n", 1)[1])[0][2])["body"] == "ok"


async def test_no_100_continue_once_the_body_is_on_its_way():
    conn, transport = await connect(echo)
    conn.data_received(b"POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nab")
    await settle()
    conn.data_received(b"cd")
    await settle()
    assert transport.output.startswith(b"HTTP/1.1 200 OK")


async def test_receive_reports_a_disconnect_during_a_long_poll_and_after_the_answer():
    events: list[dict] = []

    async def watcher(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        events.append(await receive())  # waits: the body was all read

    conn, transport = await connect(watcher)
    conn.data_received(GET)
    await settle()
    assert not events
    conn.connection_lost(None)
    await settle()
    assert events == [{"type": "http.disconnect"}]

    async def answer_then_watch(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})
        events.append(await waiting)

    events.clear()
    conn, transport = await connect(answer_then_watch)
    conn.data_received(GET)
    await settle()
    assert events == [{"type": "http.disconnect"}] and not transport.closed


async def test_writes_stop_reading_until_the_client_takes_them():
    conn, transport = await connect(echo)
    conn.pause_writing()
    assert transport.reading_paused
    conn.resume_writing()
    assert not transport.reading_paused


# Shutdown


async def test_shutdown_closes_idle_connections_and_lets_a_request_finish():
    gate = asyncio.Event()

    async def held(scope: dict, receive: Any, send: Any) -> None:
        await gate.wait()
        await echo(scope, receive, send)

    idle, idle_transport = await connect(echo)
    busy, busy_transport = await connect(held)
    busy.data_received(GET)
    await settle()
    for conn in (idle, busy):
        conn.shutdown()
    assert idle_transport.closed and not busy_transport.closed
    gate.set()
    await settle()
    [(status, headers, _)] = responses(busy_transport.output)
    assert status == 200 and headers["connection"] == "close"
    assert busy_transport.closed


async def test_at_the_end_of_the_drain_a_body_still_arriving_gets_408():
    conn, transport = await connect(echo)
    conn.data_received(b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
    await settle()
    conn.shutdown()
    assert not transport.closed
    conn.force_close(2.0)
    [(status, _, body)] = responses(transport.output)
    assert status == 408 and "of shutdown" in json.loads(body)["error"]


# The server around the connections


async def test_serve_runs_the_lifespan_refuses_at_once_and_drains():
    log: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                name = event["type"].split(".")[1]
                log.append(name)
                await send({"type": f"lifespan.{name}.complete"})
                if name == "shutdown":
                    return
        await receive()
        await asyncio.sleep(0.1)
        log.append("answered")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    import socket

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    server = HttpServer(app, settings(shutdown_timeout=2.0))
    serving = asyncio.create_task(server.serve(sock, stop))
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(GET)
    await writer.drain()
    await asyncio.sleep(0.02)
    stop.set()
    await asyncio.sleep(0.02)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    answer = await reader.read()  # the answer, then the close
    assert answer.startswith(b"HTTP/1.1 204 ") and b"connection: close" in answer
    await asyncio.wait_for(serving, 3)
    assert log == ["startup", "answered", "shutdown"]
    writer.close()
