"""The peers' mixed phase, in one script: producers and workers at once.

A producer keeps ``--inflight`` creates in flight while ``--lanes`` worker
lanes loop claim (long poll) -> result, each lane on its own keep-alive
connection, against one ``codeq serve`` this script starts (or ``--url``).
With ``--batch N`` the producer creates N tasks a request and each lane
claims up to N and sends their results in one request. Prints tasks/s and
the server's CPU per task; stops everything it started by PID.

    python bench/mixed.py --tasks 20000 --lanes 50 --inflight 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.idle import cpu_seconds
from bench.load import Connection
from tests.support import CodeqServer, StoreServer

PAD = "x" * 64
WORKER = "X-Worker-Id: mixed-bench\r\n"


async def produce(port: int, command: str, tasks: int, inflight: int, batch: int) -> None:
    budget = [tasks]

    async def one() -> None:
        conn = Connection("127.0.0.1", port)
        await conn.open()
        while budget[0] > 0:
            n = min(batch, budget[0])
            budget[0] -= n
            items = [{"command": command, "payload": {"i": i, "pad": PAD}} for i in range(n)]
            if batch == 1:
                status, data = await conn.request("POST", "/v1/codeq/tasks",
                                                  json.dumps(items[0]).encode())
                assert status == 202, (status, data)
            else:
                status, data = await conn.request("POST", "/v1/codeq/tasks/batch",
                                                  json.dumps({"tasks": items}).encode())
                assert status == 200, (status, data)
        conn.close()

    await asyncio.gather(*(one() for _ in range(inflight)))


async def work(port: int, command: str, tasks: int, lanes: int, batch: int) -> None:
    done = [0]
    finished = asyncio.Event()

    async def lane() -> None:
        conn = Connection("127.0.0.1", port)
        await conn.open()
        while not finished.is_set():
            if batch == 1:
                body = json.dumps({"commands": [command], "waitSeconds": 1}).encode()
                status, data = await conn.request("POST", "/v1/codeq/tasks/claim", body, WORKER)
                if status == 204:
                    continue
                assert status == 200, (status, data)
                task = json.loads(data)
                result = json.dumps({"status": "COMPLETED", "leaseId": task["leaseId"]}).encode()
                status, data = await conn.request(
                    "POST", f"/v1/codeq/tasks/{task['id']}/result", result, WORKER)
                assert status == 200, (status, data)
                done[0] += 1
            else:
                body = json.dumps({"commands": [command], "count": batch,
                                   "waitSeconds": 1}).encode()
                status, data = await conn.request("POST", "/v1/codeq/tasks/claim/batch", body,
                                                  WORKER)
                if status == 204:
                    continue
                assert status == 200, (status, data)
                claimed = json.loads(data)["tasks"]
                results = [{"taskId": t["id"], "leaseId": t["leaseId"], "status": "COMPLETED"}
                           for t in claimed]
                status, data = await conn.request(
                    "POST", "/v1/codeq/tasks/batch/results",
                    json.dumps({"results": results}).encode(), WORKER)
                assert status == 200, (status, data)
                done[0] += len(claimed)
            if done[0] >= tasks:
                finished.set()
        conn.close()

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def mixed(port: int, args: argparse.Namespace) -> float:
    command = f"mixed.{os.getpid()}.{time.monotonic_ns()}"
    started = time.perf_counter()
    await asyncio.gather(produce(port, command, args.tasks, args.inflight, args.batch),
                         work(port, command, args.tasks, args.lanes, args.batch))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--lanes", type=int, default=50, help="worker lanes (connections)")
    parser.add_argument("--inflight", type=int, default=1, help="creates in flight")
    parser.add_argument("--batch", type=int, default=1, help="tasks per create / claim request")
    parser.add_argument("--url", help="an already running codeq (http://host:port)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started: list = []
    pid = None
    try:
        if args.url:
            port = int(args.url.rsplit(":", 1)[1].rstrip("/"))
        else:
            store = StoreServer(appendonly=True).start()
            started.append(store)
            server = CodeqServer("--store-url", store.url, "--log-level", "warning").start()
            started.append(server)
            port, pid = server.port, server.proc.pid
        cpu_before = cpu_seconds(pid) if pid else 0.0
        seconds = uvloop.run(mixed(port, args))
        cpu = cpu_seconds(pid) - cpu_before if pid else float("nan")
    finally:
        for proc in reversed(started):
            proc.stop()
            if isinstance(proc, StoreServer):
                proc.cleanup()
    figures = {"tasks": args.tasks, "seconds": round(seconds, 2),
               "tasks_per_s": round(args.tasks / seconds), "server_cpu_ms_per_task":
               round(1000 * cpu / args.tasks, 3)}
    print(json.dumps(figures) if args.json else
          f"{figures['tasks_per_s']:,} tasks/s mixed ({args.tasks} tasks, {args.lanes} lanes, "
          f"{args.inflight} creates in flight, batch {args.batch}); codeq serve CPU "
          f"{figures['server_cpu_ms_per_task']} ms/task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
