"""Many workers at once: every task delivered exactly once, none lost."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from codeq.keys import QueueKeys

V1 = "/v1/codeq"
TASKS = 2000
WORKERS = 20


async def test_20_workers_claim_2000_tasks_exactly_once(codeq_server, command, store_view):
    limits = httpx.Limits(max_connections=WORKERS + 10)
    async with httpx.AsyncClient(base_url=codeq_server.base, timeout=30, limits=limits) as api:
        created: set[str] = set()

        async def produce(start: int) -> None:
            for n in range(start, TASKS, 10):
                resp = await api.post(f"{V1}/tasks", json={"command": command, "payload": {"n": n}})
                assert resp.status_code == 202
                created.add(resp.json()["id"])

        await asyncio.gather(*(produce(i) for i in range(10)))
        assert len(created) == TASKS

        deliveries: Counter[str] = Counter()

        async def work(worker: str) -> None:
            headers = {"X-Worker-Id": worker}
            while True:
                resp = await api.post(f"{V1}/tasks/claim", headers=headers,
                                      json={"commands": [command], "leaseSeconds": 300})
                if resp.status_code == 204:
                    return
                assert resp.status_code == 200, resp.text
                task = resp.json()
                deliveries[task["id"]] += 1
                done = await api.post(f"{V1}/tasks/{task['id']}/result", headers=headers,
                                      json={"status": "COMPLETED", "leaseId": task["leaseId"],
                                            "result": {"by": worker}})
                assert done.status_code == 200, done.text

        await asyncio.gather(*(work(f"worker-{i}") for i in range(WORKERS)))

    assert set(deliveries) == created
    assert max(deliveries.values()) == 1
    assert sum(deliveries.values()) == TASKS
    q = QueueKeys("default", command)
    assert store_view.hlen(q.tasks) == TASKS
    assert store_view.hlen(q.results) == TASKS
    assert store_view.zcard(q.inflight) == 0
