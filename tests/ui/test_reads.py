"""What the dashboard reads besides the depths: in-flight pages, one task with its
result and DLQ entry (both also admin API endpoints), and the throughput series."""

from __future__ import annotations

import time

import httpx
import pytest

from codeq import keys
from codeq.errors import TaskNotFound
from codeq.metrics.prom import Counting
from codeq.ui.throughput import Recorder
from tests.engine.conftest import TENANT
from tests.support import wait_until

ADMIN = "/v1/codeq/admin"


async def test_inflight_pages_go_soonest_lease_first_over_every_shard(make_engine):
    engine = await make_engine(queue_shards=3)
    for n in range(5):
        await engine.create(TENANT, "job", b"%d" % n)
    leases = {}
    for seconds in (50, 10, 40, 20, 30):
        (task,) = await engine.claim(TENANT, ["job"], f"w{seconds}", lease_seconds=seconds)
        leases[task.id] = seconds
    seen, cursor = [], None
    for expected in (2, 2, 1):
        page, cursor = await engine.admin.inflight(TENANT, "job", 2, cursor)
        assert len(page) == expected
        seen += page
    assert cursor is None
    assert [leases[t.id] for t in seen] == [10, 20, 30, 40, 50]
    assert [t.workerId for t in seen] == ["w10", "w20", "w30", "w40", "w50"]
    assert all(t.status == "IN_PROGRESS" and t.leaseUntil for t in seen)


async def test_a_task_comes_with_its_result_and_its_dlq_entry(engine):
    done, _ = await engine.create(TENANT, "job", b'{"n": 1}')
    (leased,) = await engine.claim(TENANT, ["job"], "w1")
    await engine.submit_result(TENANT, done.id, "w1", leased.leaseId, "COMPLETED", b'{"ok": 1}',
                               None, b"")
    task, result, dead = await engine.admin.task(TENANT, done.id)
    assert (task.status, bytes(result.result), dead) == ("COMPLETED", b'{"ok": 1}', None)

    failed, _ = await engine.create(TENANT, "job", b"2", max_attempts=1)
    (leased,) = await engine.claim(TENANT, ["job"], "w1")
    await engine.nack(TENANT, failed.id, "w1", leased.leaseId, 0)
    task, result, dead = await engine.admin.task(TENANT, failed.id)
    assert task.status == "FAILED" and result.status == "FAILED" and dead is not None

    pending, _ = await engine.create(TENANT, "job", b"3")
    assert (await engine.admin.task(TENANT, pending.id))[1:] == (None, None)
    with pytest.raises(TaskNotFound):
        await engine.admin.task("globex", pending.id)


async def test_processes_add_up_in_the_series_which_expires(make_engine, store):
    one, two = await make_engine(), await make_engine()
    second = int(time.time())
    await one.admin.add_throughput(TENANT, second, [3, 1, 0])
    await two.admin.add_throughput(TENANT, second, [2, 0, 4])
    await two.admin.add_throughput(TENANT, second + 1, [0, 0, 0])  # nothing: no write
    series = await one.admin.throughput(TENANT, second - 1, second + 1)
    assert series == {"created": [0, 5, 0], "completed": [0, 1, 0], "failed": [0, 4, 0]}
    key = keys.throughput(TENANT, second // 60)
    assert 0 < store.ttl(key) <= 900
    assert (await one.admin.throughput("globex", second, second))["created"] == [0]


async def test_the_recorder_writes_what_the_counters_grew_by(engine):
    counting = Counting()
    recorder = Recorder(engine, counting)
    second = int(time.time())
    counting.created(TENANT, "a", 2)
    counting.created(TENANT, "b", 1)
    counting.finished(TENANT, "a", "COMPLETED", 2)
    counting.finished(TENANT, "a", "FAILED", 1)
    counting.dead_lettered(TENANT, "b", "MAX_ATTEMPTS", 1)
    await recorder.flush(second)
    await recorder.flush(second + 1)  # nothing new
    counting.created(TENANT, "a", 4)
    await recorder.flush(second + 2)
    series = await engine.admin.throughput(TENANT, second, second + 2)
    assert series == {"created": [3, 0, 4], "completed": [2, 0, 0], "failed": [2, 0, 0]}


def test_the_admin_api_serves_inflight_pages_and_tasks(codeq_server, command):
    with httpx.Client(base_url=codeq_server.base, timeout=20,
                      headers={"X-Worker-Id": "w-ui"}) as c:
        created = c.post("/v1/codeq/tasks", json={"command": command, "payload": {"a": 1}})
        task_id = created.json()["id"]
        claimed = c.post("/v1/codeq/tasks/claim", json={"commands": [command]}).json()
        page = c.get(f"{ADMIN}/queues/{command}/inflight", params={"limit": 10}).json()
        assert [(t["id"], t["workerId"]) for t in page["tasks"]] == [(task_id, "w-ui")]
        assert page["nextCursor"] is None
        c.post(f"/v1/codeq/tasks/{task_id}/result",
               json={"status": "COMPLETED", "result": [1, 2], "leaseId": claimed["leaseId"]})
        got = c.get(f"{ADMIN}/tasks/{task_id}").json()
        assert got["task"]["status"] == "COMPLETED" and got["result"]["result"] == [1, 2]
        assert got["deadLetteredAt"] is None
        assert c.get(f"{ADMIN}/tasks/00000000-0000-4000-8000-000000000000").status_code == 404
        assert c.get(f"{ADMIN}/queues/{command}/inflight",
                     params={"cursor": "x"}).json()["field"] == "cursor"


def test_serve_records_the_throughput_series(codeq_server, store_view, command):
    # A fixed window: one that slid with the clock would drop a minute's
    # counts when the wait crosses a minute boundary.
    first = int(time.time()) // 60 - 1

    def created_total() -> int:
        return sum(int(n) for m in range(first, first + 3)
                   for field, n in store_view.hgetall(keys.throughput("default", m)).items()
                   if field.endswith(b":created"))

    before = created_total()
    with httpx.Client(base_url=codeq_server.base, timeout=20) as c:
        for _ in range(3):
            c.post("/v1/codeq/tasks", json={"command": command, "payload": 1})
    wait_until(lambda: created_total() >= before + 3, 10, 0.1, "the series to grow by 3")
