"""The admin API, with auth on: depths, the dead-letter queue, cleanup; per tenant."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import CodeqServer, new_store, wait_until

from .conftest import static_token

V1 = "/v1/codeq"
ADMIN = f"{V1}/admin"


def create(client, command: str, **extra) -> dict:
    reply = client.post(f"{V1}/tasks", json={"command": command, "payload": 1, **extra})
    assert reply.status_code == 202, reply.text
    return reply.json()


def claim(client, command: str, **extra) -> dict:
    reply = client.post(f"{V1}/tasks/claim", json={"commands": [command], **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def dead_letter(client, command: str, n: int) -> list[str]:
    """Create n tasks of one attempt and nack each into the DLQ; return their ids."""
    ids = []
    for _ in range(n):
        task = create(client, command, maxAttempts=1)
        claimed = claim(client, command)
        assert claimed["id"] == task["id"]
        reply = client.post(f"{V1}/tasks/{task['id']}/nack",
                            json={"leaseId": claimed["leaseId"], "reason": "boom"})
        assert reply.json() == {"status": "dlq"}
        ids.append(task["id"])
    return ids


def test_counts_are_exact_after_a_mix_and_per_tenant(as_, command):
    c = as_("everything")
    for priority in (0, 0, 5):
        create(c, command, priority=priority)
    create(c, command, priority=9, maxAttempts=1)
    for _ in range(2):
        create(c, command, delaySeconds=3600)
    first = claim(c, command)  # the priority 9 one ...
    assert first["priority"] == 9
    c.post(f"{V1}/tasks/{first['id']}/nack", json={"leaseId": first["leaseId"]})  # ... to the DLQ
    assert claim(c, command)["priority"] == 5  # in progress
    reply = c.get(f"{ADMIN}/queues/{command}")
    assert reply.status_code == 200, reply.text
    detail = reply.json()
    age = detail.pop("oldestReadyAgeSeconds")
    assert 0 <= age < 60
    assert detail == {"command": command, "ready": 2, "delayed": 2, "inProgress": 1, "dlq": 1,
                      "readyByPriority": {"0": 2}}
    listed = {q["command"]: q for q in c.get(f"{ADMIN}/queues").json()["queues"]}
    assert {k: listed[command][k] for k in ("ready", "delayed", "inProgress", "dlq")} == {
        "ready": 2, "delayed": 2, "inProgress": 1, "dlq": 1}
    theirs = as_("other")
    assert command not in {q["command"] for q in theirs.get(f"{ADMIN}/queues").json()["queues"]}
    assert theirs.get(f"{ADMIN}/queues/{command}").json()["ready"] == 0
    # An empty queue has no oldest ready task.
    assert as_("admin").get(f"{ADMIN}/queues/{command}.none").json()[
        "oldestReadyAgeSeconds"] is None


def test_the_dlq_pages_with_a_cursor_oldest_first(as_, command):
    c = as_("everything")
    ids = dead_letter(c, command, 5)
    seen, cursor = [], None
    for expected in (2, 2, 1):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = c.get(f"{ADMIN}/queues/{command}/dlq", params=params).json()
        assert len(page["tasks"]) == expected
        for task in page["tasks"]:
            assert task["status"] == "FAILED" and task["error"] == "boom"
            assert "deadLetteredAt" in task
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["nextCursor"]
    assert cursor is None or c.get(f"{ADMIN}/queues/{command}/dlq",
                                   params={"cursor": cursor}).json()["tasks"] == []
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5


def test_requeue_makes_dead_letters_claimable_with_attempts_reset(as_, command):
    c = as_("everything")
    ids = dead_letter(c, command, 3)
    reply = c.post(f"{ADMIN}/queues/{command}/dlq/requeue", json={"ids": ids[:1]})
    assert reply.json() == {"requeued": 1}
    task = c.get(f"{V1}/tasks/{ids[0]}").json()
    assert (task["status"], task["attempts"]) == ("PENDING", 0)
    assert c.get(f"{V1}/tasks/{ids[0]}/result").status_code == 404  # its result went
    assert claim(c, command)["id"] == ids[0]
    assert c.post(f"{ADMIN}/queues/{command}/dlq/requeue").json() == {"requeued": 2}
    assert c.get(f"{ADMIN}/queues/{command}").json()["dlq"] == 0
    assert {claim(c, command)["id"] for _ in range(2)} == set(ids[1:])


def test_purge_removes_dead_letters_for_good(as_, command):
    c = as_("everything")
    ids = dead_letter(c, command, 3)
    assert as_("other").post(f"{ADMIN}/queues/{command}/dlq/purge").json() == {"removed": 0}
    assert c.post(f"{ADMIN}/queues/{command}/dlq/purge",
                  json={"ids": [ids[0]]}).json() == {"removed": 1}
    assert c.get(f"{V1}/tasks/{ids[0]}").status_code == 404
    assert c.post(f"{ADMIN}/queues/{command}/dlq/purge").json() == {"removed": 2}
    assert c.get(f"{ADMIN}/queues/{command}").json()["dlq"] == 0


@pytest.mark.parametrize(("method", "path", "params", "body", "field"), [
    ("GET", "/queues/bad%20name", None, None, "command"),
    ("GET", "/queues/{command}/dlq", {"limit": 0}, None, "limit"),
    ("GET", "/queues/{command}/dlq", {"limit": 501}, None, "limit"),
    ("GET", "/queues/{command}/dlq", {"cursor": "nonsense"}, None, "cursor"),
    ("POST", "/queues/{command}/dlq/requeue", None, {"ids": ["not-a-uuid"]}, "ids"),
    ("POST", "/queues/{command}/dlq/purge", None, {"ids": []}, "ids"),
    ("POST", "/tasks/cleanup", None, {"limit": 0}, "limit"),
])
def test_bad_admin_input_is_a_400_naming_the_field(as_, command, method, path, params, body,
                                                   field):
    reply = as_("admin").request(method, ADMIN + path.format(command=command), params=params,
                                 json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field


def test_admin_needs_its_scope(as_, command):
    reply = as_("everything").get(f"{ADMIN}/queues")
    assert reply.status_code == 200
    reply = as_("worker").get(f"{ADMIN}/queues")
    assert (reply.status_code, reply.json()["scope"]) == (403, "codeq:admin")


def test_cleanup_removes_finished_tasks_past_retention_now(tokens_file, command):
    store = new_store().start()
    # Upkeep almost never runs by itself here: only the cleanup call removes.
    server = CodeqServer("--store-url", store.url, "--log-level", "warning",
                         "--tick-interval", "3600", "--retention-seconds", "1",
                         "--auth", "on", "--tokens-file", str(tokens_file)).start()
    try:
        with httpx.Client(base_url=server.base, timeout=20, headers={
                "Authorization": f"Bearer {static_token('everything')}"}) as c:
            ids = []
            for _ in range(3):
                create(c, command)
                task = claim(c, command)
                c.post(f"{V1}/tasks/{task['id']}/result",
                       json={"status": "COMPLETED", "leaseId": task["leaseId"]})
                ids.append(task["id"])
            time.sleep(1.1)  # the retention itself must pass
            assert c.post(f"{ADMIN}/tasks/cleanup", json={"limit": 10}).json() == {"removed": 3}
            wait_until(lambda: all(c.get(f"{V1}/tasks/{i}").status_code == 404 for i in ids))
    finally:
        server.stop()
        store.cleanup()
