"""Bad input: each request gets a 4xx JSON error naming the problem, and the
store is left exactly as it was."""

from __future__ import annotations

import httpx
import pytest

from codeq import keys
from tests.conftest import SERVE_ARGS
from tests.support import CodeqServer, new_store, snapshot, wait_until

V1 = "/v1/codeq"
JSON = {"Content-Type": "application/json"}
WORKER = {"X-Worker-Id": "w1", **JSON}
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def isolated():
    """A store and codeq serve of their own, so nothing else changes the store meanwhile."""
    store = new_store().start()
    # --ui off: the dashboard's throughput series would record the create meanwhile.
    server = CodeqServer("--store-url", store.url, *SERVE_ARGS, "--ui", "off").start()
    view = store.client()
    with httpx.Client(base_url=server.base, timeout=30) as api:
        created = api.post(f"{V1}/tasks", json={"command": "bad.input", "payload": {}})
        assert created.status_code == 202
        claimed = api.post(f"{V1}/tasks/claim", headers={"X-Worker-Id": "w1"},
                           json={"commands": ["bad.input"], "leaseSeconds": 3600})
        assert claimed.status_code == 200
        # The claim's upkeep hint is sent after its reply (on a cluster, to
        # another node): let it land before the tests take their snapshots.
        member = b"default:bad.input"
        wait_until(lambda: view.zscore(keys.due(keys.due_shard(member)), member) is not None,
                   what="the claim's upkeep hint")
        yield api, claimed.json()["id"], view
    server.stop()
    view.close()
    store.cleanup()


def body(text: str) -> bytes:
    return text.encode()


def task(fields: str) -> bytes:
    """A create body with a valid command and payload, plus ``fields``."""
    return body('{"command": "x", "payload": 1, ' + fields + "}")


