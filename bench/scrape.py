"""Full cycles with /metrics scraped every second, against none, side by side.

One store and ``codeq serve``; rounds alternate between scraping and not,
each running bench/load.py's clients for ``--seconds``. Prints tasks/s and
p50/p99 per endpoint of each round, and the medians. Stops what it started
by PID.

    python bench/scrape.py --clients 32 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import Connection, drive
from tests.support import CodeqServer, StoreServer


async def scraped(port: int, args: argparse.Namespace, command: str) -> tuple[dict, int]:
    scrapes = 0
    stop = asyncio.Event()

    async def scrape() -> None:
        nonlocal scrapes
        conn = Connection("127.0.0.1", port)
        await conn.open()
        while not stop.is_set():
            status, _ = await conn.request("GET", "/metrics")
            assert status == 200
            scrapes += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        conn.close()

    scraper = asyncio.create_task(scrape())
    result = await drive("127.0.0.1", port, args.clients, 10**9, args.seconds, command)
    stop.set()
    await scraper
    return result, scrapes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    store = StoreServer(appendonly=True).start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning").start()
    rates: dict[str, list[float]] = {"none": [], "every 1 s": []}
    try:
        for n in range(args.rounds):
            for case in rates:
                command = f"scrape.{n}.{case[0]}"
                if case == "none":
                    result = uvloop.run(drive("127.0.0.1", server.port, args.clients, 10**9,
                                              args.seconds, command))
                    extra = ""
                else:
                    result, scrapes = uvloop.run(scraped(server.port, args, command))
                    extra = f", {scrapes} scrapes"
                rates[case].append(result["tasks_per_s"])
                cuts = result["latency_ms"]
                print(f"round {n + 1} {case:<10} {result['tasks_per_s']:>8,.0f} tasks/s  "
                      + "  ".join(f"{e} {cuts[e]['p50']:.2f}/{cuts[e]['p99']:.2f} ms"
                                  for e in ("create", "claim", "result")) + extra)
    finally:
        server.stop()
        store.cleanup()
    for case, values in rates.items():
        print(f"median {case:<10} {statistics.median(values):>8,.0f} tasks/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
