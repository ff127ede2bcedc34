"""codeq serve on a clustered KVRocks (three masters, topology set with CLUSTERX,
as its controller would): routing, long polls on every node, shards."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from codeq._core import key_slot
from tests.support import CodeqServer, StoreServer, find_kvrocks

pytestmark = pytest.mark.skipif(find_kvrocks() is None, reason="no kvrocks binary")

RANGES = ("0-5460", "5461-10922", "10923-16383")


class KvrocksNode(StoreServer):
    def _args(self) -> list[str]:
        return [*super()._args(), "--cluster-enabled", "yes"]


@pytest.fixture(scope="module")
def kvrocks_cluster():
    nodes = [KvrocksNode("kvrocks") for _ in RANGES]
    try:
        for node in nodes:
            node.start()
        ids = [f"{n + 1:040x}" for n in range(len(nodes))]
        topology = "\n".join(f"{i} 127.0.0.1 {node.port} master - {slots}"
                             for i, node, slots in zip(ids, nodes, RANGES, strict=True))
        for node_id, node in zip(ids, nodes, strict=True):
            client = node.client()
            client.execute_command("CLUSTERX", "SETNODEID", node_id)
            client.execute_command("CLUSTERX", "SETNODES", topology, "1")
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


@pytest.fixture(scope="module")
def server(kvrocks_cluster):
    url = "redis+cluster://" + ",".join(n.addr for n in kvrocks_cluster) + "/"
    codeq = CodeqServer("--store-url", url, "--queue-shards", "3", "--tick-interval", "0.05",
                        "--log-level", "warning").start()
    yield codeq
    codeq.stop()


def owner(kvrocks_cluster, key: str) -> int:
    slot = key_slot(key)
    return next(i for i, r in enumerate(RANGES) if int(r.split("-")[0]) <= slot
                <= int(r.split("-")[1]))


def test_long_polls_are_woken_from_every_master(kvrocks_cluster, server):
    # Commands whose first shard lives on each of the three masters.
    commands: dict[int, str] = {}
    n = 0
    while len(commands) < 3:
        command = f"kv.{n}"
        commands.setdefault(owner(kvrocks_cluster, f"codeq:{{default:{command}}}:tasks"), command)
        n += 1
    with httpx.Client(base_url=server.base, timeout=30) as http:
        for command in commands.values():
            for _ in range(3):  # one task a shard, whichever the round-robin turn
                got: dict[str, object] = {}

                def poll(command: str = command, got: dict[str, object] = got) -> None:
                    started = time.monotonic()
                    r = http.post("/v1/codeq/tasks/claim", json={"commands": [command],
                                  "waitSeconds": 10}, headers={"X-Worker-Id": "w"})
                    got["status"], got["seconds"] = r.status_code, time.monotonic() - started
                    got["task"] = r.json() if r.status_code == 200 else None

                waiter = threading.Thread(target=poll)
                waiter.start()
                time.sleep(0.3)  # the poll is waiting (it would take the task either way)
                created = http.post("/v1/codeq/tasks", json={"command": command, "payload": {}})
                assert created.status_code == 202
                waiter.join(15)
                assert got["status"] == 200
                assert got["seconds"] < 5, f"{command}: woken after {got['seconds']:.1f} s"
                task = got["task"]
                assert isinstance(task, dict) and task["id"] == created.json()["id"]
                done = http.post(f"/v1/codeq/tasks/{task['id']}/result",
                                 json={"status": "COMPLETED", "leaseId": task["leaseId"]},
                                 headers={"X-Worker-Id": "w"})
                assert done.status_code == 200


def test_a_sharded_command_spreads_over_the_masters(kvrocks_cluster, server):
    with httpx.Client(base_url=server.base, timeout=30) as http:
        ids = [http.post("/v1/codeq/tasks", json={"command": "kv.hot", "payload": {"n": n}})
               .json()["id"] for n in range(30)]
        stats = http.get("/v1/codeq/admin/queues/kv.hot").json()
        assert stats["ready"] == 30
        shards = [f"codeq:{{default:kv.hot{suffix}}}:tasks" for suffix in ("", "#1", "#2")]
        holding = {key: kvrocks_cluster[owner(kvrocks_cluster, key)].client().hlen(key)
                   for key in shards}
        assert list(holding.values()) == [10, 10, 10]
        assert len({owner(kvrocks_cluster, key) for key in shards}) > 1  # not all on one
        claimed = http.post("/v1/codeq/tasks/claim/batch", json={"commands": ["kv.hot"],
                            "count": 50}, headers={"X-Worker-Id": "w"}).json()["tasks"]
        assert sorted(t["id"] for t in claimed) == sorted(ids)
