"""codeq.worker.Worker against a real codeq serve: outcomes, heartbeats, stopping."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections import Counter

import httpx
import pytest

from codeq.client import Client
from codeq.worker import Worker
from tests.support import CodeqServer, StoreServer, wait_until


@pytest.fixture
def server():
    store = StoreServer().start()
    codeq = CodeqServer("--store-url", store.url, "--log-level", "warning",
                        "--tick-interval", "0.05").start()
    yield codeq
    codeq.stop()
    store.cleanup()


def run_in_thread(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()), daemon=True)
    thread.start()
    wait_until(lambda: worker.loop is not None, what="the worker to start")
    return thread


def test_handlers_succeed_fail_and_outlive_a_short_lease(server):
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def double(payload, ctx):
        with lock:
            runs[ctx.task.id] += 1
        return {"double": payload * 2}

    def flaky(payload, ctx):
        with lock:
            runs[ctx.task.id] += 1
        if ctx.attempts == 1:
            raise ValueError("first try fails")
        return "second try"

    flaky.retry_delay = 0

    async def slow(payload, ctx):
        with lock:
            runs[ctx.task.id] += 1
        await asyncio.sleep(4.5)  # past the 3 s lease: the heartbeats keep it
        return "slow"

    def beat(payload, ctx):
        before = ctx.deadline
        ctx.heartbeat()  # from a handler thread: extends the lease now
        return ctx.deadline > before

    with Client(server.base) as codeq:
        beats = [codeq.create("beat", n).id for n in range(2)]
        ok = [t.id for t in codeq.create_many({"command": "double", "payload": n}
                                              for n in range(945))]
        bad = [t.id for t in codeq.create_many({"command": "flaky", "payload": n}
                                               for n in range(50))]
        slows = [codeq.create("slow", n).id for n in range(3)]
        worker = Worker(server.base, {"double": double, "flaky": flaky, "slow": slow,
                                      "beat": beat},
                        concurrency=20, lease_seconds=3, wait_seconds=1)
        thread = run_in_thread(worker)
        done = codeq.wait_for([*ok, *bad, *slows, *beats], timeout=60)
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert len(done) == 1000
    assert all(done[i].result.result is True for i in beats)
    assert all(done[i].result.status == "COMPLETED" for i in done)
    assert sorted(done[i].result.result["double"] for i in ok) == [2 * n for n in range(945)]
    assert all(runs[i] == 1 and done[i].task.attempts == 1 for i in ok + slows)
    assert all(runs[i] == 2 and done[i].result.result == "second try" for i in bad)


WORKER = r"""
import sys, time
from codeq.worker import Worker

def job(payload, ctx):
    with open(sys.argv[2], "a") as fh:
        fh.write(f"{ctx.task.id} start\n")
    time.sleep(0.1)
    with open(sys.argv[2], "a") as fh:
        fh.write(f"{ctx.task.id} end\n")
    return payload

Worker(sys.argv[1], {"job": job}, concurrency=20, lease_seconds=60, wait_seconds=1,
       grace_seconds=float(sys.argv[3])).run()
"""


def test_sigterm_finishes_or_abandons_and_loses_nothing(server, tmp_path):
    log = tmp_path / "runs.log"
    with Client(server.base) as codeq:
        ids = [t.id for t in codeq.create_many({"command": "job", "payload": n}
                                               for n in range(1000))]
        # A grace shorter than a handler: what runs at the stop is abandoned.
        proc = subprocess.Popen([sys.executable, "-c", WORKER, server.base, str(log), "0.1"])
        wait_until(lambda: log.exists() and log.read_text().count(" end") >= 200, timeout=60,
                   what="some tasks done")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        with httpx.Client(base_url=server.base + "/v1/codeq") as http:
            states = Counter(http.get(f"/tasks/{i}").json()["status"] for i in ids)
        # Nothing is left leased to the stopped worker: done, or claimable again.
        assert set(states) <= {"COMPLETED", "PENDING"} and states["COMPLETED"] >= 200
        # A second worker, with time to finish, does the rest.
        proc = subprocess.Popen([sys.executable, "-c", WORKER, server.base, str(log), "30"])
        try:
            done = codeq.wait_for(ids, timeout=120)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(40) == 0
    assert len(done) == 1000
    ends = Counter(line.split()[0] for line in log.read_text().splitlines()
                   if line.endswith(" end"))
    starts = Counter(line.split()[0] for line in log.read_text().splitlines()
                     if line.endswith(" start"))
    # Every task ran to its end; a second run only for those running at the stop
    # (at most the 20 slots), whose handler threads finished unreported.
    assert all(ends[i] >= 1 for i in ids)
    twice = [i for i in ids if starts[i] > 1]
    assert len(twice) <= 20 and all(starts[i] == 2 for i in twice)