# (method, path, headers, content, expected status, text the error must mention)
CASES = [
    ("POST", "/tasks", JSON, body('{"command": '), 400, "malformed JSON"),
    ("POST", "/tasks", JSON, body("[1, 2]"), 400, "object"),
    ("POST", "/tasks", JSON, b"\xff\xfe{}", 400, "UTF-8"),
    ("POST", "/tasks", JSON, body('{"payload": {}}'), 400, "command"),
    ("POST", "/tasks", JSON, body('{"command": "x"}'), 400, "payload"),
    ("POST", "/tasks", JSON, body('{"command": "x", "payload": null}'), 400, "payload"),
    ("POST", "/tasks", JSON, body('{"command": "x", "payload": "\\ud800"}'), 400, "JSON"),
    ("POST", "/tasks", JSON, b'{"command": "x", "payload": "\xff"}', 400, "payload"),
    ("POST", "/tasks", JSON, b'{"command": "x", "payload": {"to": ["a", "\xc3\x28"]}}', 400,
     "payload.to[1]"),
    ("POST", "/tasks", JSON, b'{"command": "x", "payload": 1, "idempotencyKey": "\xff"}', 400,
     "idempotencyKey"),
    ("POST", "/tasks", JSON, b'{"command": "x", "payload": 1, "\xff": 1}', 400, "UTF-8"),
    ("POST", "/tasks", JSON, task('"runAt": "9999-12-31T23:00:00-05:00"'), 400, "runAt"),
    ("POST", "/tasks", JSON, task('"runAt": "2099-01-01T00:00:00Z"'), 400, "runAt"),
    ("POST", "/tasks", JSON, body('{"command": ""}'), 400, "command"),
    ("POST", "/tasks", JSON, body('{"command": 5}'), 400, "command"),
    ("POST", "/tasks", JSON, body('{"command": "a{b}"}'), 400, "command"),
    ("POST", "/tasks", JSON, body('{"command": "x\\n", "payload": 1}'), 400, "command"),
    ("POST", "/tasks", JSON, body('{"command": "x#1", "payload": 1}'), 400, "command"),
    ("GET", "/admin/queues/x/dlq?limit=%C2%B2", None, b"", 400, "limit"),
    ("GET", "/admin/queues/x/inflight?cursor=%C2%B2:00000001-0000-8000-8000-000000000000",
     None, b"", 400, "cursor"),
    ("GET", "/admin/queues/x%0A", None, b"", 400, "command"),
    ("POST", "/tasks", JSON, task('"priority": "high"'), 400, "priority"),
    ("POST", "/tasks", JSON, task('"maxAttempts": "3"'), 400, "maxAttempts"),
    ("POST", "/tasks", JSON, task('"maxAttempts": -1'), 400, "maxAttempts"),
    ("POST", "/tasks", JSON, task('"maxAttempts": 0'), 400, "maxAttempts"),
    ("POST", "/tasks", JSON, task('"maxAttempts": 1e30'), 400, "maxAttempts"),
    ("POST", "/tasks", JSON, task('"maxAttempts": 100000000000000000000000'), 400, "maxAttempts"),
    ("POST", "/tasks", JSON, task('"delaySeconds": -5'), 400, "delaySeconds"),
    ("POST", "/tasks", JSON, task('"delaySeconds": 1e30'), 400, "delaySeconds"),
    ("POST", "/tasks", JSON, task('"delaySeconds": "soon"'), 400, "delaySeconds"),
    ("POST", "/tasks", JSON, task('"runAt": "tomorrow"'), 400, "runAt"),
    ("POST", "/tasks", JSON, task('"runAt": "2030-01-01T00:00:00"'), 400, "runAt"),
    ("POST", "/tasks", JSON, task('"webhook": "ftp://host/x"'), 400, "webhook"),
    ("POST", "/tasks", JSON, task('"delaySeconds": 5, "runAt": "2030-01-01T00:00:00Z"'), 400,
     "not both"),
    ("POST", "/tasks", JSON, task('"idempotencyKey": ""'), 400, "idempotencyKey"),
    ("POST", "/tasks", JSON, body('{"command": "x", "payload": ' + "[" * 100_000 + "]" * 100_000
                                  + "}"), 400, "JSON"),
    ("POST", "/tasks", JSON, body('{"command": "x", "payload": "' + "a" * (2 << 20) + '"}'), 413,
     "too large"),
    ("POST", "/tasks", {"Content-Type": "text/plain"}, body('{"command": "x"}'), 415,
     "application/json"),
    ("POST", "/tasks", {}, body('{"command": "x"}'), 415, "application/json"),
    ("POST", "/tasks", JSON, b"", 400, "body is required"),
    ("POST", "/tasks/batch", JSON, body('{"tasks": []}'), 400, "tasks"),
    ("POST", "/tasks/batch", JSON, body('{"tasks": 5}'), 400, "tasks"),
    ("POST", "/tasks/batch", JSON, body('{"tasks": [' + ",".join(['{}'] * 101) + ']}'), 400,
     "tasks"),
    ("POST", "/tasks/claim/batch", WORKER, body('{"commands": ["x"], "count": 0}'), 400, "count"),
    ("POST", "/tasks/claim/batch", JSON, body('{"commands": ["x"], "count": 2}'), 400,
     "X-Worker-Id"),
    ("POST", "/tasks/batch/results", WORKER, body('{"results": {}}'), 400, "results"),
    ("POST", "/tasks/batch/results", JSON, body('{"results": [{}]}'), 400, "X-Worker-Id"),
    ("POST", "/tasks/claim", JSON, body('{"commands": ["bad.input"]}'), 400, "X-Worker-Id"),
    ("POST", "/tasks/claim", {**WORKER, "X-Worker-Id": "w" * 300}, body('{"commands": ["x"]}'),
     400, "X-Worker-Id"),
    ("POST", "/tasks/claim", WORKER, body('{"commands": []}'), 400, "commands"),
    ("POST", "/tasks/claim", WORKER, body('{"commands": "bad.input"}'), 400, "commands"),
    ("POST", "/tasks/claim", WORKER, body('{"commands": ["x y"]}'), 400, "commands"),
    ("POST", "/tasks/claim", WORKER, body('{"commands": ["x"], "leaseSeconds": 0}'), 400,
     "leaseSeconds"),
    ("POST", "/tasks/claim", WORKER, body('{"commands": ["x"], "leaseSeconds": 1e12}'), 400,
     "leaseSeconds"),
    ("POST", "/tasks/claim", WORKER, body('{"commands": ["x"], "waitSeconds": 31}'), 400,
     "waitSeconds"),
    ("POST", "/tasks/claim", WORKER, body('{"commands": ["x"], "waitSeconds": -1}'), 400,
     "waitSeconds"),
    ("POST", "/tasks/not-a-uuid/heartbeat", WORKER, b"", 400, "UUID"),
    ("POST", f"/tasks/{UNKNOWN}/heartbeat", WORKER, b"", 404, "not found"),
    ("POST", "/tasks/{claimed}/heartbeat", WORKER, body('{"extendSeconds": -1}'), 400,
     "extendSeconds"),
    ("POST", "/tasks/{claimed}/heartbeat", JSON, b"", 400, "X-Worker-Id"),
    ("POST", "/tasks/{claimed}/heartbeat", {**WORKER, "X-Lease-Id": "x" * 200}, b"", 400,
     "leaseId"),
    ("POST", "/tasks/{claimed}/nack", WORKER, body('{"delaySeconds": -1}'), 400, "delaySeconds"),
    ("POST", "/tasks/{claimed}/result", WORKER, body('{"status": "DONE"}'), 400, "status"),
    ("POST", "/tasks/{claimed}/result", WORKER, body('{"result": 1}'), 400, "status"),
    ("POST", "/tasks/{claimed}/result", WORKER, body('{"status": "COMPLETED", "error": 7}'), 400,
     "error"),
    ("POST", "/tasks/{claimed}/result", WORKER, b'{"status": "COMPLETED", "result": "\xff"}', 400,
     "result"),
    ("POST", "/tasks/{claimed}/result", WORKER,
     b'{"status": "COMPLETED", "artifacts": [{"url": "\xfe"}]}', 400, "artifacts[0].url"),
    ("POST", "/tasks/{claimed}/result", WORKER, b'{"status": "FAILED", "error": "\xff"}', 400,
     "error"),
    ("POST", "/tasks/{claimed}/nack", WORKER, b'{"reason": "\xff"}', 400, "reason"),
    ("POST", f"/tasks/{UNKNOWN}/result", WORKER, body('{"status": "COMPLETED"}'), 404,
     "not found"),
    ("GET", "/tasks/{claimed}/result?waitSeconds=61", {}, b"", 400, "waitSeconds"),
    ("GET", "/tasks/{claimed}/result?waitSeconds=abc", {}, b"", 400, "waitSeconds"),
    ("GET", "/tasks/12345", {}, b"", 400, "UUID"),
    ("GET", "/nothing/here", {}, b"", 404, "no such endpoint"),
    ("DELETE", "/tasks", {}, b"", 405, "not allowed"),
]


@pytest.mark.parametrize(("method", "path", "headers", "content", "status", "mention"), CASES,
                         ids=[f"{c[0]} {c[1]} {c[5]}"[:60] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(isolated, method, path, headers, content,
                                                  status, mention):
    api, claimed_id, view = isolated
    before = snapshot(view)
    resp = api.request(method, V1 + path.replace("{claimed}", claimed_id), headers=headers,
                       content=content)
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert mention.lower() in (error + " " + resp.json().get("field", "")).lower(), error
    assert "Traceback" not in resp.text
    assert snapshot(view) == before


def test_oversized_chunked_body_is_refused(isolated):
    api, _, view = isolated
    before = snapshot(view)

    def chunks():
        yield b'{"command": "x", "payload": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    resp = api.post(f"{V1}/tasks", headers=JSON, content=chunks())
    assert resp.status_code == 413
    assert "too large" in resp.json()["error"]
    assert snapshot(view) == before
