"""Idle cost and claim latency with many queues vs few.

For each queue count, starts its own store and ``codeq serve`` (one process,
default settings) on free loopback ports, leaves one finished task (retained)
in each of N commands, then measures, with nothing else to do, the CPU of the
codeQ process and of the store and the store's commands per second, and
finally the latency of claims on one busy command. Stops everything it
started by PID.

    python bench/idle.py --queues 10 20000 --idle-seconds 10
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

from bench.load import Connection
from tests.support import STORE_KIND, CodeqServer, StoreServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WORKER = "X-Worker-Id: idle-bench\r\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def fill(port: int, queues: int, clients: int = 32) -> None:
    """Leave one finished task in each of ``queues`` commands."""
    pending = list(range(queues))

    async def worker() -> None:
        conn = Connection("127.0.0.1", port)
        await conn.open()
        while pending:
            command = f"idle.{pending.pop()}"
            body = json.dumps({"command": command, "payload": {"n": 1}}).encode()
            status, _ = await conn.request("POST", "/v1/codeq/tasks", body)
            assert status == 202, status
            claim = json.dumps({"commands": [command]}).encode()
            status, data = await conn.request("POST", "/v1/codeq/tasks/claim", claim, WORKER)
            assert status == 200, status
            task = json.loads(data)
            done = json.dumps({"status": "COMPLETED", "leaseId": task["leaseId"]}).encode()
            status, _ = await conn.request("POST", f"/v1/codeq/tasks/{task['id']}/result",
                                           done, WORKER)
            assert status == 200, status
        conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))


async def claim_latency(port: int, claims: int, clients: int = 8) -> dict[str, float]:
    """Create and claim ``claims`` tasks of one command; return claim p50/p99 (ms)."""
    latencies: list[float] = []
    budget = [claims]
    create = json.dumps({"command": "busy", "payload": {"n": 1}}).encode()
    claim = json.dumps({"commands": ["busy"]}).encode()

    async def worker() -> None:
        conn = Connection("127.0.0.1", port)
        await conn.open()
        while budget[0] > 0:
            budget[0] -= 1
            await conn.request("POST", "/v1/codeq/tasks", create)
            started = time.perf_counter()
            status, _ = await conn.request("POST", "/v1/codeq/tasks/claim", claim, WORKER)
            latencies.append(time.perf_counter() - started)
            assert status in (200, 204), status
        conn.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": round(cuts[49] * 1000, 2), "p99": round(cuts[98] * 1000, 2)}


def measure(queues: int, idle_seconds: float, claims: int) -> dict:
    store = StoreServer(appendonly=True).start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning").start()
    try:
        assert server.proc is not None and store.proc is not None
        uvloop.run(fill(server.port, queues))
        time.sleep(2)  # let the upkeep the fill caused settle
        with store.client() as view:
            ops_before = int(view.info("stats")["total_commands_processed"])
        before = cpu_seconds(server.proc.pid), cpu_seconds(store.proc.pid)
        time.sleep(idle_seconds)
        after = cpu_seconds(server.proc.pid), cpu_seconds(store.proc.pid)
        with store.client() as view:
            ops = int(view.info("stats")["total_commands_processed"]) - ops_before - 1
        latency = uvloop.run(claim_latency(server.port, claims))
    finally:
        server.stop()
        store.cleanup()
    return {
        "queues": queues,
        "codeq_cpu_percent": round(100 * (after[0] - before[0]) / idle_seconds, 1),
        "store_cpu_percent": round(100 * (after[1] - before[1]) / idle_seconds, 1),
        "store_ops_per_s": round(ops / idle_seconds, 1),
        "claim_ms": latency,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, nargs="+", default=[10, 20000],
                        help="queue counts to compare")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--claims", type=int, default=3000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    rows = [measure(n, args.idle_seconds, args.claims) for n in args.queues]
    if args.json:
        print(json.dumps({"store": STORE_KIND, "rows": rows}))
        return 0
    print(f"store: {STORE_KIND}, idle for {args.idle_seconds:g} s, then {args.claims} claims")
    print(f"{'queues':>8}{'codeq CPU':>11}{'store CPU':>11}{'store ops/s':>13}"
          f"{'claim p50':>11}{'claim p99':>11}")
    for r in rows:
        print(f"{r['queues']:>8}{r['codeq_cpu_percent']:>10}%{r['store_cpu_percent']:>10}%"
              f"{r['store_ops_per_s']:>13}{r['claim_ms']['p50']:>9} ms{r['claim_ms']['p99']:>8} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
