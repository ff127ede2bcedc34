"""Queues on every master of a cluster, through one codeq serve: long polls woken
across nodes, batches that span masters, every task finished once."""

from __future__ import annotations

import threading
import time

import httpx

from tests.cluster.conftest import (
    TENANT,
    V1,
    WORKER,
    commands_by_master,
    create,
    finish,
    slot_of,
)
from tests.support import poll_waiting


def test_queues_on_every_master_are_woken_claimed_and_finished(cluster, codeq, api):
    by_master = commands_by_master(cluster, "spread", per_master=3)
    assert len(by_master) == 3  # every master serves some of them
    commands = [c for names in by_master.values() for c in names]
    view = cluster.client()

    # One long poll per command, waiting before its task exists: only a
    # notification published on the queue's master can wake it in time.
    woken: dict[str, tuple[int, dict, float]] = {}

    def poll(command: str) -> None:
        with httpx.Client(base_url=codeq.base, timeout=40) as own:
            resp = own.post(f"{V1}/tasks/claim", headers=WORKER,
                            json={"commands": [command], "waitSeconds": 20})
            woken[command] = (resp.status_code, resp.json() if resp.content else {},
                              time.monotonic())
            assert resp.status_code == 200, resp.text

    threads = [threading.Thread(target=poll, args=(c,)) for c in commands]
    for thread in threads:
        thread.start()
    for command in commands:
        poll_waiting(view, command, TENANT)
    made = {}
    for command in commands:
        made[command] = (create(api, command, {"c": command}), time.monotonic())
    for thread in threads:
        thread.join(30)
    for command, (task, created_at) in made.items():
        status, claimed, answered_at = woken[command]
        assert status == 200, (command, status, claimed)
        assert claimed["id"] == task["id"]
        assert answered_at - created_at < 2.0, f"the poll on {command} was not woken"
        finish(api, claimed)

    # A batch of creates across all three masters, claimed and finished in batches.
    items = [{"command": c, "payload": {"n": n}} for n in range(10) for c in commands]
    resp = api.post(f"{V1}/tasks/batch", json={"tasks": items})
    assert resp.status_code == 200, resp.text
    ids = [item["task"]["id"] for item in resp.json()["results"]]
    assert len(set(ids)) == len(items)
    finished: list[str] = []
    while len(finished) < len(ids):
        resp = api.post(f"{V1}/tasks/claim/batch", headers=WORKER,
                        json={"commands": commands, "count": 25, "waitSeconds": 1})
        assert resp.status_code == 200, resp.text
        tasks = resp.json()["tasks"]
        done = api.post(f"{V1}/tasks/batch/results", headers=WORKER, json={"results": [
            {"taskId": t["id"], "leaseId": t["leaseId"], "status": "COMPLETED"} for t in tasks]})
        assert done.status_code == 200, done.text
        assert all("result" in r for r in done.json()["results"]), done.text
        finished += [t["id"] for t in tasks]
    assert sorted(finished) == sorted(ids)  # each claimed and finished once
    for task_id in ids:
        got = api.get(f"{V1}/tasks/{task_id}/result")
        assert got.status_code == 200 and got.json()["result"]["status"] == "COMPLETED"

    # Each master holds the queues of its own commands, and no other's.
    for port, names in by_master.items():
        node = next(n for n in cluster.nodes if n.port == port)
        for command in commands:
            held = cluster.ask("CLUSTER", "COUNTKEYSINSLOT", str(slot_of(command)), node=node)
            assert (held > 0) == (command in names), (command, port, held)
    for command in commands:
        depth = api.get(f"{V1}/admin/queues/{command}").json()
        assert (depth["ready"], depth["inProgress"], depth["dlq"]) == (0, 0, 0), depth
    view.close()
