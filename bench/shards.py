"""One hot command on a 3-master Redis Cluster, its queue over 1, 3 and 6 shards.

Starts a cluster (three masters, three replicas, loopback, temporary dirs)
and, for each shard count, a fresh ``codeq serve --queue-shards N`` on it
(the cluster flushed between): runs the full cycle of single tasks
(bench/load.py's clients) and the batch cycle (bench/mixed.py), and reports
tasks/s with how the masters' CPU was shared (the hot queue on one node, or
spread). Stops everything it started by PID.

    python bench/shards.py --shards 1,3,6 --seconds 15 --server-workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.idle import cpu_seconds
from bench.load import drive
from bench.mixed import mixed
from tests.support import ClusterStore, CodeqServer


def flush(cluster: ClusterStore) -> None:
    client = cluster.client()
    try:
        client.flushall(target_nodes=client.PRIMARIES)
    finally:
        client.close()


def run_one(cluster: ClusterStore, shards: int, args: argparse.Namespace) -> dict:
    flush(cluster)
    masters = cluster.masters()
    server = CodeqServer("--store-url", cluster.url, "--queue-shards", str(shards),
                         "--workers", str(args.server_workers), "--log-level", "warning").start()
    try:
        before = [cpu_seconds(m.proc.pid) for m in masters]
        cycle = uvloop.run(drive("127.0.0.1", server.port, args.clients, 10**9, args.seconds,
                                 f"hot.{shards}"))
        batch_args = argparse.Namespace(tasks=args.batch_tasks, inflight=4, lanes=8,
                                        batch=args.batch)
        batch_seconds = uvloop.run(mixed(server.port, batch_args))
        cpu = [cpu_seconds(m.proc.pid) - b for m, b in zip(masters, before, strict=True)]
    finally:
        server.stop()
    total = sum(cpu) or 1.0
    return {"shards": shards, "cycle_tasks_per_s": round(cycle["tasks_per_s"]),
            "latency_ms": cycle["latency_ms"],
            "batch_tasks_per_s": round(args.batch_tasks / batch_seconds),
            "master_cpu_share": [round(c / total, 2) for c in cpu],
            "master_cpu_seconds": [round(c, 2) for c in cpu]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", default="1,3,6", help="shard counts to run, in order")
    parser.add_argument("--seconds", type=float, default=15.0, help="full-cycle run length")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100, help="tasks a batch request")
    parser.add_argument("--batch-tasks", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds over the shard counts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cluster = ClusterStore()
    rows = []
    try:
        cluster.start()
        for _ in range(args.repeat):
            for shards in (int(n) for n in args.shards.split(",")):
                rows.append(run_one(cluster, shards, args))
                print(json.dumps(rows[-1]) if args.json else
                      f"shards={shards}: full cycle {rows[-1]['cycle_tasks_per_s']:,} tasks/s, "
                      f"batch {rows[-1]['batch_tasks_per_s']:,} tasks/s, masters' CPU share "
                      f"{rows[-1]['master_cpu_share']}", flush=True)
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
