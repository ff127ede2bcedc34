"""codeQ adapter: an HTTP client of the `codeq serve` the orchestrator started.

The orchestrator starts `codeq serve --workers 1` (installed into this venv from the
checkout) on a free port with the harness's redis-server as its store, a fresh one
before enqueue and before mixed.  Redis is flushed before each, so every phase uses
the one command "bench" (tenant "default").
Producer: POST /v1/codeq/tasks {"command": "bench", "payload": payload}, expecting 202.
  variant ""    http.client, one create at a time over one keep-alive connection
  variant "p50" aiohttp, BENCH_PRODUCER_CONCURRENCY (50) creates in flight
  variant "raw" the minimal asyncio client below, one create at a time
  variant "batch" (added in codeQ's copy of the harness) the raw client, POST
                /tasks/batch of BATCH tasks, BATCH_INFLIGHT batches in flight
  variant "sdk" (codeQ's copy) codeq.client.Client.create in a loop
  variant "sdk-batch" (codeQ's copy) Client.create_many of BATCH tasks in a loop
Worker of the sdk variants: codeq.worker.Worker, concurrency LANES, a no-op async
handler.
Worker: 1 process, asyncio (uvloop if importable), 50 lanes; each lane loops
claim (lease 60 s, long-poll 5 s; 204 = none) -> run -> result COMPLETED with the
leaseId, on one aiohttp ClientSession (variants "" and "p50") or one raw connection
per lane (variant "raw").  Variant "batch": BATCH_LANES raw lanes, each loops
claim/batch (count BATCH) -> run them -> batch/results.  A lease that expires is
requeued by the server: at-least-once.
On SIGTERM the worker prints one `worker-stats {json}` line: responses per endpoint and
status, errors, tasks per lane.
"""

import asyncio
import collections
import json
import os
import re
import signal
import time

from bench import common

COMMAND, TENANT = "bench", "default"
LANES, LEASE_S, WAIT_S = 50, 60, 5
HOST, PORT = "127.0.0.1", common.CODEQ_PORT
BASE = "http://%s:%d" % (HOST, PORT)
TASKS = "/v1/codeq/tasks"
CLAIM = "/v1/codeq/tasks/claim"
RESULT = "/v1/codeq/tasks/%s/result"
CLAIM_BODY = json.dumps({"commands": [COMMAND], "leaseSeconds": LEASE_S, "waitSeconds": WAIT_S}).encode()
WORKER_ID = "bench-worker-%d" % os.getpid()
HEADERS = {"Content-Type": "application/json"}
WORKER_HEADERS = dict(HEADERS, **{"X-Worker-Id": WORKER_ID})
CLIENT = {"": "aiohttp", "p50": "aiohttp", "raw": "raw asyncio HTTP/1.1 (this adapter)",
          "batch": "raw asyncio HTTP/1.1 (this adapter)", "sdk": "codeq.client / codeq.worker",
          "sdk-batch": "codeq.client / codeq.worker"}[common.VARIANT]
SDK = common.VARIANT.startswith("sdk")
BATCH, BATCH_INFLIGHT, BATCH_LANES = 100, 2, 4
TASKS_BATCH = "/v1/codeq/tasks/batch"
CLAIM_BATCH = "/v1/codeq/tasks/claim/batch"
RESULTS_BATCH = "/v1/codeq/tasks/batch/results"
CLAIM_BATCH_BODY = json.dumps({"commands": [COMMAND], "leaseSeconds": LEASE_S, "waitSeconds": WAIT_S,
                               "count": BATCH}).encode()


def create_body(i):
    return json.dumps({"command": COMMAND, "payload": common.payload(i)}).encode()


