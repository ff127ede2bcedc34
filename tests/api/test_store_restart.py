"""The store crashes (SIGKILL) and comes back from its append-only file (Redis) or
write-ahead log (KVRocks)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SERVE_ARGS
from tests.support import CodeqServer, StoreServer, not_on_cluster, wait_until

V1 = "/v1/codeq"
CMD = "restart.job"

pytestmark = not_on_cluster("kills and restarts one store process (tests/cluster kills a "
                            "master and waits for its replica)")


@pytest.fixture
def crashable():
    store = StoreServer(appendonly=True).start()
    server = CodeqServer("--store-url", store.url, *SERVE_ARGS).start()
    with httpx.Client(base_url=server.base, timeout=10) as api:
        yield store, api
    server.stop()
    store.cleanup()


def create(api):
    return api.post(f"{V1}/tasks", json={"command": CMD, "payload": {"x": 1}})


def test_store_killed_and_restarted_loses_nothing(crashable):
    store, api = crashable
    pending = {create(api).json()["id"] for _ in range(50)}
    leases = {}
    for _ in range(10):
        task = api.post(f"{V1}/tasks/claim", headers={"X-Worker-Id": "w1"},
                        json={"commands": [CMD], "leaseSeconds": 300}).json()
        leases[task["id"]] = task["leaseId"]
    pending -= set(leases)

    store.kill()
    down = wait_until(lambda: (r := create(api)).status_code == 503 and r, 10,
                      what="503 while the store is down")
    assert down.json()["code"] == "STORE_UNAVAILABLE"
    assert down.headers["Retry-After"] == "1"
    assert api.get("/readyz").status_code == 503
    assert api.get(f"{V1}/tasks/{next(iter(pending))}").status_code == 503

    store.start()  # same port, same data dir: replays the AOF or the WAL
    wait_until(lambda: api.get("/readyz").status_code == 200, 15, what="recovery")
    after = create(api)
    assert after.status_code == 202

    for task_id in pending:
        assert api.get(f"{V1}/tasks/{task_id}").json()["status"] == "PENDING"
    for task_id, lease_id in leases.items():
        resp = api.post(f"{V1}/tasks/{task_id}/result", headers={"X-Worker-Id": "w1"},
                        json={"status": "COMPLETED", "leaseId": lease_id})
        assert resp.status_code == 200, resp.text
    claimed = set()
    while (resp := api.post(f"{V1}/tasks/claim", headers={"X-Worker-Id": "w2"},
                            json={"commands": [CMD]})).status_code == 200:
        claimed.add(resp.json()["id"])
    assert claimed == pending | {after.json()["id"]}
