"""Jepsen-style chaos run: count lost tasks and duplicate executions under faults.

Starts a store (``--store single``: one redis-server, append-only with
``appendfsync everysec``; ``--store cluster``: a Redis Cluster of 3 masters and
3 replicas, codeQ started with ``--store-wait-replicas 1``), ``--servers``
``codeq serve`` processes on it, ``--workers`` worker processes (this script
in ``--role worker``, each running ``--slots`` claim loops) and, in this
process, ``--producers`` producers. For ``--seconds`` a controller injects one
fault at a time, every few seconds: SIGKILL a codeq server and restart it on
its port; SIGKILL the store (single: the redis-server, restarted on its data
dir; cluster: one current master, restarted once its replica took over, so it
rejoins as a replica) and wait for it to serve again; SIGSTOP a worker process
past its lease, then SIGCONT it.

Producers create tasks over HTTP, round-robin over the servers, each with a
unique idempotency key (also in the payload), retrying the same key on another
server after a connection error or a 5xx; a create is acknowledged by a 202
(or 200). Workers claim with long polls, "execute" a task (an event with the
server's lease grant time and ``leaseUntil``, appended to a JSON-lines file),
work a few ms and submit COMPLETED with the lease id.

At the end producers stop, workers drain, and every acknowledged task is read
back. The verdict fails (non-zero exit) on: a lost task (acknowledged, neither
COMPLETED nor dead-lettered), an execution granted while an earlier execution
of the same task still held a valid lease, a redelivery after an accepted
result, two tasks for one idempotency key, or an HTTP 5xx other than 503.
Duplicate executions after a lease expiry (a stopped worker) are allowed:
delivery is at-least-once. Stops every process it started by PID.

    python bench/chaos.py --store single --seconds 60
    python bench/chaos.py --store cluster --seconds 60 --json chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from codeq._core import key_slot
from tests.support import ClusterStore, CodeqServer, StoreServer, wait_until

API = "/v1/codeq"
# Errors that leave the outcome of a request unknown: it may or may not have
# been applied, so a create or result is retried (same key, same lease id).
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
KINDS = ("kill-server", "kill-store", "stop-worker")
DRAIN_SECONDS = 60.0
# Refusals that are answers, not errors: a result after the lease was lost, a
# queue or task that is gone (a lost task is counted as lost, not here).
EXPECTED_4XX = {("result", "403"), ("result", "404"), ("result", "409"),
                ("admin", "404"), ("read", "404")}


def epoch(stamp: str) -> float:
    """An RFC 3339 time of the API as Unix seconds."""
    return datetime.fromisoformat(stamp).timestamp()


class Http:
    """JSON over one aiohttp session (httpx's async pool costs several times more
    CPU per request, and this box runs the servers too)."""

    def __init__(self, connections: int, timeout: float) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=1.0))

    async def call(self, method: str, url: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """The status and the decoded body (None when empty); TRANSPORT_ERRORS raise."""
        async with self.session.request(method, url, json=body, headers=headers) as resp:
            data = await resp.read()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, data.decode(errors="replace")

    async def close(self) -> None:
        await self.session.close()


class HttpCounts:
    """Responses per operation and status; transport errors as ``conn_error``."""

    def __init__(self) -> None:
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        self.samples: dict[str, list[str]] = {}  # "op status" -> the first few 5xx bodies

    def add(self, op: str, outcome: int | str, answer: Any = None) -> None:
        self.counts[op][str(outcome)] += 1
        if isinstance(outcome, int) and outcome >= 500:
            kept = self.samples.setdefault(f"{op} {outcome}", [])
            if len(kept) < 3:
                kept.append(str(answer)[:300])

    def merge(self, counts: dict[str, dict[str, int]], samples: dict[str, list[str]]) -> None:
        for op, counter in counts.items():
            self.counts[op].update(counter)
        for name, bodies in samples.items():
            kept = self.samples.setdefault(name, [])
            kept.extend(bodies[:3 - len(kept)])

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {op: dict(c) for op, c in self.counts.items()}


# ---------------------------------------------------------------- worker role


async def worker_main(args: argparse.Namespace) -> int:
    """Run ``--slots`` claim loops until SIGTERM; append one line per execution."""
    urls = args.urls.split(",")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    counts = HttpCounts()
    with open(args.events, "a") as events:
        client = Http(args.slots * 2, args.wait + 5)
        try:
            await asyncio.gather(*(
                claim_loop(client, urls, f"{args.name}-{slot}", slot, args, stopping, counts,
                           events)
                for slot in range(args.slots)))
        finally:
            await client.close()
        events.write(json.dumps({"type": "stats", "worker": args.name,
                                 "http": counts.as_dict(), "samples": counts.samples}) + "\n")
    return 0


async def claim_loop(client: Http, urls: list[str], worker: str, slot: int,
                     args: argparse.Namespace, stopping: asyncio.Event, counts: HttpCounts,
                     events: Any) -> None:
    """Claim, execute, submit the result; over the servers in turn."""
    headers = {"X-Worker-Id": worker}
    body = {"commands": [args.command], "leaseSeconds": args.lease, "waitSeconds": args.wait}
    turn = itertools.count(slot)
    while not stopping.is_set():
        base = urls[next(turn) % len(urls)]
        sent = time.time()
        try:
            status, task = await client.call("POST", f"{base}{API}/tasks/claim", body, headers)
        except TRANSPORT_ERRORS:
            counts.add("claim", "conn_error")
            await asyncio.sleep(0.1)
            continue
        counts.add("claim", status, task)
        if status == 204:
            continue
        if status != 200:
            await asyncio.sleep(0.1)
            continue
        await execute(client, urls, worker, turn, task, sent, args, counts, events)


async def execute(client: Http, urls: list[str], worker: str,
                  turn: itertools.count[int], task: dict[str, Any], sent: float,
                  args: argparse.Namespace, counts: HttpCounts, events: Any) -> None:
    """Record one execution of ``task`` and submit its result until an answer is sure."""
    received = time.time()
    lease_until = epoch(task["leaseUntil"])
    event: dict[str, Any] = {
        "type": "exec", "task": task["id"], "key": json.loads(task["payload"]).get("key"),
        "worker": worker, "leaseId": task["leaseId"], "attempts": task["attempts"],
        # The claim script sets updatedAt to its own clock and leaseUntil to that
        # plus the lease: the grant time as the store saw it.
        "granted": epoch(task["updatedAt"]), "leaseUntil": lease_until,
        "claimSent": sent, "claimReceived": received,
    }
    await asyncio.sleep(random.uniform(args.work_min, args.work_max))
    event["finished"] = time.time()
    headers = {"X-Worker-Id": worker, "X-Lease-Id": task["leaseId"]}
    body = {"status": "COMPLETED", "result": {"key": event["key"], "worker": worker},
            "leaseId": task["leaseId"]}
    # Past this the answer can only be a refusal: stop retrying then.
    give_up = max(lease_until, time.time()) + 15
    ambiguous = False
    outcome = "unknown"
    event["resultSent"] = time.time()
    while time.time() < give_up:
        base = urls[next(turn) % len(urls)]
        try:
            status, answer = await client.call(
                "POST", f"{base}{API}/tasks/{task['id']}/result", body, headers)
        except TRANSPORT_ERRORS:
            counts.add("result", "conn_error")
            ambiguous = True
            await asyncio.sleep(0.1)
            continue
        counts.add("result", status, answer)
        if status == 200:
            outcome = "ok"
            break
        if status >= 500:
            ambiguous = True
            await asyncio.sleep(0.1)
            continue
        code = answer.get("code", "") if isinstance(answer, dict) else ""
        outcome = f"refused:{status}:{code}"
        break
    event.update(result=outcome, resultAnswered=time.time(), ambiguousBefore=ambiguous)
    events.write(json.dumps(event) + "\n")
    events.flush()


# ---------------------------------------------------------------- the run


@dataclass
class Fault:
    at: float  # seconds since the start of the run
    wall: str  # when, as the codeq and store logs put it
    kind: str
    detail: str
    recovered_after: float = 0.0


@dataclass
class Ledger:
    """What the producers were told, per idempotency key."""

    acked: dict[str, str] = field(default_factory=dict)  # key -> task id
    ids_per_key: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    ack_status: collections.Counter[int] = field(default_factory=collections.Counter)
    retried_keys: int = 0
    unacknowledged: list[str] = field(default_factory=list)
    rejected: list[tuple[str, int, str]] = field(default_factory=list)


class ChaosRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.command = f"chaos.{os.getpid()}"
        self.tmp = tempfile.mkdtemp(prefix="codeq-chaos-")
        self.store: StoreServer | ClusterStore | None = None
        self.servers: list[CodeqServer] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stopped_worker: subprocess.Popen[bytes] | None = None
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.counts = HttpCounts()
        self.ledger = Ledger()
        self.started = 0.0
        self.stop_faults = threading.Event()

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    @property
    def urls(self) -> list[str]:
        return [s.base for s in self.servers]

    # -------------------------------------------------------------- processes

    def start(self) -> None:
        args = self.args
        # Each process is known to the run before it starts, so stop() finds it
        # whatever fails next.
        if args.store == "single":
            self.store = StoreServer("redis", appendonly=True)
            self.store.start()
            serve = ["--store-url", self.store.url]
        else:
            # Started once healthy: every replica synced (one that never did
            # cannot take over, and WAIT 1 would time out).
            self.store = ClusterStore(masters=3, node_timeout=1000)
            self.store.start()
            serve = ["--store-url", self.store.url, "--store-wait-replicas", "1"]
        serve += ["--queue-shards", str(args.queue_shards),
                  "--tick-interval", "0.1", "--backoff-policy", "fixed",
                  "--backoff-base-seconds", "0.2", "--log-level", args.server_log_level]
        for _ in range(args.servers):
            self.servers.append(CodeqServer(*serve))
            self.servers[-1].start()
        for n in range(args.workers):
            name = f"w{n}"
            log = open(os.path.join(self.tmp, f"{name}.log"), "ab")  # noqa: SIM115
            self.workers.append(subprocess.Popen(
                [sys.executable, __file__, "--role", "worker", "--urls", ",".join(self.urls),
                 "--command", self.command, "--lease", str(args.lease),
                 "--slots", str(args.slots), "--wait", str(args.wait),
                 "--work-min", str(args.work_min), "--work-max", str(args.work_max),
                 "--name", name, "--events", os.path.join(self.tmp, f"{name}.jsonl")],
                stdout=log, stderr=subprocess.STDOUT))
            log.close()

    def stop(self) -> None:
        """Stop every process this run started, by PID, whatever state it is in."""
        self.stop_workers()
        for server in self.servers:
            server.stop()
        if self.store is not None:
            self.store.cleanup()

    def stop_workers(self) -> None:
        """SIGTERM the workers: they finish what they hold, write their counts, exit."""
        if self.stopped_worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.stopped_worker.pid, signal.SIGCONT)
        running = [p for p in self.workers if p.poll() is None]
        for n, proc in enumerate(self.workers):
            if proc not in running and proc.returncode != 0:
                log = Path(self.tmp, f"w{n}.log").read_text()[-2000:]
                self.errors.append(f"worker {proc.pid} exited with {proc.returncode}: {log}")
        for proc in running:
            proc.terminate()
        grace = self.args.wait + self.args.work_max + 10
        for proc in running:
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.errors.append(f"worker {proc.pid} still running {grace:.0f} s after "
                                   "SIGTERM; killed")
                proc.kill()
                proc.wait()

    # -------------------------------------------------------------- faults

    def controller(self) -> None:
        """Inject one fault at a time until told to stop; each is recovered from
        before the next (cluster: healthy again)."""
        bag: list[str] = []
        while not self.stop_faults.wait(self.rng.uniform(2.0, 5.0)):
            # A shuffled bag, not independent draws: every kind comes up in a short run.
            if not bag:
                bag = self.rng.sample(self.args.faults, len(self.args.faults))
            kind = bag.pop()
            at = time.monotonic() - self.started
            wall = datetime.now().isoformat(sep=" ", timespec="milliseconds")
            t0 = time.monotonic()
            try:
                detail = getattr(self, "fault_" + kind.replace("-", "_"))()
            except Exception as exc:  # a fault that cannot be recovered from ends the faults
                self.errors.append(f"{kind} at {at:.1f} s: {type(exc).__name__}: {exc}")
                self.log(f"FAULT {kind} failed: {exc}; restarting what is down, no more faults")
                self.restore()
                return
            fault = Fault(round(at, 2), wall, kind, detail, round(time.monotonic() - t0, 2))
            self.faults.append(fault)
            self.log(f"fault {kind} at {at:.1f} s: {detail} (recovered in "
                     f"{fault.recovered_after:.1f} s)")

    def restore(self) -> None:
        """Start every store node and server that is not running."""
        nodes = self.store.nodes if isinstance(self.store, ClusterStore) else [self.store]
        for proc in [*nodes, *self.servers]:
            if proc is not None and (proc.proc is None or proc.proc.poll() is not None):
                try:
                    proc.start()
                except Exception as exc:
                    self.errors.append(f"restarting :{proc.port}: {type(exc).__name__}: {exc}")

    def fault_kill_server(self) -> str:
        server = self.rng.choice(self.servers)
        assert server.proc is not None
        pid = server.proc.pid
        server.proc.kill()
        server.proc.wait()
        server.proc = None
        down = self.rng.uniform(0.3, 1.5)
        time.sleep(down)
        t0 = time.monotonic()
        server.start()  # the same port; the log file is appended to
        return (f"SIGKILL codeq serve pid {pid} :{server.port}, restarted after {down:.1f} s, "
                f"serving {time.monotonic() - t0:.1f} s later")

    def fault_kill_store(self) -> str:
        down = self.rng.uniform(0.5, 2.0)
        if isinstance(self.store, StoreServer):
            store = self.store
            assert store.proc is not None
            pid = store.proc.pid
            store.kill()
            time.sleep(down)
            store.start()  # same port, same dir: recovers from its append-only file
            return f"SIGKILL redis-server pid {pid} :{store.port}, restarted after {down:.1f} s"
        cluster = self.store
        assert isinstance(cluster, ClusterStore)
        masters = cluster.masters()
        # Half the time the master of the queue's hash tag, where its tasks live
        # (with one shard the other masters hold only the registry and indexes).
        queue_master = cluster.master_of(key_slot(f"{{default:{self.command}}}"))
        node = (queue_master if queue_master in masters and self.rng.random() < 0.5
                else self.rng.choice(masters))
        assert node.proc is not None
        pid = node.proc.pid
        node.kill()
        node.proc = None  # out of ClusterStore.healthy()/masters() while it is down
        t0 = time.monotonic()
        wait_until(lambda: failed_over(cluster, node), 30, interval=0.1,
                   what=f"a replica to take over from :{node.port}")
        failover = time.monotonic() - t0
        time.sleep(down)
        node.start()
        wait_until(cluster.healthy, 30, interval=0.1,
                   what=f"node :{node.port} to rejoin as a synced replica")
        what = "the queue's master" if node is queue_master else "master"
        return (f"SIGKILL {what} pid {pid} :{node.port}, failover in {failover:.1f} s, "
                f"restarted {down:.1f} s later as a replica")

    def fault_stop_worker(self) -> str:
        proc = self.rng.choice([p for p in self.workers if p.poll() is None])
        pause = self.args.lease + self.rng.uniform(0.5, 2.0)
        self.stopped_worker = proc
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(pause)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            self.stopped_worker = None
        return f"SIGSTOP worker pid {proc.pid} for {pause:.1f} s (lease {self.args.lease} s)"

    # -------------------------------------------------------------- producers

    async def produce(self, client: Http, index: int, keys: itertools.count[int],
                      end: float) -> None:
        """Create tasks at this producer's share of ``--rate`` until ``end``."""
        gap = self.args.producers / self.args.rate
        turn = itertools.count(index)
        next_at = time.monotonic()
        while time.monotonic() < end:
            key = f"{self.command}-{next(keys)}"
            await self.create(client, key, turn, end + 30)
            next_at = max(next_at + gap, time.monotonic() - gap)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def create(self, client: Http, key: str, turn: itertools.count[int],
                     give_up: float) -> None:
        """One create, retried with the same key until acknowledged or ``give_up``."""
        body = {"command": self.command, "payload": {"key": key}, "idempotencyKey": key,
                "maxAttempts": self.args.max_attempts}
        tries = 0
        while time.monotonic() < give_up:
            tries += 1
            base = self.urls[next(turn) % len(self.urls)]
            try:
                status, answer = await client.call("POST", f"{base}{API}/tasks", body)
            except TRANSPORT_ERRORS:
                self.counts.add("create", "conn_error")
                await self.pause(tries)
                continue
            self.counts.add("create", status, answer)
            if status in (200, 202):
                task_id = answer["id"]
                self.ledger.acked[key] = task_id
                self.ledger.ids_per_key[key].add(task_id)
                self.ledger.ack_status[status] += 1
                self.ledger.retried_keys += tries > 1
                return
            if status >= 500 or status == 429:
                await self.pause(tries)
                continue
            self.ledger.rejected.append((key, status, str(answer)[:200]))
            return
        self.ledger.unacknowledged.append(key)

    async def pause(self, tries: int) -> None:
        """Retry on the next server at once; once every server failed, wait a little."""
        if tries % len(self.servers) == 0:
            await asyncio.sleep(0.1)

    async def drive(self) -> None:
        """Producers for ``--seconds`` beside the fault controller (a thread)."""
        args = self.args
        end = time.monotonic() + args.seconds
        controller = threading.Thread(target=self.controller, name="chaos-controller")
        controller.start()
        keys = itertools.count()
        client = Http(args.producers * 2, 10.0)
        try:
            producers = [asyncio.create_task(self.produce(client, i, keys, end))
                         for i in range(args.producers)]
            while not all(p.done() for p in producers):
                left = end - time.monotonic()
                await asyncio.wait(producers, timeout=min(10.0, max(0.5, left)))
                if time.monotonic() < end:
                    self.log(f"acknowledged {len(self.ledger.acked)} creates")
                else:
                    self.stop_faults.set()
            await asyncio.gather(*producers)
        finally:
            self.stop_faults.set()
            await asyncio.to_thread(controller.join)
            await client.close()
        self.log(f"producers done: {len(self.ledger.acked)} acknowledged, faults stopped")

    # -------------------------------------------------------------- the end

    async def get(self, client: Http, path: str, op: str,
                  give_up: float = 30.0) -> tuple[int, Any]:
        """GET ``path`` from the servers in turn until an answer below 500;
        (0, None) when none came by ``give_up`` seconds."""
        deadline = time.monotonic() + give_up
        for n in itertools.count():
            base = self.urls[n % len(self.urls)]
            try:
                status, answer = await client.call("GET", f"{base}{API}{path}")
            except TRANSPORT_ERRORS:
                self.counts.add(op, "conn_error")
            else:
                self.counts.add(op, status, answer)
                if status < 500:
                    return status, answer
            if time.monotonic() > deadline:
                return 0, None
            await asyncio.sleep(0.1)
        return 0, None

    async def drain(self) -> bool:
        """Wait until the queue holds nothing ready, delayed or in progress."""
        bound = DRAIN_SECONDS + self.args.lease
        deadline = time.monotonic() + bound
        client = Http(4, 10.0)
        try:
            while time.monotonic() < deadline:
                status, q = await self.get(client, f"/admin/queues/{self.command}", "admin")
                if status == 200 and q["ready"] + q["delayed"] + q["inProgress"] == 0:
                    return True
                if status == 404:
                    return True  # no task left in it: the queue left the registry
                await asyncio.sleep(0.25)
        finally:
            await client.close()
        self.errors.append(f"the queue did not drain within {bound:.0f} s")
        return False

    async def read_back(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Every acknowledged task as the API has it now, and the DLQ's ids."""
        tasks: dict[str, dict[str, Any]] = {}
        gate = asyncio.Semaphore(32)
        client = Http(32, 10.0)
        try:
            async def one(task_id: str) -> None:
                async with gate:
                    status, task = await self.get(client, f"/tasks/{task_id}", "read")
                tasks[task_id] = task if status == 200 else {"status": f"HTTP {status}"}

            await asyncio.gather(*(one(i) for i in set(self.ledger.acked.values())))
            dlq: set[str] = set()
            cursor: str | None = None
            while True:
                path = f"/admin/queues/{self.command}/dlq?limit=500"
                status, page = await self.get(
                    client, path + (f"&cursor={cursor}" if cursor else ""), "admin")
                if status != 200:
                    if status != 404:
                        self.errors.append(f"could not read the DLQ: HTTP {status} {page}")
                    break
                dlq.update(t["id"] for t in page["tasks"])
                cursor = page.get("nextCursor")
                if not cursor:
                    break
        finally:
            await client.close()
        return tasks, dlq

    def run(self) -> int:
        self.started = time.monotonic()
        ok = False
        try:
            self.start()
            self.log(f"store {self.args.store}, {len(self.servers)} codeq servers "
                     f"{[s.port for s in self.servers]}, {len(self.workers)} worker processes")
            uvloop.run(self.drive())
            t0 = time.monotonic()
            drained = uvloop.run(self.drain())
            self.log(f"drain {'done' if drained else 'timed out'} in "
                     f"{time.monotonic() - t0:.1f} s")
            self.stop_workers()
            tasks, dlq = uvloop.run(self.read_back())
            self.log(f"read back {len(tasks)} tasks, {len(dlq)} in the DLQ")
            ok = True
        finally:
            if not ok:
                self.dump_logs()
            self.stop()
        report = analyze(self, tasks, dlq)
        print_report(report)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(report, indent=2) + "\n")
        if report["verdict"] != "PASS":
            self.dump_logs()
            print(f"kept for inspection: {self.tmp} and the codeq logs "
                  f"{[s.log_path for s in self.servers]}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            for server in self.servers:
                Path(server.log_path).unlink(missing_ok=True)
        return 0 if report["verdict"] == "PASS" else 1

    def dump_logs(self) -> None:
        for server in self.servers:
            print(f"--- codeq serve :{server.port} log ({server.log_path}), last lines")
            print("\n".join(server.log().splitlines()[-30:]))

    def events(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The workers' executions and their final HTTP counts."""
        execs, stats = [], []
        for n in range(len(self.workers)):
            path = Path(self.tmp) / f"w{n}.jsonl"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                event = json.loads(line)
                (execs if event["type"] == "exec" else stats).append(event)
        return execs, stats


def failed_over(cluster: ClusterStore, dead: StoreServer) -> bool:
    """Whether every live node sees every slot served, none by ``dead``."""
    for node in cluster.live():
        client = node.client()
        try:
            info = client.execute_command("CLUSTER", "INFO").decode()
            nodes = client.execute_command("CLUSTER", "NODES").decode()
        except Exception:
            return False
        finally:
            client.close()
        if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
            return False
        for line in nodes.splitlines():
            fields = line.split()
            if fields and fields[1].split("@")[0].endswith(f":{dead.port}") and fields[8:]:
                return False  # still holds slots in this node's view
    return True


# ---------------------------------------------------------------- analysis


def analyze(run: ChaosRun, tasks: dict[str, dict[str, Any]], dlq: set[str]) -> dict[str, Any]:
    """Count loss, duplicates and errors; decide the verdict."""
    args, ledger = run.args, run.ledger
    execs, stats = run.events()
    if len(stats) != len(run.workers):
        run.errors.append(f"{len(run.workers) - len(stats)} worker(s) wrote no final counts "
                          "(crashed?)")
    http = HttpCounts()
    http.merge(run.counts.as_dict(), run.counts.samples)
    for stat in stats:
        http.merge(stat["http"], stat["samples"])

    acked_ids = set(ledger.acked.values())
    statuses = collections.Counter(t.get("status", "?") for t in tasks.values())
    completed = {i for i, t in tasks.items() if t.get("status") == "COMPLETED"}
    dead = {i for i in acked_ids if i in dlq}
    lost = sorted(acked_ids - completed - dead)

    # Idempotency: one task per key, whoever learnt of it (producer or worker).
    ids_per_key = collections.defaultdict(set, {k: set(v) for k, v in ledger.ids_per_key.items()})
    for e in execs:
        ids_per_key[e["key"]].add(e["task"])
    split_keys = sorted(k for k, ids in ids_per_key.items() if len(ids) > 1)

    by_task: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for e in execs:
        by_task[e["task"]].append(e)
    duplicates = {"after_lease_expiry": 0, "overlapping_valid_lease": 0,
                  "after_accepted_result": 0}
    violations: list[dict[str, Any]] = []
    multiple_ok = []
    for task_id, runs in by_task.items():
        runs.sort(key=lambda e: e["granted"])
        if sum(e["result"] == "ok" for e in runs) > 1:
            multiple_ok.append(task_id)
        for j, later in enumerate(runs[1:], start=1):
            earlier = runs[:j]
            # Both times come from the store's clock: the later grant fell inside
            # an earlier lease, so two holders had a valid lease at once.
            overlap = [e for e in earlier if later["granted"] < e["leaseUntil"]]
            accepted = [e for e in earlier if e["result"] == "ok"]
            if overlap:
                kind = "overlapping_valid_lease"
            elif accepted:
                kind = "after_accepted_result"
            else:
                kind = "after_lease_expiry"
            duplicates[kind] += 1
            if kind != "after_lease_expiry":
                violations.append({"kind": kind, "task": task_id, "executions": runs})

    refused = collections.Counter(e["result"].split(":", 1)[1] for e in execs
                                  if e["result"].startswith("refused"))
    refused_in_lease = sum(1 for e in execs if e["result"].startswith("refused")
                           and e["resultAnswered"] < e["leaseUntil"]
                           and not e["ambiguousBefore"])
    unsettled = sum(1 for e in execs if e["result"] == "unknown")
    stale_starts = sum(1 for e in execs if e["claimReceived"] > e["leaseUntil"])
    completed_without_ok = sorted(i for i in completed
                                  if not any(e["result"] == "ok" for e in by_task.get(i, [])))
    never_executed_completed = [i for i in completed if i not in by_task]

    all_outcomes: collections.Counter[str] = collections.Counter()
    for counter in http.counts.values():
        all_outcomes.update(counter)
    other_5xx = {k: v for k, v in all_outcomes.items()
                 if k.isdigit() and int(k) >= 500 and k != "503"}
    unexpected_4xx = {op: {k: v for k, v in c.items()
                           if k.isdigit() and 400 <= int(k) < 500
                           and (op, k) not in EXPECTED_4XX}
                      for op, c in http.counts.items()}
    unexpected_4xx = {op: c for op, c in unexpected_4xx.items() if c}

    failures = []
    if lost:
        failures.append(f"{len(lost)} acknowledged task(s) lost")
    if duplicates["overlapping_valid_lease"]:
        failures.append(f"{duplicates['overlapping_valid_lease']} execution(s) under a lease "
                        "granted while an earlier one was still valid")
    if duplicates["after_accepted_result"]:
        failures.append(f"{duplicates['after_accepted_result']} redelivery(ies) after an "
                        "accepted result")
    if multiple_ok:
        failures.append(f"{len(multiple_ok)} task(s) with two accepted results")
    if split_keys:
        failures.append(f"{len(split_keys)} idempotency key(s) with more than one task")
    if other_5xx:
        failures.append(f"HTTP 5xx other than 503: {other_5xx}")
    if ledger.rejected:
        failures.append(f"{len(ledger.rejected)} create(s) refused with a 4xx")
    if unexpected_4xx:
        failures.append(f"unexpected 4xx: {unexpected_4xx}")
    failures.extend(run.errors)

    log_errors = server_log_errors(run.servers)
    fault_counts = collections.Counter(f.kind for f in run.faults)
    return {
        "config": {"store": args.store, "seconds": args.seconds, "servers": args.servers,
                   "producers": args.producers, "rate": args.rate, "workers": args.workers,
                   "slots": args.slots, "lease": args.lease, "seed": args.seed,
                   "maxAttempts": args.max_attempts, "queueShards": args.queue_shards},
        "faults": {k: fault_counts.get(k, 0) for k in KINDS},
        "faultLog": [f.__dict__ for f in run.faults],
        "tasks": {
            "acknowledged": len(ledger.acked),
            "ackedBy": {str(k): v for k, v in ledger.ack_status.items()},
            "createsRetried": ledger.retried_keys,
            "createsUnacknowledged": len(ledger.unacknowledged),
            "createsRejected": len(ledger.rejected),
            "completed": len(completed),
            "deadLettered": len(dead),
            "lost": len(lost),
            "finalStatuses": dict(statuses),
            "completedWithoutAcceptedResultSeen": len(completed_without_ok),
            "completedNeverExecutedSeen": len(never_executed_completed),
            "splitIdempotencyKeys": len(split_keys),
        },
        "executions": {
            "total": len(execs),
            "tasksExecuted": len(by_task),
            "executedButUnacknowledged": len(set(by_task) - acked_ids),
            "duplicates": sum(duplicates.values()),
            "duplicatesAfterLeaseExpiry": duplicates["after_lease_expiry"],
            "duplicatesOverlappingValidLease": duplicates["overlapping_valid_lease"],
            "duplicatesAfterAcceptedResult": duplicates["after_accepted_result"],
            "tasksWithTwoAcceptedResults": len(multiple_ok),
            "startedAfterLeaseExpired": stale_starts,
            "resultsRefused": sum(refused.values()),
            "resultsRefusedByCode": dict(refused),
            "resultsRefusedWithinLease": refused_in_lease,
            "resultsUnsettled": unsettled,
        },
        "http": {
            "byOperation": http.as_dict(),
            "503": all_outcomes.get("503", 0),
            "connectionErrors": all_outcomes.get("conn_error", 0),
            "other5xx": sum(other_5xx.values()),
            "samples5xx": http.samples,
        },
        "serverLogErrors": log_errors,
        "lostTasks": [{"id": i, "task": tasks.get(i), "executions": by_task.get(i, [])}
                      for i in lost[:20]],
        "violations": violations[:20],
        "splitKeys": {k: sorted(ids_per_key[k]) for k in split_keys[:20]},
        "failures": failures,
        "verdict": "FAIL" if failures else "PASS",
    }


def server_log_errors(servers: list[CodeqServer]) -> dict[str, Any]:
    """ERROR lines of the codeq serve logs, by message (pids and times cut off)."""
    distinct: collections.Counter[str] = collections.Counter()
    for server in servers:
        with contextlib.suppress(OSError):
            lines = Path(server.log_path).read_text().splitlines()
            for n, line in enumerate(lines):
                fields = line.split(" ", 4)
                if len(fields) == 5 and fields[3] in ("ERROR", "CRITICAL"):
                    # The message, and the exception line of a traceback under it.
                    tail = next((x for x in lines[n + 1:n + 40]
                                 if x and not x.startswith((" ", "Traceback"))), "")
                    message = fields[4] if tail.startswith("20") else f"{fields[4]} | {tail}"
                    distinct[message[:240]] += 1
    return {"count": sum(distinct.values()), "distinct": dict(distinct.most_common(8))}


def print_report(r: dict[str, Any]) -> None:
    c, t, e, h = r["config"], r["tasks"], r["executions"], r["http"]

    def row(label: str, value: Any, note: str = "") -> None:
        print(f"  {label:<46}{value!s:>10}  {note}")

    print()
    print(f"chaos: store={c['store']} seconds={c['seconds']} servers={c['servers']} "
          f"producers={c['producers']} rate={c['rate']}/s workers={c['workers']}x{c['slots']} "
          f"lease={c['lease']}s seed={c['seed']}")
    print("faults injected")
    for kind, n in r["faults"].items():
        row(kind, n)
    print("tasks")
    row("acknowledged (202/200)", t["acknowledged"],
        f"by status {t['ackedBy']}; {t['createsRetried']} needed a retry")
    row("creates never acknowledged (gave up)", t["createsUnacknowledged"])
    row("completed", t["completed"])
    row("dead-lettered", t["deadLettered"])
    row("lost (acknowledged, not COMPLETED, not in DLQ)", t["lost"], "must be 0")
    row("idempotency keys with two tasks", t["splitIdempotencyKeys"], "must be 0")
    row("completed, accepted result not seen by worker", t["completedWithoutAcceptedResultSeen"],
        "(answer lost to a fault)")
    print("executions")
    row("total", e["total"], f"of {e['tasksExecuted']} tasks")
    row("duplicate executions", e["duplicates"])
    row("  after the earlier lease expired", e["duplicatesAfterLeaseExpiry"], "allowed")
    row("  overlapping under a valid lease", e["duplicatesOverlappingValidLease"], "must be 0")
    row("  after an accepted result", e["duplicatesAfterAcceptedResult"], "must be 0")
    row("tasks with two accepted results", e["tasksWithTwoAcceptedResults"], "must be 0")
    row("started after their lease had expired", e["startedAfterLeaseExpired"],
        "(stopped worker)")
    row("results refused (lease lost)", e["resultsRefused"], str(e["resultsRefusedByCode"]))
    row("  refused though answered within the lease", e["resultsRefusedWithinLease"])
    row("results never settled", e["resultsUnsettled"])
    print("http")
    row("503 (store unavailable)", h["503"], "expected during faults")
    row("connection errors", h["connectionErrors"], "expected during faults")
    row("5xx other than 503", h["other5xx"], "must be 0")
    for op, counts in sorted(h["byOperation"].items()):
        row(f"  {op}", "", json.dumps(dict(sorted(counts.items()))))
    for name, bodies in sorted(h["samples5xx"].items()):
        print(f"  e.g. {name}: {bodies[0]}")
    logged = r["serverLogErrors"]
    print(f"codeq serve logs: {logged['count']} ERROR line(s)"
          + "".join(f"\n  {n} x {msg}" for msg, n in logged["distinct"].items()))
    for failure in r["failures"]:
        print(f"FAILURE: {failure}")
    for v in r["violations"][:3]:
        print(f"violation: {json.dumps(v)}")
    for lost in r["lostTasks"][:3]:
        print(f"lost: {json.dumps(lost)}")
    print(f"verdict: {r['verdict']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("single", "cluster"), default="single")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of faults and load")
    parser.add_argument("--servers", type=int, default=2, help="codeq serve processes")
    parser.add_argument("--producers", type=int, default=4, help="concurrent producers")
    parser.add_argument("--rate", type=float, default=50.0, help="creates per second, in all")
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--slots", type=int, default=4, help="claim loops per worker process")
    parser.add_argument("--lease", type=float, default=3.0, help="leaseSeconds of each claim")
    parser.add_argument("--queue-shards", type=int, default=1,
                        help="codeq serve --queue-shards (on a cluster, 3 puts a shard of the "
                        "queue on every master)")
    parser.add_argument("--wait", type=float, default=2.0, help="waitSeconds of each claim")
    parser.add_argument("--work-min", type=float, default=0.005, help="shortest work, seconds")
    parser.add_argument("--work-max", type=float, default=0.05, help="longest work, seconds")
    parser.add_argument("--max-attempts", type=int, default=10, help="maxAttempts of each task")
    parser.add_argument("--faults", type=lambda v: v.split(","), default=list(KINDS),
                        help=f"kinds of fault to pick from, comma-separated ({','.join(KINDS)})")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault schedule")
    parser.add_argument("--server-log-level", default="info")
    parser.add_argument("--json", help="write the report as JSON to this path")
    # The worker role: this script run by the chaos run as a worker process.
    parser.add_argument("--role", choices=("run", "worker"), default="run",
                        help=argparse.SUPPRESS)
    for name in ("--urls", "--command", "--events", "--name"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "worker":
        return uvloop.run(worker_main(args))
    if unknown := set(args.faults) - set(KINDS):
        parser.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    return ChaosRun(args).run()


if __name__ == "__main__":
    sys.exit(main())
