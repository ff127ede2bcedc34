"""A master SIGKILLed under a running codeq serve: its queues answer 503 (never
500) until a replica takes over, then work again by themselves; what codeQ
acknowledged with --store-wait-replicas 1 is still there; the killed node
comes back as a replica."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.cluster.conftest import (
    CLUSTER_ARGS,
    TENANT,
    V1,
    WORKER,
    commands_by_master,
    create,
    slot_of,
)
from tests.support import ClusterStore, CodeqServer, StoreServer, poll_waiting, wait_until


@pytest.fixture(scope="module")
def two_replicas():
    """Two replicas per master: one promoted, one left to confirm each change (WAIT 1)."""
    store = ClusterStore(replicas=2).start()
    yield store
    store.cleanup()


@pytest.fixture(scope="module")
def server(two_replicas):
    codeq = CodeqServer("--store-url", two_replicas.url, *CLUSTER_ARGS).start()
    yield codeq
    codeq.stop()


def subscribed_on(cluster: ClusterStore) -> StoreServer | None:
    """The node codeq serve's events subscription is connected to, if any."""
    for node in cluster.live():
        client = node.client()
        try:
            if any(c["name"] == "codeq-events" for c in client.client_list()):
                return node
        finally:
            client.close()
    return None


def role(node) -> str:
    client = node.client()
    try:
        return client.execute_command("ROLE")[0].decode()
    finally:
        client.close()


def test_a_killed_master_is_503_then_served_by_its_promoted_replica(two_replicas: ClusterStore,
                                                                    server: CodeqServer):
    cluster = two_replicas
    # The victim serves the queue and holds the long polls' subscription too
    # (codeQ subscribes on its first seed, a master).
    victim = wait_until(lambda: subscribed_on(cluster), what="codeQ's events subscription")
    assert victim in cluster.masters()
    [command] = commands_by_master(cluster, "failover", per_master=1)[victim.port]
    slot = slot_of(command)
    heirs = cluster.replicas_of(victim)
    assert len(heirs) == 2
    pid = server.proc.pid
    with httpx.Client(base_url=server.base, timeout=30) as api:
        acked = [create(api, command, {"n": n})["id"] for n in range(200)]

        victim.kill()
        # At once, before any failover can start (node timeout 1 s): every
        # operation on the queue is refused as unavailable, none fails otherwise.
        assert api.post(f"{V1}/tasks", json={"command": command, "payload": 1}).status_code == 503
        assert api.get(f"{V1}/tasks/{acked[0]}").status_code == 503
        claim = api.post(f"{V1}/tasks/claim", headers=WORKER, json={"commands": [command]})
        assert claim.status_code == 503, claim.text
        assert claim.json()["code"] == "STORE_UNAVAILABLE"

        wait_until(lambda: cluster.master_of(slot) in heirs, 15, 0.05, "a replica promoted")
        promoted_at = time.monotonic()
        seen: Counter[int] = Counter()

        def created() -> bool:
            resp = api.post(f"{V1}/tasks", json={"command": command, "payload": "after"})
            seen[resp.status_code] += 1
            if resp.status_code == 202:
                acked.append(resp.json()["id"])
            return resp.status_code == 202

        wait_until(created, 15, 0.05, "creates to succeed again")
        recovered_in = time.monotonic() - promoted_at
        assert set(seen) <= {202, 503}, seen
        assert server.proc.poll() is None and server.proc.pid == pid  # never restarted

        # Everything acknowledged, before the kill or since, is there to claim, once.
        for task_id in acked:
            got = api.get(f"{V1}/tasks/{task_id}")
            assert got.status_code == 200 and got.json()["status"] == "PENDING", got.text
        claimed: list[str] = []
        while True:
            resp = api.post(f"{V1}/tasks/claim/batch", headers=WORKER,
                            json={"commands": [command], "count": 100})
            if resp.status_code == 204:
                break
            assert resp.status_code == 200, resp.text
            tasks = resp.json()["tasks"]
            done = api.post(f"{V1}/tasks/batch/results", headers=WORKER, json={"results": [
                {"taskId": t["id"], "leaseId": t["leaseId"], "status": "COMPLETED"}
                for t in tasks]})
            assert done.status_code == 200, done.text
            claimed += [t["id"] for t in tasks]
        assert sorted(claimed) == sorted(acked)

        # Long polls are still woken: the events subscription moved to a live node.
        assert wait_until(lambda: subscribed_on(cluster), what="a new subscription") is not victim
        view = cluster.client()
        got = {}

        def poll() -> None:
            with httpx.Client(base_url=server.base, timeout=40) as own:
                resp = own.post(f"{V1}/tasks/claim", headers=WORKER,
                                json={"commands": [command], "waitSeconds": 20})
                got["status"], got["at"] = resp.status_code, time.monotonic()

        poller = threading.Thread(target=poll)
        poller.start()
        poll_waiting(view, command, TENANT)
        create(api, command)
        made_at = time.monotonic()
        poller.join(30)
        view.close()
        assert got["status"] == 200 and got["at"] - made_at < 2.0, got

        # The killed node restarts on its data and rejoins, as a replica now.
        victim.start()
        wait_until(cluster.healthy, 30, 0.1, "the old master to rejoin")
        assert role(victim) == "slave"
        assert cluster.master_of(slot) in heirs
        create(api, command)
    assert "Traceback" not in server.log(), server.log()
    print(f"creates answered again {recovered_in:.2f} s after the promotion: {dict(seen)}")
