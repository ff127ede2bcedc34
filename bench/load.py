"""Drive create -> claim -> result over HTTP against a real ``codeq serve``.

Starts its own redis-server (append-only on, temporary directory) and codeq
serve on free loopback ports unless given --url, runs N concurrent clients,
each looping over the full cycle of one task, and prints tasks/s and p50/p99
latency per endpoint. Bounded by --tasks and --duration; stops everything it
started by PID.

    python bench/load.py --clients 64 --tasks 20000 --server-workers 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import CodeqServer, StoreServer


class Connection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost
    less CPU than the server it measures."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: str = "") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{headers}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def client_loop(conn: Connection, worker: str, command: str, budget: list[int],
                      deadline: float, latencies: dict[str, list[float]],
                      webhook: str | None = None) -> int:
    done = 0
    worker_header = f"X-Worker-Id: {worker}\r\n"
    create = {"command": command, "payload": {"to": "ada@example.com"}}
    if webhook:
        create["webhook"] = webhook
    create_body = json.dumps(create).encode()
    claim_body = json.dumps({"commands": [command], "leaseSeconds": 60}).encode()
    clock = time.perf_counter
    while budget[0] > 0 and clock() < deadline:
        budget[0] -= 1
        t0 = clock()
        status, _ = await conn.request("POST", "/v1/codeq/tasks", create_body)
        t1 = clock()
        assert status == 202, status
        status, data = await conn.request("POST", "/v1/codeq/tasks/claim", claim_body,
                                          worker_header)
        t2 = clock()
        if status == 204:
            continue  # another client took it; ours is still queued for someone
        assert status == 200, (status, data)
        task = json.loads(data)
        body = json.dumps({"status": "COMPLETED", "result": {"ok": True},
                           "leaseId": task["leaseId"]}).encode()
        status, _ = await conn.request("POST", f"/v1/codeq/tasks/{task['id']}/result", body,
                                       worker_header)
        t3 = clock()
        assert status == 200, status
        latencies["create"].append(t1 - t0)
        latencies["claim"].append(t2 - t1)
        latencies["result"].append(t3 - t2)
        done += 1
    return done


async def drive(host: str, port: int, clients: int, tasks: int, duration: float,
                command: str, webhook: str | None = None) -> dict:
    conns = [Connection(host, port) for _ in range(clients)]
    await asyncio.gather(*(c.open() for c in conns))
    latencies: dict[str, list[float]] = {"create": [], "claim": [], "result": []}
    budget = [tasks]
    started = time.perf_counter()
    deadline = started + duration
    counts = await asyncio.gather(*(
        client_loop(c, f"load-{i}", command, budget, deadline, latencies, webhook)
        for i, c in enumerate(conns)
    ))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    completed = sum(counts)
    return {"completed": completed, "seconds": elapsed, "tasks_per_s": completed / elapsed,
            "latency_ms": {name: percentiles(values) for name, values in latencies.items()}}


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49] * 1000, 2), "p99": round(cuts[98] * 1000, 2)}


def report(result: dict, args: argparse.Namespace) -> None:
    print(f"clients={args.clients} server_workers={args.server_workers} "
          f"completed={result['completed']} in {result['seconds']:.1f} s")
    print(f"full cycle (create -> claim -> result): {result['tasks_per_s']:,.0f} tasks/s")
    print(f"{'endpoint':<10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, cut in result["latency_ms"].items():
        p50, p99 = cut.get("p50", float("nan")), cut.get("p99", float("nan"))
        print(f"{name:<10}{p50:>10.2f}{p99:>10.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients")
    parser.add_argument("--tasks", type=int, default=20000, help="full cycles to run at most")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run at most")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="codeq serve --workers of the server this script starts")
    parser.add_argument("--url", help="an already running codeq (http://host:port) to drive")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    started: list = []
    try:
        if args.url:
            host, port = args.url.split("//", 1)[1].rstrip("/").split(":")
        else:
            store = StoreServer(appendonly=True).start()
            started.append(store)
            server = CodeqServer("--store-url", store.url, "--workers", str(args.server_workers),
                                 "--log-level", "warning").start()
            started.append(server)
            host, port = "127.0.0.1", str(server.port)
        command = f"load.{os.getpid()}"
        result = uvloop.run(drive(host, int(port), args.clients, args.tasks, args.duration,
                                  command))
    finally:
        for proc in reversed(started):
            proc.stop()
            if isinstance(proc, StoreServer):
                proc.cleanup()
    if args.json:
        print(json.dumps(result))
    else:
        report(result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
