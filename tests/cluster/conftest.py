"""Cluster fixtures: a Redis Cluster these tests start, a codeq serve on it, and
the HTTP moves the tests make (every one asserting its status).

The tests here start clusters of their own whatever the leg; they run on the
cluster leg (CODEQ_TEST_STORE=cluster) and are skipped on the others, which
would only run them again.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from codeq._core import key_slot
from codeq.keys import QueueKeys
from tests.conftest import SERVE_ARGS
from tests.support import ON_CLUSTER, ClusterStore, CodeqServer

TENANT = "default"
V1 = "/v1/codeq"
WORKER = {"X-Worker-Id": "w1"}
# Every change confirmed by one replica before codeQ answers (WAIT 1).
CLUSTER_ARGS = (*SERVE_ARGS, "--store-wait-replicas", "1")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if ON_CLUSTER:
        return
    skip = pytest.mark.skip(reason="a cluster test: run on the cluster leg "
                            "(CODEQ_TEST_STORE=cluster)")
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="package")
def cluster():
    """Three masters, one replica each (the failover tests start their own)."""
    store = ClusterStore().start()
    yield store
    store.cleanup()


@pytest.fixture(scope="package")
def codeq(cluster):
    server = CodeqServer("--store-url", cluster.url, *CLUSTER_ARGS).start()
    yield server
    server.stop()


@pytest.fixture
def api(codeq):
    with httpx.Client(base_url=codeq.base, timeout=40) as client:
        yield client


def slot_of(command: str) -> int:
    """The cluster slot of a command's queue (every key of it shares one hash tag)."""
    return key_slot(QueueKeys(TENANT, command).tasks)


def commands_by_master(cluster: ClusterStore, prefix: str, per_master: int) -> dict[int, list[str]]:
    """Commands ``<prefix>.<n>`` whose queues land on each master, ``per_master``
    of them per master port."""
    ranges = [(start, end, master.port) for start, end, master in cluster.slot_ranges()]
    found: dict[int, list[str]] = {port: [] for *_, port in ranges}
    n = 0
    while any(len(names) < per_master for names in found.values()):
        command = f"{prefix}.{n}"
        slot = slot_of(command)
        port = next(p for start, end, p in ranges if start <= slot <= end)
        if len(found[port]) < per_master:
            found[port].append(command)
        n += 1
    return found


def create(api: httpx.Client, command: str, payload: object = 1, **body: object) -> dict:
    resp = api.post(f"{V1}/tasks", json={"command": command, "payload": payload, **body})
    assert resp.status_code == 202, resp.text
    return resp.json()


def finish(api: httpx.Client, task: dict) -> dict:
    resp = api.post(f"{V1}/tasks/{task['id']}/result", headers=WORKER,
                    json={"status": "COMPLETED", "leaseId": task["leaseId"],
                          "result": {"id": task["id"]}})
    assert resp.status_code == 200, resp.text
    return resp.json()
