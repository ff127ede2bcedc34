"""HTTP bounds of ``codeq serve``: header size, read timeouts, idle connections, shutdown.

The clients here misbehave on purpose, so they speak HTTP over raw sockets.
"""

from __future__ import annotations

import json
import select
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import (
    CodeqServer,
    alive,
    cmdline,
    not_on_cluster,
    parse_response,
    process_tree,
    wait_until,
)

V1 = "/v1/codeq"
KIB = 1024
MIB = 1024 * KIB
GONE = (BrokenPipeError, ConnectionResetError)


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, *headers: str, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: codeq", "X-Worker-Id: w", *headers]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False once the server has closed the connection."""
    try:
        sock.sendall(data)
        return True
    except GONE:
        return False


def read_until_closed(sock: socket.socket) -> bytes:
    """Read everything the server sends until it closes the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(64 * KIB)
        except ConnectionResetError:
            return data  # closed with our bytes unread: what came before still counts
        if not chunk:
            return data
        data += chunk


def read_response(sock: socket.socket) -> bytes:
    """Read one response with a Content-Length (or none) off a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(64 * KIB)
        assert chunk, f"closed before a whole response: {data!r}"
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    length = int(parse(top + b"\r\n\r\n")[1].get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(64 * KIB)
        assert chunk, "closed before a whole body"
        body += chunk
    return top + b"\r\n\r\n" + body


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read ``count`` responses, however they are split or joined across reads."""
    data, found = b"", []
    while len(found) < count:
        top, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            status, headers, _ = parse(top + sep)
            length = int(headers.get("content-length", 0))
            if len(rest) >= length:
                found.append((status, headers, rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(64 * KIB)
        assert chunk, f"closed after {len(found)} responses"
        data += chunk
    return found


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Return status, headers (lower-case names) and body of one response."""
    return parse_response(raw)[:3]


def error_of(raw: bytes) -> tuple[int, str]:
    """Return the status and error code of a JSON error response."""
    status, headers, body = parse(raw)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    data = json.loads(body[:int(headers["content-length"])])
    assert set(data) == {"error", "code"} and data["error"]
    return status, data["code"]


def trickle(sock: socket.socket, data: bytes, interval: float, limit: float) -> tuple[bytes, float]:
    """Send ``data`` a byte per ``interval`` until the server answers or closes; return
    what it sent and the seconds until then."""
    started = time.monotonic()
    for byte in data:
        assert time.monotonic() - started < limit, "no answer while trickling"
        if not send(sock, bytes([byte])) or select.select([sock], [], [], interval)[0]:
            elapsed = time.monotonic() - started
            return read_until_closed(sock), elapsed
    raise AssertionError("the whole request was sent and nothing came back")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def server(store_server):
    """Default bounds; one process, so the ``codeq serve`` process itself serves."""
    server = CodeqServer("--store-url", store_server.url, "--log-level", "warning").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(store_server):
    """Every read timer at one second."""
    server = CodeqServer("--store-url", store_server.url, "--log-level", "warning",
                         "--keepalive-timeout", "1", "--header-timeout", "1",
                         "--body-timeout", "1").start()
    yield server
    server.stop()


# Header size


def test_a_200_kib_header_gets_431_and_the_connection_closes(server):
    with connect(server.port) as sock:
        send(sock, head("GET", "/healthz", "X-Big: " + "a" * 200 * KIB))
        assert error_of(read_until_closed(sock)) == (431, "HEADERS_TOO_LARGE")


def test_a_header_trickled_past_the_limit_gets_431(server):
    with connect(server.port) as sock:
        send(sock, b"GET /healthz HTTP/1.1\r\nHost: codeq\r\nX-Big: ")
        sent = 0
        # Pieces of 1 KiB, each its own segment and read: the count spans reads.
        while sent < 4 * MIB and send(sock, b"a" * KIB):
            sent += KIB
            time.sleep(0.005)
        assert error_of(read_until_closed(sock)) == (431, "HEADERS_TOO_LARGE")
    assert sent < 4 * MIB  # the server stopped reading (kernel buffers took the rest)


def test_body_bytes_do_not_count_as_header_bytes(server, command):
    pad = "X-Pad: " + "p" * 8 * KIB
    body = json.dumps({"command": command, "payload": {"blob": "b" * 500 * KIB}}).encode()
    request = head("POST", f"{V1}/tasks", pad, "Connection: close", length=len(body))
    with connect(server.port) as sock:
        # The end of the headers split across two reads: the scan carries it over.
        send(sock, request[:-1])
        time.sleep(0.05)
        send(sock, request[-1:] + body)
        status, _, reply = parse(read_until_closed(sock))
    assert status == 202, reply
    # The same request with its headers past the limit is refused.
    with connect(server.port) as sock:
        send(sock, head("POST", f"{V1}/tasks", pad, "X-More: " + "m" * 9 * KIB,
                        length=len(body)) + body)
        assert error_of(read_until_closed(sock)) == (431, "HEADERS_TOO_LARGE")


def test_a_50_mib_header_stream_is_not_buffered(server):
    pid = server.proc.pid
    before = rss_kib(pid)
    with connect(server.port) as sock:
        sent = 0
        if send(sock, b"GET /healthz HTTP/1.1\r\nHost: codeq\r\nX-Big: "):
            piece = b"a" * 256 * KIB
            while sent < 50 * MIB and send(sock, piece):
                sent += len(piece)
        assert error_of(read_until_closed(sock)) == (431, "HEADERS_TOO_LARGE")
    assert sent < 50 * MIB
    assert rss_kib(pid) - before < 4 * 1024
    with connect(server.port) as sock:
        send(sock, head("GET", "/healthz", "Connection: close"))
        assert parse(read_until_closed(sock))[0] == 200


# Pipelining


def test_pipelined_requests_are_answered_in_order(server, command):
    task = json.dumps({"command": command, "payload": {"n": 1}}).encode()
    claim = json.dumps({"commands": [command]}).encode()
    with connect(server.port) as sock:
        # Three requests in one segment: each answered in turn on the same connection.
        send(sock, head("POST", f"{V1}/tasks", length=len(task)) + task
               + head("GET", "/healthz")
               + head("POST", f"{V1}/tasks/claim", length=len(claim)) + claim)
        created, health, claimed = read_responses(sock, 3)
    assert created[0] == 202 and health[0] == 200 and claimed[0] == 200
    assert json.loads(claimed[2])["id"] == json.loads(created[2])["id"]


# Read timeouts


def test_a_connection_that_sends_nothing_is_closed_after_the_keepalive_timeout(strict):
    with connect(strict.port, timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert 0.8 < time.monotonic() - started < 3


def test_trickled_headers_get_408_after_the_header_timeout(strict):
    request = head("GET", "/healthz", "X-Slow: " + "s" * 100)
    with connect(strict.port) as sock:
        raw, elapsed = trickle(sock, request, 0.05, 5)
    # A total deadline from the first byte, not an idle timeout reset by each byte.
    assert error_of(raw) == (408, "REQUEST_TIMEOUT")
    assert 0.8 < elapsed < 3


def test_a_trickled_body_gets_408_after_the_body_timeout(strict, command):
    body = json.dumps({"command": command, "payload": "x" * 200}).encode()
    with connect(strict.port) as sock:
        send(sock, head("POST", f"{V1}/tasks", length=len(body)))
        raw, elapsed = trickle(sock, body, 0.05, 5)
    assert error_of(raw) == (408, "REQUEST_TIMEOUT")
    assert 0.8 < elapsed < 3


def test_a_declared_oversize_body_gets_413_and_the_connection_closes_unread(strict, command):
    with connect(strict.port, timeout=5) as sock:
        started = time.monotonic()
        send(sock, head("POST", f"{V1}/tasks", length=50 * MIB) + b'{"command": ')
        raw = read_until_closed(sock)
        assert time.monotonic() - started < 0.8  # not left to the body timeout
    assert error_of(raw) == (413, "PAYLOAD_TOO_LARGE")


def test_a_stalled_body_gets_408_after_the_body_timeout(strict, command):
    body = json.dumps({"command": command, "payload": "x"}).encode()
    with connect(strict.port, timeout=5) as sock:
        started = time.monotonic()
        send(sock, head("POST", f"{V1}/tasks", length=len(body) + 10) + body)
        raw = read_until_closed(sock)
        assert 0.8 < time.monotonic() - started < 3
    assert error_of(raw) == (408, "REQUEST_TIMEOUT")


@pytest.mark.parametrize("poll", ["claim", "result"])
def test_long_polls_outlast_the_timers_then_the_connection_idles_out(strict, command, poll):
    body = json.dumps({"commands": [command], "waitSeconds": 3}).encode()
    if poll == "claim":
        request = head("POST", f"{V1}/tasks/claim", length=len(body)) + body
    else:
        task = json.dumps({"command": command, "payload": 1}).encode()
        with connect(strict.port) as sock:
            send(sock, head("POST", f"{V1}/tasks", "Connection: close", length=len(task)) + task)
            task_id = json.loads(parse(read_until_closed(sock))[2])["id"]
        request = head("GET", f"{V1}/tasks/{task_id}/result?waitSeconds=3")
    with connect(strict.port) as sock:
        started = time.monotonic()
        send(sock, request)
        answer = read_response(sock)
        answered = time.monotonic() - started
        # Keep-alive: the connection stays open for the next request, then idles out.
        assert sock.recv(1024) == b""
        closed = time.monotonic() - started
    assert parse(answer)[0] == (204 if poll == "claim" else 404)
    assert 2.8 < answered < 4.5
    assert 0.8 < closed - answered < 3


# Shutdown


def held_request(port: int) -> socket.socket:
    """Open a request the server is reading: headers sent, body stalled."""
    sock = connect(port)
    send(sock, head("POST", f"{V1}/tasks", "Expect: 100-continue", length=100))
    # The interim answer comes when the handler asks for the body: it is in flight.
    assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")
    send(sock, b'{"command": ')
    return sock


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset: it reached the backlog of a listener closing that moment.
        return True
    return False


@pytest.mark.parametrize("mode", ["two processes", "one process", pytest.param(
    "embedded store", marks=not_on_cluster("the embedded store is one local process"))])
def test_sigterm_refuses_new_connections_at_once_and_bounds_the_drain(store_server, mode):
    shutdown_timeout = 2
    data_dir = tempfile.mkdtemp(prefix="codeq-data-")  # short: the store's socket is in it
    args = ["--shutdown-timeout", str(shutdown_timeout), "--body-timeout", "60",
            "--header-timeout", "60", "--log-level", "warning"]
    if mode == "embedded store":
        args += ["--data-dir", data_dir]
    else:
        args += ["--store-url", store_server.url, "--workers", "2" if mode == "two processes"
                 else "1"]
    server = CodeqServer(*args).start()
    try:
        tree = process_tree(server.proc.pid)
        with held_request(server.port) as held:
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: refused(server.port), 3.0, 0.02, "connections refused")
            assert server.proc.wait(shutdown_timeout + 5) == 0
            left = signalled + shutdown_timeout + 5 - time.monotonic()
            wait_until(lambda: not [pid for pid in tree if alive(pid)], left, 0.02,
                       f"the process tree {[cmdline(p) for p in tree]} to exit")
            # The held request was told why, in the JSON error shape.
            assert error_of(read_until_closed(held)) == (408, "REQUEST_TIMEOUT")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
