"""The v1 HTTP API against a real ``codeq serve`` process."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import httpx

from codeq.keys import QueueKeys
from tests.support import metric, poll_waiting, wait_until

V1 = "/v1/codeq"
UNKNOWN = "00000000-0000-4000-8000-000000000000"



def create(api, **body):
    body.setdefault("command", api.command)
    body.setdefault("payload", {"to": "a@example.com"})
    resp = api.post(f"{V1}/tasks", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()


def claim(api, worker="w1", **body):
    body.setdefault("commands", [api.command])
    return api.post(f"{V1}/tasks/claim", json=body, headers={"X-Worker-Id": worker})


def claimed(api, worker="w1", **body):
    resp = claim(api, worker, **body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def act(api, task_id, action, worker="w1", body=None, **headers):
    return api.post(f"{V1}/tasks/{task_id}/{action}", json=body,
                    headers={"X-Worker-Id": worker, **headers})


def test_walk_through(api):
    task = create(api, priority=3)
    assert task["status"] == "PENDING"
    assert task["payload"] == '{"to":"a@example.com"}'
    uuid.UUID(task["id"])
    lease = claimed(api)
    assert (lease["id"], lease["status"], lease["attempts"]) == (task["id"], "IN_PROGRESS", 1)
    beat = act(api, task["id"], "heartbeat", body={"extendSeconds": 120})
    assert beat.status_code == 200
    assert beat.json()["ok"] is True
    assert beat.json()["leaseUntil"].endswith("Z")
    done = act(api, task["id"], "result", body={"status": "COMPLETED", "result": {"sent": 1},
                                                "leaseId": lease["leaseId"]})
    assert done.status_code == 200, done.text
    assert done.json()["result"] == {"sent": 1}
    got = api.get(f"{V1}/tasks/{task['id']}/result")
    assert got.status_code == 200
    assert got.json()["task"]["status"] == "COMPLETED"
    assert got.json()["result"]["status"] == "COMPLETED"
    assert api.get(f"{V1}/tasks/{task['id']}").json()["status"] == "COMPLETED"


def test_claim_returns_204_when_empty(api):
    resp = claim(api)
    assert resp.status_code == 204
    assert resp.content == b""


def test_error_statuses(api):
    task = create(api)
    lease = claimed(api)
    tid = task["id"]
    cases = [
        (act(api, tid, "heartbeat", worker="intruder"), 403, "NOT_OWNER"),
        (act(api, tid, "result", worker="x", body={"status": "COMPLETED"}), 403, "NOT_OWNER"),
        (act(api, tid, "heartbeat", body={"leaseId": "stale"}), 409, "STALE_LEASE"),
        (act(api, tid, "nack", **{"X-Lease-Id": "stale"}), 409, "STALE_LEASE"),
        (act(api, UNKNOWN, "heartbeat"), 404, "TASK_NOT_FOUND"),
        (api.get(f"{V1}/tasks/{UNKNOWN}"), 404, "TASK_NOT_FOUND"),
        (api.get(f"{V1}/tasks/{UNKNOWN}/result"), 404, "TASK_NOT_FOUND"),
        (api.get(f"{V1}/tasks/{tid}/result"), 404, "RESULT_NOT_FOUND"),
        (api.get(f"{V1}/tasks/not-a-uuid"), 400, "BAD_REQUEST"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        assert resp.json()["code"] == code
        assert resp.json()["error"]
    ok = act(api, tid, "result", body={"status": "COMPLETED"}, **{"X-Lease-Id": lease["leaseId"]})
    assert ok.status_code == 200
    again = act(api, tid, "result", body={"status": "COMPLETED"})
    assert again.status_code == 409
    assert again.json()["code"] == "NOT_IN_PROGRESS"


def test_heartbeat_after_expiry_is_409(api):
    task = create(api)
    claimed(api, leaseSeconds=1)
    time.sleep(1.05)  # the lease must run out; nothing to poll for
    resp = act(api, task["id"], "heartbeat")
    assert resp.status_code == 409
    assert resp.json()["code"] in ("LEASE_EXPIRED", "NOT_IN_PROGRESS")


def test_abandon_and_nack(api):
    task = create(api, maxAttempts=2)
    lease = claimed(api)
    assert act(api, task["id"], "abandon").json() == {"status": "requeued"}
    lease = claimed(api)
    assert lease["attempts"] == 1
    resp = act(api, task["id"], "nack", body={"delaySeconds": 0, "reason": "later"})
    assert resp.json() == {"status": "requeued", "delaySeconds": 0.0}
    lease = claimed(api)
    assert lease["attempts"] == 2
    assert lease["error"] == "later"
    resp = act(api, task["id"], "nack", body={"leaseId": lease["leaseId"]})
    assert resp.json() == {"status": "dlq"}
    result = api.get(f"{V1}/tasks/{task['id']}/result").json()
    assert result["result"]["error"] == "MAX_ATTEMPTS"
    assert result["task"]["status"] == "FAILED"


def test_priorities_and_delays_over_http(api):
    low = create(api, priority=1)
    high = create(api, priority=9)
    later = create(api, priority=9, delaySeconds=30)
    assert claimed(api)["id"] == high["id"]
    assert claimed(api)["id"] == low["id"]
    assert claim(api).status_code == 204
    assert api.get(f"{V1}/tasks/{later['id']}").json()["status"] == "PENDING"


def test_idempotent_create(api):
    first = create(api, idempotencyKey="order-1")
    again = create(api, idempotencyKey="order-1", payload={"other": True})
    assert again["id"] == first["id"]
    assert again["payload"] == first["payload"]


def test_lease_expiry_redelivers_then_dead_letters(api):
    task = create(api, maxAttempts=2)
    first = claimed(api, leaseSeconds=1)
    # The server's upkeep loop requeues it; after the 0.2 s backoff a long
    # poll is woken when it becomes ready again.
    wait_until(lambda: api.get(f"{V1}/tasks/{task['id']}").json()["status"] == "PENDING",
               10, what="requeue after lease expiry")
    second = claimed(api, "w2", leaseSeconds=1, waitSeconds=10)
    assert second["id"] == task["id"]
    assert second["attempts"] == 2
    assert second["leaseId"] != first["leaseId"]
    result = api.get(f"{V1}/tasks/{task['id']}/result", params={"waitSeconds": 10})
    assert result.status_code == 200
    assert result.json()["result"]["error"] == "LEASE_EXPIRED"
    assert result.json()["task"]["status"] == "FAILED"


def test_claim_long_poll_returns_as_soon_as_a_task_appears(api, codeq_server, store_view):
    got = {}

    def poll():
        with httpx.Client(base_url=codeq_server.base, timeout=40) as other:
            other.command = api.command
            started = time.monotonic()
            got["resp"] = claim(other, waitSeconds=20)
            got["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    poll_waiting(store_view, api.command)
    task = create(api)
    thread.join(20)
    assert got["resp"].status_code == 200
    assert got["resp"].json()["id"] == task["id"]
    assert got["elapsed"] < 5


def test_result_long_poll_returns_as_soon_as_the_result_lands(api, codeq_server, store_view):
    task = create(api)
    lease = claimed(api)
    got = {}

    def poll():
        with httpx.Client(base_url=codeq_server.base, timeout=70) as other:
            started = time.monotonic()
            got["resp"] = other.get(f"{V1}/tasks/{task['id']}/result",
                                    params={"waitSeconds": 30})
            got["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    rwaiters = QueueKeys("default", api.command).rwaiters
    wait_until(lambda: store_view.sismember(rwaiters, task["id"]), 10, 0.01, "the poll to wait")
    act(api, task["id"], "result", body={"status": "FAILED", "error": "nope",
                                         "leaseId": lease["leaseId"]})
    thread.join(40)
    assert got["resp"].status_code == 200
    assert got["resp"].json()["result"]["error"] == "nope"
    assert got["elapsed"] < 5


def test_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}


def test_long_poll_of_a_client_that_left_claims_nothing(api, codeq_server, store_view):
    def empty_claims() -> float:
        return metric(codeq_server.base, "codeq_http_requests_total",
                      route=f"{V1}/tasks/claim", status="204")

    before = empty_claims()
    body = json.dumps({"commands": [api.command], "waitSeconds": 20}).encode()
    request = (f"POST {V1}/tasks/claim HTTP/1.1\r\nHost: x\r\nX-Worker-Id: gone\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", codeq_server.port)) as sock:
        sock.sendall(request + body)
        poll_waiting(store_view, api.command)
    # The server ends the departed poll with nothing claimed.
    wait_until(lambda: empty_claims() > before, 10, 0.05, "the departed poll to end")
    task = create(api)
    # Had the departed poll been woken, it would hold the task now.
    assert claimed(api, "w2")["id"] == task["id"]
