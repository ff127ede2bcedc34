"""A queue's slot moved to another master while producers and workers run over
HTTP, by the protocol ``redis-cli --cluster reshard`` speaks: nothing is lost,
nothing is finished twice, and the queue goes on working on its new master."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from codeq.keys import QueueKeys
from tests.cluster.conftest import TENANT, V1, slot_of
from tests.support import ClusterStore, StoreServer, metric, wait_until

BUSY = "migrate.busy"
# What codeQ may answer while a slot moves: a change it could not make now is
# 503 (made or not: the producers retry with the same idempotency key).
EXPECTED = {200, 202, 204, 503}


def redirects(*nodes: StoreServer, kinds: tuple[str, ...] = ("MOVED", "ASK", "TRYAGAIN")) -> int:
    """How many redirect or retry replies the nodes gave (INFO errorstats)."""
    total = 0
    for node in nodes:
        client = node.client()
        try:
            stats = client.info("errorstats")
        finally:
            client.close()
        total += sum(int(stats.get(f"errorstat_{kind}", {}).get("count", 0)) for kind in kinds)
    return total


def redirects_followed(base: str) -> dict[str, float]:
    """codeq_store_redirects_total by kind, from GET /metrics."""
    return {kind: metric(base, "codeq_store_redirects_total", kind=kind)
            for kind in ("moved", "ask", "tryagain")}


class Flow:
    """Producers creating tasks of one command and workers finishing them, over HTTP."""

    def __init__(self, base: str, command: str, producers: int = 3, workers: int = 3) -> None:
        self.base, self.command = base, command
        self.lock = threading.Lock()
        self.created: dict[str, str] = {}        # idempotency key -> task id
        self.claims: Counter[str] = Counter()    # task id -> deliveries
        self.finished: Counter[str] = Counter()  # task id -> results answered 200
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.producing, self.working = threading.Event(), threading.Event()
        self.threads = [threading.Thread(target=self._produce, args=(n,)) for n in range(producers)]
        self.workers = [threading.Thread(target=self._work, args=(n,)) for n in range(workers)]

    def start(self) -> Flow:
        self.producing.set()
        self.working.set()
        for thread in self.threads + self.workers:
            thread.start()
        return self

    def stop_producers(self) -> None:
        self.producing.clear()
        for thread in self.threads:
            thread.join(60)

    def stop(self) -> None:
        self.producing.clear()
        self.working.clear()
        for thread in self.threads + self.workers:
            thread.join(60)

    def _saw(self, what: str, resp: httpx.Response) -> int:
        with self.lock:
            self.statuses[what, resp.status_code] += 1
        if resp.status_code == 503:
            time.sleep(0.02)  # a retry's backoff, as a client's
        return resp.status_code

    def _produce(self, n: int) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as api:
            i = 0
            while self.producing.is_set():
                key = f"p{n}.{i}"
                while True:  # until made: a 503 may or may not have made it
                    resp = api.post(f"{V1}/tasks", json={
                        "command": self.command, "payload": {"key": key}, "idempotencyKey": key})
                    status = self._saw("create", resp)
                    if status != 503:
                        break
                if status != 202:
                    return  # recorded: the test fails on it
                with self.lock:
                    self.created[key] = resp.json()["id"]
                i += 1

    def _work(self, n: int) -> None:
        worker = {"X-Worker-Id": f"w{n}"}
        with httpx.Client(base_url=self.base, timeout=30) as api:
            while self.working.is_set():
                resp = api.post(f"{V1}/tasks/claim/batch", headers=worker, json={
                    "commands": [self.command], "count": 10, "leaseSeconds": 10,
                    "waitSeconds": 1})
                if self._saw("claim", resp) != 200:
                    continue
                for task in resp.json()["tasks"]:
                    with self.lock:
                        self.claims[task["id"]] += 1
                    self._finish(api, worker, task)

    def _finish(self, api: httpx.Client, worker: dict[str, str], task: dict) -> None:
        while True:
            resp = api.post(f"{V1}/tasks/{task['id']}/result", headers=worker, json={
                "status": "COMPLETED", "leaseId": task["leaseId"], "result": task["id"]})
            status = self._saw("result", resp)
            if status == 200:
                with self.lock:
                    self.finished[task["id"]] += 1
            if status != 503:
                return

    def ids(self) -> list[str]:
        with self.lock:
            return list(self.created.values())

    def all_finished(self) -> bool:
        with self.lock:
            return set(self.created.values()) <= set(self.finished)


def test_a_slot_moved_under_load_loses_nothing_and_finishes_nothing_twice(cluster: ClusterStore,
                                                                          codeq):
    slot = slot_of(BUSY)
    source = cluster.master_of(slot)
    target = next(m for m in cluster.masters() if m is not source)
    flow = Flow(codeq.base, BUSY).start()
    try:
        wait_until(lambda: len(flow.finished) >= 50, 30, what="tasks to flow")
        before = {kind: redirects(source, target, kinds=(kind,))
                  for kind in ("MOVED", "ASK", "TRYAGAIN")}
        seen = [redirects(source, target)]

        def traffic_met_the_split() -> None:
            # A request of the flow met the slot half moved since the last batch
            # of keys: TRYAGAIN (a script's keys on both nodes) or ASK. Once
            # every key has left, the old master answers ASK: wait for one.
            if cluster.ask("CLUSTER", "COUNTKEYSINSLOT", str(slot), node=source) == 0:
                asked = redirects(source, kinds=("ASK",))
                wait_until(lambda: redirects(source, kinds=("ASK",)) > asked, 10, 0.005,
                           "an ASK from the old master")
            wait_until(lambda: redirects(source, target) > seen[0], 10, 0.005,
                       "a request to meet the slot half moved")
            seen[0] = redirects(source, target)

        started = time.monotonic()
        keys_moved = cluster.migrate_slot(slot, target, batch=1,
                                          between_batches=traffic_met_the_split)
        split_for = time.monotonic() - started
        assert keys_moved >= 3  # the queue's hash, payloads, ready list at least
        for master in cluster.masters():
            assert cluster.master_of(slot, node=master) is target
        # Requests sent to the old master by the map codeQ had are sent on (MOVED).
        wait_until(lambda: redirects(source, kinds=("MOVED",)) > before["MOVED"], 10, 0.01,
                   "a MOVED reply from the old master")
        count_at_move = len(flow.ids())
        wait_until(lambda: len(flow.ids()) >= count_at_move + 100, 30, 0.01,
                   "tasks created after the move")
        flow.stop_producers()
        wait_until(flow.all_finished, 30, 0.05, "every created task to be finished")
    finally:
        flow.stop()

    statuses = dict(flow.statuses)
    assert {status for _, status in statuses} <= EXPECTED, statuses
    ids = flow.ids()
    assert len(set(ids)) == len(ids), "two idempotency keys answered with one task"
    twice = {i: n for i, n in flow.finished.items() if n > 1}
    assert not twice, f"finished twice: {twice}"
    assert set(flow.finished) == set(ids), "finished tasks nobody created"
    # Every task is on the new master now, its result recorded; the old one holds
    # nothing of the slot.
    on_target = target.client()
    q = QueueKeys(TENANT, BUSY)
    assert on_target.hlen(q.results) == len(ids)
    assert all(on_target.hexists(q.tasks, i) for i in ids[count_at_move:])
    on_target.close()
    assert cluster.ask("CLUSTER", "COUNTKEYSINSLOT", str(slot), node=source) == 0
    # Every redirect the protocol has was given, and followed.
    after = {kind: redirects(source, target, kinds=(kind,)) - n for kind, n in before.items()}
    assert all(after.values()), after
    # ... and counted in codeQ's metrics (each process' counts up to 1 s old).
    followed = wait_until(lambda: all((n := redirects_followed(codeq.base)).values()) and n,
                          5, 0.1, "the redirects in /metrics")
    assert all(followed[kind.lower()] <= n for kind, n in after.items()), (followed, after)
    print(f"{keys_moved} keys moved in {split_for:.2f} s; {len(ids)} tasks, "
          f"{len(ids) - count_at_move} after the move; redirects {after}; answers {statuses}")
    redelivered = {i: n for i, n in flow.claims.items() if n > 1}
    # A claim is redelivered only after a claim answered 503 (its lease then ran out).
    assert not redelivered or statuses.get(("claim", 503)), redelivered
