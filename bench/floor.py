"""Server CPU per request, layer by layer: how low can one request go?

Starts one server process per layer and sends it ``--requests`` POSTs one
at a time over one keep-alive connection (the peers' producer pattern),
then reads the server's CPU time from /proc. Layers:

- ``protocol``: an asyncio protocol on uvloop that answers every read
  with a canned 202 (the floor of a Python server, without HTTP parsing)
- ``bare``: codeQ's HTTP server with an ASGI app that answers 202 at once
- ``falcon``: the same server with a Falcon ASGI app whose one route decodes
  the body with msgspec and answers a small JSON document
- ``codeq``: ``codeq serve`` answering ``POST /v1/codeq/tasks``

The difference between two layers is what that layer costs per request.

    python bench/floor.py --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.idle import cpu_seconds
from bench.load import Connection
from codeq.embedded import free_port
from tests.support import CodeqServer, StoreServer

CONNECTIONS = (1, 50)  # one at a time (the peers' producer), and 50 lanes (its worker)
BODY = json.dumps({"command": "floor", "payload": {"i": 1, "pad": "x" * 64}}).encode()

SERVE = r"""
import asyncio, socket, sys
import falcon.asgi, msgspec, uvloop
from codeq.config import Settings
from codeq.http.server import HttpServer

async def bare(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    await receive()
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"id":"x"}'})

class Create(msgspec.Struct):
    command: str
    payload: msgspec.Raw

decode = msgspec.json.Decoder(Create).decode
encode = msgspec.json.Encoder().encode

class Tasks:
    async def on_post(self, req, resp):
        body = decode(await req.stream.read())
        resp.data = encode({"id": "x", "command": body.command})
        resp.content_type = "application/json"
        resp.status = 202

falcon_app = falcon.asgi.App()
falcon_app.add_route("/v1/codeq/tasks", Tasks())

class Canned(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.transport.write(b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n"
                             b"content-length: 10\r\n\r\n{\"id\":\"x\"}")

async def main():
    if sys.argv[1] == "protocol":
        sock = socket.create_server(("127.0.0.1", int(sys.argv[2])))
        server = await asyncio.get_running_loop().create_server(Canned, sock=sock)
        await asyncio.Event().wait()
    app = bare if sys.argv[1] == "bare" else falcon_app
    sock = socket.create_server(("127.0.0.1", int(sys.argv[2])))
    await HttpServer(app, Settings(port=int(sys.argv[2]))).serve(sock, asyncio.Event())

uvloop.run(main())
"""


async def drive(port: int, requests: int, connections: int = 1) -> float:
    conns = [Connection("127.0.0.1", port) for _ in range(connections)]
    for conn in conns:
        await conn.open()

    async def send(conn: Connection, n: int) -> None:
        for _ in range(n):
            status, data = await conn.request("POST", "/v1/codeq/tasks", BODY)
            assert status == 202, (status, data)

    start = time.perf_counter()
    await asyncio.gather(*(send(conn, requests // connections) for conn in conns))
    seconds = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return seconds


async def wait_port(port: int, deadline: float) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def measure(pid: int, port: int, requests: int) -> dict[str, dict[str, float]]:
    uvloop.run(drive(port, min(requests, 1000)))  # warm up
    figures = {}
    for connections in CONNECTIONS:
        cpu0 = cpu_seconds(pid)
        seconds = uvloop.run(drive(port, requests, connections))
        cpu = cpu_seconds(pid) - cpu0
        figures[f"{connections} connection(s)"] = {
            "requests_per_s": round(requests / seconds),
            "server_us_per_request": round(cpu / requests * 1e6, 1)}
    return figures


def layer(name: str, requests: int) -> dict[str, dict[str, float]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, name, str(port)],
                            start_new_session=True)
    try:
        uvloop.run(wait_port(port, time.monotonic() + 30))
        return measure(proc.pid, port, requests)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def codeq_layer(requests: int) -> dict[str, dict[str, float]]:
    store = StoreServer(appendonly=True).start()
    try:
        server = CodeqServer("--store-url", store.url, "--log-level", "warning").start()
        try:
            return measure(server.proc.pid, server.port, requests)
        finally:
            server.stop()
    finally:
        store.stop()
        store.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    result = {"protocol": layer("protocol", args.requests),
              "bare": layer("bare", args.requests),
              "falcon": layer("falcon", args.requests),
              "codeq": codeq_layer(args.requests)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