def run(main):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: one request at a time,
    JSON body out, Content-Length body back (all that codeQ sends).  Reconnects after an
    error."""

    CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)

    def __init__(self, headers):
        self.head = "".join("%s: %s\r\n" % kv for kv in dict(headers, Host="%s:%d" % (HOST, PORT)).items())
        self.reader = self.writer = None

    async def post(self, path, body):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, PORT)
        try:
            self.writer.write(b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                              % (path.encode(), self.head.encode(), len(body), body))
            head = await self.reader.readuntil(b"\r\n\r\n")
            m = self.CONTENT_LENGTH.search(head)
            data = await self.reader.readexactly(int(m.group(1))) if m else b""
            return int(head[9:12]), data
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def aiohttp_session(pool):
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool))


def aiohttp_post(session, headers):
    async def post(path, body):
        async with session.post(BASE + path, data=body, headers=headers) as r:
            return r.status, await r.read()

    return post


def produce_batches():
    """BATCH_INFLIGHT lanes share one counter; each sends POST /tasks/batch of BATCH."""
    import time

    async def main():
        client_lanes = [RawHttp(HEADERS) for _ in range(BATCH_INFLIGHT)]
        numbers = iter(range(common.FIRST, common.FIRST + common.N))
        state = {"ok": 0, "errors": 0, "first_error": None}

        async def lane(client):
            while True:
                chunk = [i for _, i in zip(range(BATCH), numbers)]
                if not chunk:
                    return
                body = json.dumps({"tasks": [{"command": COMMAND, "payload": common.payload(i)}
                                             for i in chunk]}).encode()
                try:
                    status, data = await client.post(TASKS_BATCH, body)
                    if status != 200:
                        raise RuntimeError("create batch: HTTP %d %r" % (status, data[:200]))
                    bad = [r for r in json.loads(data)["results"] if "task" not in r]
                    if bad:
                        raise RuntimeError("create batch: %r" % bad[0])
                    state["ok"] += len(chunk)
                except Exception as e:
                    state["errors"] += len(chunk)
                    state["first_error"] = state["first_error"] or repr(e)

        c0, t0 = time.process_time(), time.monotonic()
        await asyncio.gather(*(lane(c) for c in client_lanes))
        t1, c1 = time.monotonic(), time.process_time()
        for c in client_lanes:
            c.close()
        common.write_result(common._result(state["ok"], state["errors"], state["first_error"], t0, t1,
                                           c0, c1, "asyncio, %d batches of %d in flight" % (BATCH_INFLIGHT, BATCH)))

    run(main())


def produce_sdk():
    from codeq.client import Client

    with Client(BASE, retries=0) as codeq:
        if common.VARIANT == "sdk":
            common.run_sync_producer(lambda i: codeq.create(COMMAND, common.payload(i)))
            return
        ok, errors, first_error = 0, 0, None
        c0, t0 = time.process_time(), time.monotonic()
        for start in range(common.FIRST, common.FIRST + common.N, BATCH):
            stop = min(start + BATCH, common.FIRST + common.N)
            try:
                out = codeq.create_many({"command": COMMAND, "payload": common.payload(i)}
                                        for i in range(start, stop))
                ok += sum(1 for t in out if not isinstance(t, Exception))
                errors += sum(1 for t in out if isinstance(t, Exception))
            except Exception as e:
                errors += stop - start
                first_error = first_error or repr(e)[:300]
        t1, c1 = time.monotonic(), time.process_time()
        common.write_result(common._result(ok, errors, first_error, t0, t1, c0, c1,
                                           "Client.create_many, batches of %d" % BATCH))


def work_sdk():
    from codeq.worker import Worker

    async def handler(payload, ctx):
        common.handle(payload)

    worker = Worker(BASE, {COMMAND: handler}, concurrency=LANES, worker_id=WORKER_ID,
                    lease_seconds=LEASE_S, wait_seconds=WAIT_S, grace_seconds=5)
    worker.run()  # until SIGTERM
    print("worker-stats " + json.dumps({"processed": worker.processed}), flush=True)


def produce():
    if SDK:
        return produce_sdk()
    if common.VARIANT == "batch":
        return produce_batches()
    if common.VARIANT == "":
        import http.client

        conn = http.client.HTTPConnection(HOST, PORT)

        def create(i):
            conn.request("POST", TASKS, create_body(i), HEADERS)
            r = conn.getresponse()
            data = r.read()
            if r.status != 202:
                raise RuntimeError("create: HTTP %d %r" % (r.status, data[:200]))

        common.run_sync_producer(create)
        conn.close()
        return

    async def main():
        if common.VARIANT == "raw":
            client, session, concurrency = RawHttp(HEADERS), None, 1
            post = client.post
        else:
            client, session, concurrency = None, aiohttp_session(max(50, common.PRODUCER_CONCURRENCY)), None
            post = aiohttp_post(session, HEADERS)

        async def create(i):
            status, data = await post(TASKS, create_body(i))
            if status != 202:
                raise RuntimeError("create: HTTP %d %r" % (status, data[:200]))

        await common.run_async_producer(create, concurrency=concurrency)
        if session:
            await session.close()
        if client:
            client.close()

    run(main())


def work():
    if SDK:
        return work_sdk()
    lanes_n = BATCH_LANES if common.VARIANT == "batch" else LANES
    stats = {"responses": collections.Counter(), "errors": 0, "first_error": None, "tasks_per_lane": [0] * lanes_n}

    async def lane(k, post):
        while True:
            try:
                status, data = await post(CLAIM, CLAIM_BODY)
                stats["responses"]["claim %d" % status] += 1
                if status == 204:
                    continue
                if status != 200:
                    raise RuntimeError("claim: HTTP %d %r" % (status, data[:200]))
                task = json.loads(data)
                common.handle(json.loads(task["payload"]))
                status, data = await post(RESULT % task["id"],
                                          json.dumps({"status": "COMPLETED", "leaseId": task["leaseId"]}).encode())
                stats["responses"]["result %d" % status] += 1
                if status != 200:
                    raise RuntimeError("result: HTTP %d %r" % (status, data[:200]))
                stats["tasks_per_lane"][k] += 1
            except Exception as e:  # count it, back off a little, go on
                stats["errors"] += 1
                stats["first_error"] = stats["first_error"] or repr(e)[:300]
                await asyncio.sleep(0.1)

    async def batch_lane(k, post):
        while True:
            try:
                status, data = await post(CLAIM_BATCH, CLAIM_BATCH_BODY)
                stats["responses"]["claim/batch %d" % status] += 1
                if status == 204:
                    continue
                if status != 200:
                    raise RuntimeError("claim/batch: HTTP %d %r" % (status, data[:200]))
                tasks = json.loads(data)["tasks"]
                for task in tasks:
                    common.handle(json.loads(task["payload"]))
                body = json.dumps({"results": [{"taskId": t["id"], "leaseId": t["leaseId"], "status": "COMPLETED"}
                                               for t in tasks]}).encode()
                status, data = await post(RESULTS_BATCH, body)
                stats["responses"]["batch/results %d" % status] += 1
                if status != 200:
                    raise RuntimeError("batch/results: HTTP %d %r" % (status, data[:200]))
                bad = [r for r in json.loads(data)["results"] if "result" not in r]
                if bad:
                    raise RuntimeError("batch/results: %r" % bad[0])
                stats["tasks_per_lane"][k] += len(tasks)
            except Exception as e:  # count it, back off a little, go on
                stats["errors"] += 1
                stats["first_error"] = stats["first_error"] or repr(e)[:300]
                await asyncio.sleep(0.1)

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if common.VARIANT == "batch":
            session, clients = None, [RawHttp(WORKER_HEADERS) for _ in range(BATCH_LANES)]
            lanes = [asyncio.create_task(batch_lane(k, c.post)) for k, c in enumerate(clients)]
        elif common.VARIANT == "raw":
            session, clients = None, [RawHttp(WORKER_HEADERS) for _ in range(LANES)]
            posts = [c.post for c in clients]
        else:
            session, clients = aiohttp_session(LANES), []
            posts = [aiohttp_post(session, WORKER_HEADERS)] * LANES
        if common.VARIANT != "batch":
            lanes = [asyncio.create_task(lane(k, post)) for k, post in enumerate(posts)]
        await stop.wait()
        for t in lanes:
            t.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        if session:
            await session.close()
        for c in clients:
            c.close()
        per_lane = stats.pop("tasks_per_lane")
        stats["tasks_per_lane"] = {"min": min(per_lane), "max": max(per_lane), "total": sum(per_lane)}
        print("worker-stats " + json.dumps(stats, sort_keys=True), flush=True)

    run(main())


def backlog():
    import redis
    from codeq.keys import QueueKeys

    k = QueueKeys(TENANT, COMMAND)
    r = redis.Redis.from_url(common.REDIS_URL)
    p = r.pipeline(transaction=False)
    for key in k.ready:
        p.llen(key)
    for key in (k.delayed, k.inflight, k.done, k.dlq):
        p.zcard(key)
    *ready, delayed, inflight, done, dlq = p.execute()
    r.close()
    queued = sum(ready)
    return {"queued": queued, "delayed": delayed, "inflight": inflight, "done": done, "dlq": dlq,
            "unfinished": queued + delayed + inflight}


def describe():
    import sys

    try:
        with open(os.path.join(sys.prefix, ".codeq-source")) as f:
            source = dict(ln.rstrip("\n").split("=", 1) for ln in f if "=" in ln)
    except FileNotFoundError:
        source = None
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    producer = {"batch": "raw asyncio HTTP/1.1 client, POST /tasks/batch of %d, %d in flight" % (BATCH, BATCH_INFLIGHT),
                "": "http.client, one create at a time over one keep-alive connection",
                "p50": "aiohttp ClientSession, %d creates in flight" % common.PRODUCER_CONCURRENCY,
                "raw": "raw asyncio HTTP/1.1 client, one create at a time over one keep-alive connection",
                "sdk": "codeq.client.Client.create, one at a time",
                "sdk-batch": "codeq.client.Client.create_many, %d a call" % BATCH}
    return {
        "versions": common.versions("codeq", "aiohttp", "uvloop", "uvicorn", "httptools", "falcon", "msgspec",
                                    "hiredis", "redis"),
        "settings": {
            "server": "codeq serve --host 127.0.0.1 --port <free> --workers 1 --store <harness redis-server>; "
                      "other settings default (tick 0.25 s, retention 24 h, access log off)",
            "codeq_source": source,
            "worker": ("codeq.worker.Worker, concurrency %d, no-op async handler (claim/batch when "
                       "slots are free)" % LANES) if SDK else
                      ("1 process, %s, %d lanes on raw keep-alive connections: claim/batch (count %d) -> run -> "
                       "batch/results" % (loop, BATCH_LANES, BATCH)) if common.VARIANT == "batch" else
                      "1 process, %s, %d lanes on %s: claim -> run -> result" % (
                loop, LANES, "one aiohttp ClientSession (pool %d)" % LANES if common.VARIANT != "raw"
                else "%d raw keep-alive connections" % LANES),
            "concurrency": BATCH_LANES * BATCH if common.VARIANT == "batch" else LANES,
            "claim": json.loads(CLAIM_BODY),
            "producer": producer[common.VARIANT],
            "client": CLIENT,
            "results": "result record kept (retention 24 h default)",
            "ack": "POST result COMPLETED with leaseId; lease %d s, expired leases requeued by the server" % LEASE_S,
        },
    }
