"""codeq.client against real codeq serve processes."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from codeq.client import AsyncClient, Client
from codeq.client.errors import BadRequest, CodeqError, NotFound, Unavailable
from codeq.schemas import Task
from tests.support import CodeqServer, StoreServer

W = {"X-Worker-Id": "w1"}


def finish(base: str, command: str, result: object) -> str:
    """Claim one task of ``command`` and complete it over raw HTTP; return its id."""
    with httpx.Client(base_url=base + "/v1/codeq", headers=W, timeout=20) as http:
        task = http.post("/tasks/claim", json={"commands": [command], "waitSeconds": 5}).json()
        http.post(f"/tasks/{task['id']}/result", json={
            "status": "COMPLETED", "result": result, "leaseId": task["leaseId"]})
        return task["id"]


def test_create_get_result_and_wait_for(codeq_server, command):
    with Client(codeq_server.base) as codeq:
        task = codeq.create(command, {"to": "ada@example.com"}, priority=3)
        assert isinstance(task, Task) and task.status == "PENDING" and task.priority == 3
        assert codeq.get(task.id).payload == '{"to":"ada@example.com"}'
        with pytest.raises(NotFound) as missing:
            codeq.result(task.id)
        assert missing.value.code == "RESULT_NOT_FOUND"
        threading.Thread(target=finish, args=(codeq_server.base, command, {"ok": 1})).start()
        done = codeq.result(task.id, wait=10)
        assert done.task.status == "COMPLETED" and done.result.result == {"ok": 1}
        other = codeq.create(command, 2)
        finish(codeq_server.base, command, 2)
        assert set(codeq.wait_for([task.id, other.id], timeout=10)) == {task.id, other.id}


def test_errors_are_raised_with_the_api_code_and_field(codeq_server, command):
    with Client(codeq_server.base) as codeq:
        with pytest.raises(NotFound) as unknown:
            codeq.get("00000000-0000-4000-8000-000000000000")
        assert (unknown.value.status, unknown.value.code) == (404, "TASK_NOT_FOUND")
        with pytest.raises(BadRequest) as bad:
            codeq.create("not a command", 1)
        assert bad.value.field == "command"


def test_every_create_has_its_own_idempotency_key_unless_given(codeq_server, command):
    with Client(codeq_server.base) as codeq:
        assert codeq.create(command, 1).id != codeq.create(command, 1).id
        first = codeq.create(command, 1, idempotency_key="order-7")
        assert codeq.create(command, 2, idempotency_key="order-7").id == first.id


def test_create_many_batches_by_100_with_errors_in_place(codeq_server, command):
    items = [{"command": command, "payload": i} for i in range(250)]
    items[120] = {"command": "bad name", "payload": 1}
    with Client(codeq_server.base) as codeq:
        out = codeq.create_many(items)
    assert len(out) == 250
    assert isinstance(out[120], CodeqError) and out[120].field == "command"
    assert all(isinstance(t, Task) for n, t in enumerate(out) if n != 120)
    assert len({t.id for t in out if isinstance(t, Task)}) == 249


def test_a_create_is_retried_across_a_store_restart_without_a_second_task(command):
    store = StoreServer().start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning",
                         "--store-timeout", "1").start()
    try:
        with Client(server.base, retries=30, backoff=0.1) as codeq:
            store.kill()
            with pytest.raises(Unavailable):
                codeq.create(command, 0, idempotency_key=None)  # no key: not retried
            restart = threading.Timer(1.0, store.start)
            restart.start()
            task = codeq.create(command, 1, idempotency_key="across-restart")
            restart.join()
            again = codeq.create(command, 1, idempotency_key="across-restart")
            assert again.id == task.id
        with httpx.Client(base_url=server.base + "/v1/codeq", headers=W) as http:
            claimed = http.post("/tasks/claim/batch", json={"commands": [command],
                                                            "count": 10}).json()["tasks"]
        assert [t["id"] for t in claimed] == [task.id]
    finally:
        server.stop()
        store.cleanup()


def test_the_async_client_has_the_same_calls(codeq_server, command):
    async def scenario() -> None:
        async with AsyncClient(codeq_server.base) as codeq:
            task = await codeq.create(command, {"n": 1})
            assert (await codeq.get(task.id)).id == task.id
            many = await codeq.create_many([{"command": command + ".many", "payload": i,
                                             "priority": 1} for i in range(3)])
            assert all(isinstance(t, Task) and t.priority == 1 for t in many)
            waiting = asyncio.create_task(codeq.result(task.id, wait=10))
            await asyncio.to_thread(finish, codeq_server.base, command, "done")
            done = await waiting
            assert done.task.id == task.id and done.result.result == "done"

    asyncio.run(scenario())
