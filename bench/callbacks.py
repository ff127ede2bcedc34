"""The full cycle with result callbacks off and on, side by side.

Three cases, each on a store and ``codeq serve`` of its own, driven by
bench/load.py's clients (create -> claim -> result):

- ``off``: no task has a webhook
- ``on``: every task's webhook is a local receiver that answers 200 at once
- ``hanging``: every task's webhook is a receiver that answers after 10 s
- ``shared``: a quarter of the clients use a command whose webhook hangs
  (10 s), the rest one whose receiver answers at once

Prints tasks/s and p50/p99 per endpoint for each, how many callbacks the
receiver got during the run, and (``on``, ``shared``) how long the last
ones to the answering receiver took to arrive after the run. A slow receiver
must not slow the API (compare ``hanging`` with ``off``), nor the callbacks
to other receivers (``shared``). Stops everything it started by PID.

    python bench/callbacks.py --clients 32 --tasks 10000
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

from bench.load import drive
from codeq.embedded import free_port
from tests.support import CodeqServer, StoreServer

# A receiver answering every POST after a delay; it writes its count to a file.
RECEIVER = r"""
import asyncio, sys, uvloop
delay, count_file = float(sys.argv[2]), sys.argv[3]
count = 0

class Receiver(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        global count
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            count += 1
            asyncio.get_running_loop().call_later(delay, self.answer)
    def answer(self):
        if not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")

async def main():
    loop = asyncio.get_running_loop()
    await loop.create_server(Receiver, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    while True:
        await asyncio.sleep(0.1)
        with open(count_file + ".tmp", "w") as fh:
            fh.write(str(count))
        import os
        os.replace(count_file + ".tmp", count_file)

uvloop.run(main())
"""


class ReceiverProcess:
    def __init__(self, delay: float) -> None:
        self.port = free_port()
        self.count_file = f"/tmp/codeq-bench-receiver-{os.getpid()}-{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(self.port),
                                      str(delay), self.count_file], start_new_session=True)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def count(self) -> int:
        try:
            return int(Path(self.count_file).read_text() or 0)
        except (OSError, ValueError):
            return 0

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)
        Path(self.count_file).unlink(missing_ok=True)


def run_case(name: str, args: argparse.Namespace) -> dict:
    slow = ReceiverProcess(10.0) if name in ("hanging", "shared") else None
    fast = ReceiverProcess(0.0) if name in ("on", "shared") else None
    store = StoreServer(appendonly=True).start()
    server = None
    try:
        server = CodeqServer("--store-url", store.url, "--log-level", "warning",
                             "--webhook-allow", "127.0.0.1/32").start()

        def load(clients: int, tasks: int, command: str, receiver: ReceiverProcess | None):
            return drive("127.0.0.1", server.port, clients, tasks, args.duration, command,
                         receiver.url() if receiver else None)

        if name == "shared":
            quarter = args.clients // 4

            async def both() -> tuple[dict, dict]:
                return await asyncio.gather(
                    load(quarter, args.tasks // 4, "callbacks.shared.slow", slow),
                    load(args.clients - quarter, args.tasks - args.tasks // 4,
                         "callbacks.shared.fast", fast))

            slow_part, result = uvloop.run(both())
            result["tasks_per_s"] += slow_part["tasks_per_s"]
        else:
            result = uvloop.run(load(args.clients, args.tasks, f"callbacks.{name}",
                                     fast or slow))
        if fast is not None:
            # Counted against the tasks that call the answering receiver.
            result["callbacks_during_run"] = fast.count()
            ended = time.monotonic()
            while fast.count() < result["completed"] and time.monotonic() - ended < 60:
                time.sleep(0.05)
            result["callbacks_delivered"] = fast.count()
            result["callbacks_drained_after_s"] = round(time.monotonic() - ended, 2)
        elif slow is not None:
            result["callbacks_during_run"] = slow.count()
        return result
    finally:
        if server is not None:
            server.stop()
        store.cleanup()
        for receiver in (slow, fast):
            if receiver is not None:
                receiver.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cases", default="off,on,hanging,shared")
    args = parser.parse_args()
    results = {name: run_case(name, args) for name in args.cases.split(",")}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'case':<9}{'tasks/s':>9}  {'create p50/p99':>15}  {'claim p50/p99':>15}  "
          f"{'result p50/p99':>15}  callbacks")
    for name, r in results.items():
        cells = [f"{r['latency_ms'][e]['p50']:.2f}/{r['latency_ms'][e]['p99']:.2f}"
                 for e in ("create", "claim", "result")]
        extra = ""
        if "callbacks_during_run" in r:
            extra = f"{r['callbacks_during_run']} during the run"
        if "callbacks_delivered" in r:
            extra += (f", {r['callbacks_delivered']} of {r['completed']} "
                      f"{r['callbacks_drained_after_s']} s after it")
        print(f"{name:<9}{r['tasks_per_s']:>9,.0f}  {cells[0]:>15}  {cells[1]:>15}  "
              f"{cells[2]:>15}  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
