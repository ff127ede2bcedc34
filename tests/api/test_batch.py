"""The batch endpoints: every rule of the single ones holds item by item, and
a bad item fails alone."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from tests.support import poll_waiting

V1 = "/v1/codeq"



def create_batch(api, items):
    resp = api.post(f"{V1}/tasks/batch", json={"tasks": items})
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def claim_batch(api, count, worker="w1", **body):
    body.setdefault("commands", [api.command])
    return api.post(f"{V1}/tasks/claim/batch", json={"count": count, **body},
                    headers={"X-Worker-Id": worker})


def results_batch(api, items, worker="w1"):
    resp = api.post(f"{V1}/tasks/batch/results", json={"results": items},
                    headers={"X-Worker-Id": worker})
    assert resp.status_code == 200, resp.text
    return resp.json()["results"]


def test_create_batch_answers_item_by_item_in_order(api):
    other = api.command + ".other"
    results = create_batch(api, [
        {"command": api.command, "payload": {"n": 0}, "priority": 7},
        {"command": api.command},  # no payload
        {"command": other, "payload": {"n": 2}, "delaySeconds": 60},
        {"command": "a{b}", "payload": 1},
        {"command": api.command, "payload": {"n": 4}, "idempotencyKey": "k"},
        {"command": api.command, "payload": {"n": 5}, "idempotencyKey": "k"},  # same key
        {"command": api.command, "payload": "x", "runAt": "9999-12-31T23:00:00-05:00"},
    ])
    assert [sorted(r) for r in results] == [
        ["task"], ["code", "error", "field"], ["task"], ["code", "error", "field"], ["task"],
        ["task"], ["code", "error", "field"]]
    assert (results[1]["code"], results[1]["field"]) == ("BAD_REQUEST", "payload")
    assert results[3]["field"] == "command"
    assert results[6]["field"] == "runAt"
    first, delayed, keyed, again = (results[i]["task"] for i in (0, 2, 4, 5))
    assert (first["priority"], first["status"], first["payload"]) == (7, "PENDING", '{"n":0}')
    assert delayed["command"] == other and delayed["visibleAt"] > delayed["createdAt"]
    assert again["id"] == keyed["id"] and again["payload"] == '{"n":4}'
    for task in (first, delayed, keyed):
        uuid.UUID(task["id"])
        assert api.get(f"{V1}/tasks/{task['id']}").json()["status"] == "PENDING"


def test_a_bad_item_fails_alone_even_with_bytes_that_are_not_utf8(api):
    body = (b'{"tasks": [{"command": "%s", "payload": {"to": "\xff"}}, '
            b'{"command": "%s", "payload": 1}]}' % ((api.command.encode(),) * 2))
    resp = api.post(f"{V1}/tasks/batch", content=body,
                    headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    bad, good = resp.json()["results"]
    assert (bad["code"], bad["field"]) == ("BAD_REQUEST", "payload.to")
    assert good["task"]["payload"] == "1"


@pytest.mark.parametrize(("body", "mention"), [
    ({"tasks": []}, "tasks"),
    ({"tasks": [{"command": "x", "payload": 1}] * 101}, "tasks"),
    ({"tasks": {"command": "x"}}, "tasks"),
    ({"task": []}, "tasks"),
])
def test_create_batch_refuses_a_bad_body_whole(api, body, mention):
    resp = api.post(f"{V1}/tasks/batch", json=body)
    assert resp.status_code == 400
    assert mention in resp.json()["error"] + resp.json().get("field", "")


def test_claim_batch_takes_up_to_count_in_priority_order(api):
    created = create_batch(api, [{"command": api.command, "payload": n, "priority": n % 3}
                                 for n in range(5)])
    resp = claim_batch(api, 3, leaseSeconds=60)
    assert resp.status_code == 200
    tasks = resp.json()["tasks"]
    assert [t["priority"] for t in tasks] == [2, 1, 1]
    assert len({t["leaseId"] for t in tasks}) == 3
    assert all(t["status"] == "IN_PROGRESS" and t["workerId"] == "w1" for t in tasks)
    rest = claim_batch(api, 10).json()["tasks"]
    assert {t["id"] for t in tasks + rest} == {r["task"]["id"] for r in created}
    assert claim_batch(api, 10).status_code == 204


def test_claim_batch_long_polls(api, store_view):
    got = {}

    def poll():
        started = time.monotonic()
        got["resp"] = claim_batch(api, 5, waitSeconds=20)
        got["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    poll_waiting(store_view, api.command)
    create_batch(api, [{"command": api.command, "payload": 1}])
    thread.join(25)
    assert got["resp"].status_code == 200
    assert len(got["resp"].json()["tasks"]) == 1
    assert got["elapsed"] < 5


@pytest.mark.parametrize("body", [{"count": 0}, {"count": 101}, {}])
def test_claim_batch_refuses_a_bad_count(api, body):
    resp = api.post(f"{V1}/tasks/claim/batch", json={"commands": [api.command], **body},
                    headers={"X-Worker-Id": "w1"})
    assert resp.status_code == 400
    assert resp.json()["field"] == "count"


def test_results_batch_answers_item_by_item_with_every_lease_rule(api):
    create_batch(api, [{"command": api.command, "payload": n} for n in range(4)])
    a, b, c, d = claim_batch(api, 4, leaseSeconds=60).json()["tasks"]
    mine = {"X-Worker-Id": "w1"}
    unknown = "00000001-0000-8000-8000-000000000000"
    results = results_batch(api, [
        {"taskId": a["id"], "leaseId": a["leaseId"], "status": "COMPLETED", "result": {"x": 1}},
        {"taskId": b["id"], "leaseId": "stale", "status": "COMPLETED"},
        {"taskId": c["id"], "leaseId": c["leaseId"], "status": "DONE"},
        {"taskId": unknown, "status": "COMPLETED"},
        {"taskId": "not-a-uuid", "status": "COMPLETED"},
        {"taskId": d["id"].upper(), "leaseId": d["leaseId"], "status": "FAILED",
         "error": "no"},
        {"taskId": a["id"], "leaseId": a["leaseId"], "status": "COMPLETED"},  # again
    ])
    assert [r.get("code") for r in results] == [
        None, "STALE_LEASE", "BAD_REQUEST", "TASK_NOT_FOUND", "BAD_REQUEST", None,
        "NOT_IN_PROGRESS"]
    assert results[0] == {"taskId": a["id"], "result": {
        "taskId": a["id"], "status": "COMPLETED", "result": {"x": 1},
        "completedAt": results[0]["result"]["completedAt"]}}
    assert results[2]["field"] == "status" and results[4]["field"] == "taskId"
    assert results[5]["taskId"] == d["id"] and results[5]["result"]["error"] == "no"
    # Each item only changed its own task.
    assert api.get(f"{V1}/tasks/{b['id']}").json()["status"] == "IN_PROGRESS"
    assert api.get(f"{V1}/tasks/{c['id']}").json()["status"] == "IN_PROGRESS"
    assert api.get(f"{V1}/tasks/{d['id']}/result").json()["task"]["status"] == "FAILED"
    # Only the lease owner may finish a task.
    other = results_batch(api, [{"taskId": b["id"], "status": "COMPLETED"}], worker="w2")
    assert other[0]["code"] == "NOT_OWNER"
    assert api.post(f"{V1}/tasks/{b['id']}/result", headers=mine,
                    json={"status": "COMPLETED", "leaseId": b["leaseId"]}).status_code == 200


def test_results_batch_across_queues(api):
    other = api.command + ".other"
    create_batch(api, [{"command": api.command, "payload": 1}, {"command": other, "payload": 2}])
    tasks = (claim_batch(api, 2, commands=[api.command, other]).json()["tasks"])
    assert {t["command"] for t in tasks} == {api.command, other}
    results = results_batch(api, [{"taskId": t["id"], "leaseId": t["leaseId"],
                                   "status": "COMPLETED"} for t in tasks])
    assert [r["result"]["status"] for r in results] == ["COMPLETED", "COMPLETED"]
    assert [r["taskId"] for r in results] == [t["id"] for t in tasks]
