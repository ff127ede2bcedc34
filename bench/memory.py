"""Store memory per queued task: Redis' used_memory before and after N tasks.

Starts its own redis-server (append-only on) and an engine on it, creates N
ready tasks with a payload of --payload-bytes (in batches of 100, one queue),
and prints the memory per task and per task beyond its payload. Stops the
store it started by PID.

    python bench/memory.py --tasks 100000 --payload-bytes 64
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codeq._core import Client
from codeq.config import Settings
from codeq.engine import Engine, Notifier
from codeq.schemas import CreateTask, request_decoders
from tests.support import StoreServer


def used_memory(store: StoreServer) -> int:
    with store.client() as view:
        return int(view.info("memory")["used_memory"])


async def fill(url: str, tasks: int, payload_bytes: int) -> None:
    engine = Engine(Client(url), Notifier(url), Settings())
    await engine.open(loops=False)
    # A JSON string of exactly payload_bytes, quotes included.
    body = json.dumps({"command": "memory", "payload": "x" * (payload_bytes - 2)}).encode()
    item = request_decoders[CreateTask].decode(body)
    for start in range(0, tasks, 100):
        await engine.create_many("default", [item] * min(100, tasks - start))
    await engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=64)
    args = parser.parse_args()
    store = StoreServer(kind="redis", appendonly=True).start()
    try:
        # The queue's number and registries exist before the measure starts.
        uvloop.run(fill(store.url, 1, args.payload_bytes))
        before = used_memory(store)
        uvloop.run(fill(store.url, args.tasks, args.payload_bytes))
        after = used_memory(store)
    finally:
        store.cleanup()
    per_task = (after - before) / args.tasks
    print(f"{args.tasks:,} queued tasks, payload {args.payload_bytes} B: {per_task:.0f} B per "
          f"task, {per_task - args.payload_bytes:.0f} B beyond its payload")
    return 0


if __name__ == "__main__":
    sys.exit(main())
