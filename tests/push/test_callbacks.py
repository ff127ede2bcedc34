"""Result callbacks: one signed POST per terminal transition, durable, retried."""

from __future__ import annotations

import hashlib
import hmac
import signal
import time

import httpx
import pytest

from tests.support import Receiver, wait_until

from .conftest import SECRET

W = {"X-Worker-Id": "w1"}


def create(client: httpx.Client, command: str, webhook: str, **extra) -> dict:
    reply = client.post("/v1/codeq/tasks", json={"command": command, "payload": {"n": 1},
                                                 "webhook": webhook, **extra})
    assert reply.status_code == 202, reply.text
    return reply.json()


def claim(client: httpx.Client, command: str, **extra) -> dict:
    reply = client.post("/v1/codeq/tasks/claim", headers=W,
                        json={"commands": [command], "waitSeconds": 5, **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def result(client: httpx.Client, task: dict, status: str = "COMPLETED", **extra) -> dict:
    reply = client.post(f"/v1/codeq/tasks/{task['id']}/result", headers=W,
                        json={"status": status, "leaseId": task["leaseId"], **extra})
    assert reply.status_code == 200, reply.text
    return reply.json()


def callback_state(client: httpx.Client, task_id: str) -> dict | None:
    return client.get(f"/v1/codeq/tasks/{task_id}").json().get("callback")


def wait_state(client: httpx.Client, task_id: str, status: str, timeout: float = 15) -> dict:
    return wait_until(lambda: (s := callback_state(client, task_id)) and s["status"] == status
                      and s, timeout, what=f"callback {status}")


def verify(receiver: Receiver, n: int = 0) -> dict:
    """Check the n-th POST's signature and delivery id header; return its body."""
    _, headers, body = receiver.got[n]
    timestamp = headers["X-CodeQ-Timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-CodeQ-Signature"], expected)
    assert headers["Content-Type"] == "application/json"
    sent = receiver.bodies()[n]
    assert headers["X-CodeQ-Delivery-Id"] == sent["deliveryId"]
    return sent


def test_completed_result_is_posted_signed_and_shown_delivered(push_server, command):
    with Receiver() as receiver, httpx.Client(base_url=push_server.base, timeout=20) as client:
        task = create(client, command, receiver.url())
        assert "callback" not in client.get(f"/v1/codeq/tasks/{task['id']}").json()
        done = result(client, claim(client, command), result={"messageId": "m-1"},
                      artifacts=[{"name": "log"}])
        receiver.wait_for(1)
        sent = verify(receiver)
        assert sent == {"taskId": task["id"], "command": command, "status": "COMPLETED",
                        "result": {"messageId": "m-1"}, "artifacts": [{"name": "log"}],
                        "attempts": 1, "completedAt": done["completedAt"],
                        "deliveryId": sent["deliveryId"]}
        assert wait_state(client, task["id"], "delivered") == {"status": "delivered",
                                                               "attempts": 1}
        assert receiver.got[0][0] == "/hook"


def test_failed_result_is_posted_with_its_error(push_server, command):
    with Receiver() as receiver, httpx.Client(base_url=push_server.base, timeout=20) as client:
        task = create(client, command, receiver.url())
        result(client, claim(client, command), "FAILED", error="smtp down")
        sent = verify(receiver) if receiver.wait_for(1) else None
        assert sent["status"] == "FAILED" and sent["error"] == "smtp down"
        assert "result" not in sent and sent["taskId"] == task["id"]


def test_nack_into_the_dlq_is_posted(push_server, command):
    with Receiver() as receiver, httpx.Client(base_url=push_server.base, timeout=20) as client:
        task = create(client, command, receiver.url(), maxAttempts=1)
        claimed = claim(client, command)
        reply = client.post(f"/v1/codeq/tasks/{task['id']}/nack", headers=W,
                            json={"reason": "bad input", "leaseId": claimed["leaseId"]})
        assert reply.json() == {"status": "dlq"}
        receiver.wait_for(1)
        sent = verify(receiver)
        assert (sent["status"], sent["error"], sent["attempts"]) == ("FAILED", "MAX_ATTEMPTS", 1)


def test_lease_expiry_into_the_dlq_is_posted(push_server, command):
    with Receiver() as receiver, httpx.Client(base_url=push_server.base, timeout=20) as client:
        task = create(client, command, receiver.url(), maxAttempts=1)
        claim(client, command, leaseSeconds=1)
        receiver.wait_for(1)
        sent = verify(receiver)
        assert (sent["taskId"], sent["status"], sent["error"]) == (task["id"], "FAILED",
                                                                   "LEASE_EXPIRED")


def test_batch_results_post_one_callback_per_task(push_server, command):
    with Receiver() as receiver, httpx.Client(base_url=push_server.base, timeout=20) as client:
        ids = {create(client, command, receiver.url())["id"] for _ in range(3)}
        reply = client.post("/v1/codeq/tasks/claim/batch", headers=W,
                            json={"commands": [command], "count": 3})
        tasks = reply.json()["tasks"]
        assert len(tasks) == 3
        reply = client.post("/v1/codeq/tasks/batch/results", headers=W, json={"results": [
            {"taskId": t["id"], "leaseId": t["leaseId"], "status": "COMPLETED",
             "result": {"i": n}} for n, t in enumerate(tasks)]})
        assert all("result" in item for item in reply.json()["results"])
        receiver.wait_for(3)
        sent = [verify(receiver, n) for n in range(3)]
        assert {s["taskId"] for s in sent} == ids
        assert len({s["deliveryId"] for s in sent}) == 3


def test_a_task_without_webhook_owes_nothing(push_server, command, store_of_push):
    with httpx.Client(base_url=push_server.base, timeout=20) as client:
        reply = client.post("/v1/codeq/tasks", json={"command": command, "payload": 1})
        task = reply.json()
        result(client, claim(client, command))
        assert "callback" not in client.get(f"/v1/codeq/tasks/{task['id']}").json()
        assert store_of_push.zcard(f"codeq:{{default:{command}}}:outbox") == 0


def test_errors_are_retried_with_the_same_delivery_id_until_a_2xx(push_server, command,
                                                                 store_of_push):
    with Receiver(answers=[500, 503]) as receiver, \
            httpx.Client(base_url=push_server.base, timeout=20) as client:
        task = create(client, command, receiver.url())
        result(client, claim(client, command))
        bodies = receiver.wait_for(3)
        assert len({b["deliveryId"] for b in bodies}) == 1
        state = wait_state(client, task["id"], "delivered")
        assert state["attempts"] == 3 and "HTTP 503" in state["lastError"]
        # Delivered: out of the outbox, so nothing more can come.
        assert store_of_push.zscore(f"codeq:{{default:{command}}}:outbox", task["id"]) is None
        assert len(receiver.got) == 3


def test_a_receiver_that_never_answers_ends_failed(push_server, command):
    # push_server: 3 attempts of 1 s each at most.
    with Receiver(hang=True) as receiver, \
            httpx.Client(base_url=push_server.base, timeout=20) as client:
        task = create(client, command, receiver.url())
        result(client, claim(client, command))
        state = wait_state(client, task["id"], "failed", timeout=30)
        assert state["attempts"] == 3 and "no answer within 1 s" in state["lastError"]
        assert len(receiver.got) == 3


def test_a_refusing_receiver_ends_failed_with_the_status(push_server, command):
    with Receiver(answers=[404] * 5) as receiver, \
            httpx.Client(base_url=push_server.base, timeout=20) as client:
        task = create(client, command, receiver.url())
        result(client, claim(client, command))
        state = wait_state(client, task["id"], "failed")
        assert state == {"status": "failed", "attempts": 3,
                         "lastError": f"HTTP 404 from 127.0.0.1:{receiver.port}"}


def test_a_callback_owed_by_a_killed_process_is_delivered_by_the_next(serve, command):
    first = serve()
    with Receiver(hang=True) as receiver, \
            httpx.Client(base_url=first.base, timeout=20) as client:
        task = create(client, command, receiver.url())
        result(client, claim(client, command))
        receiver.wait_for(1)  # the first attempt is in flight: kill its sender
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        receiver.release()
        second = serve()
        bodies = receiver.wait_for(2, timeout=20)
        assert bodies[0]["deliveryId"] == bodies[1]["deliveryId"]
        client.base_url = second.base
        assert wait_state(client, task["id"], "delivered")["attempts"] == 1


def test_a_callback_owed_when_its_process_dies_is_delivered_after_a_restart(serve, command):
    # A 30 s timeout: the hanging receiver must hold the one slot until the kill.
    server = serve("--callback-concurrency", "1", "--callback-timeout", "30")
    with Receiver(hang=True) as busy, Receiver() as receiver, \
            httpx.Client(base_url=server.base, timeout=20) as client:
        # The one delivery slot is held by a hanging receiver ...
        create(client, command, busy.url())
        result(client, claim(client, command))
        busy.wait_for(1)
        # ... so this callback is owed, and nothing has taken it, when the process dies.
        task = create(client, command, receiver.url())
        result(client, claim(client, command))
        assert callback_state(client, task["id"]) == {"status": "pending", "attempts": 0}
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        client.base_url = serve().base
        sent = receiver.wait_for(1, timeout=20)
        assert sent[0]["taskId"] == task["id"]
        assert wait_state(client, task["id"], "delivered")["attempts"] == 1


# 4 delivery slots, at most 2 to one receiver; an attempt may hang for 30 s
# (each test releases its hanging receiver long before).
CAPPED = ("--callback-concurrency", "4", "--callback-host-concurrency", "2",
          "--callback-timeout", "30")


def test_a_hanging_receiver_holds_only_its_share_of_the_slots(serve, command):
    server = serve(*CAPPED)
    with Receiver(hang=True) as slow, Receiver() as fast, \
            httpx.Client(base_url=server.base, timeout=20) as client:
        waiting = [create(client, command, slow.url()) for _ in range(6)]
        for _ in waiting:
            result(client, claim(client, command))
        slow.wait_for(2)
        # Sharing 4 slots, the hanging receiver would hold them all for 30 s.
        other = create(client, command + ".other", fast.url())
        result(client, claim(client, command + ".other"))
        assert fast.wait_for(1, timeout=5)[0]["taskId"] == other["id"]
        assert len(slow.got) == 2  # the rest wait, unsent
        slow.release()
        states = [wait_state(client, t["id"], "delivered", timeout=30) for t in waiting]
        # The two cut short count one failed attempt each; waiting unsent counts none.
        assert sorted(s["attempts"] for s in states) == [1, 1, 1, 1, 2, 2]
        assert len(slow.got) == 8


def test_a_queue_calling_a_hanging_and_another_receiver_reaches_the_other(serve, command):
    server = serve(*CAPPED)
    with Receiver(hang=True) as slow, Receiver() as fast, \
            httpx.Client(base_url=server.base, timeout=20) as client:
        waiting = [create(client, command, slow.url()) for _ in range(4)]
        other = create(client, command, fast.url())  # behind them in the same queue
        for _ in range(5):
            result(client, claim(client, command))
        assert fast.wait_for(1, timeout=8)[0]["taskId"] == other["id"]
        assert len(slow.got) == 2
        slow.release()
        states = [wait_state(client, t["id"], "delivered", timeout=30) for t in waiting]
        assert sorted(s["attempts"] for s in states) == [1, 1, 2, 2]
        assert wait_state(client, other["id"], "delivered")["attempts"] == 1


def test_two_processes_never_deliver_one_entry_twice(serve, command):
    # A 30 s timeout: a reply slowed past 1 s by the load would be sent again,
    # which at-least-once allows but this test would count as a double delivery.
    first, second = serve("--callback-timeout", "30"), serve("--callback-timeout", "30")
    tasks = 500
    with Receiver() as receiver, httpx.Client(base_url=first.base, timeout=20) as a, \
            httpx.Client(base_url=second.base, timeout=20) as b:
        for start in range(0, tasks, 100):
            reply = a.post("/v1/codeq/tasks/batch", json={"tasks": [
                {"command": command, "payload": i, "webhook": receiver.url()}
                for i in range(start, start + 100)]})
            assert all("task" in item for item in reply.json()["results"])
        for n in range(tasks // 100):
            client = (a, b)[n % 2]
            reply = client.post("/v1/codeq/tasks/claim/batch", headers=W,
                                json={"commands": [command], "count": 100})
            results = [{"taskId": t["id"], "leaseId": t["leaseId"], "status": "COMPLETED",
                        "result": n} for t in reply.json()["tasks"]]
            assert client.post("/v1/codeq/tasks/batch/results", headers=W,
                               json={"results": results}).status_code == 200
        receiver.wait_for(tasks, timeout=60)
        # Once the outbox is empty, nothing is left that could be sent again.
        outbox = serve.store.client()
        wait_until(lambda: outbox.zcard(f"codeq:{{default:{command}}}:outbox") == 0,
                   what="an empty outbox")
        outbox.close()
        bodies = receiver.bodies()
        assert len({b["taskId"] for b in bodies}) == tasks
        assert len(bodies) == tasks, "an entry was delivered twice"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/", "file:///etc/passwd", "gopher://x", "http://localhost:8080/",
    "http://2130706433/", "http://0x7f000001/", "http://user:pw@example.com/",
    "http://[::ffff:127.0.0.1]/", "http://metadata.google.internal/", "ftp://example.com/",
    "http://127\uff0e0\uff0e0\uff0e1/", "http://\uff11\uff12\uff17.0.0.1/",
    "http://169\u3002254\u3002169\u3002254/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a00:1::1]/", "http://0x7f.1/", "http://" + "a" * 64 + ".example.com/",
])
def test_internal_or_odd_webhooks_are_refused(strict_server, command, url):
    with httpx.Client(base_url=strict_server.base, timeout=20) as client:
        reply = client.post("/v1/codeq/tasks", json={"command": command, "payload": 1,
                                                     "webhook": url})
        assert reply.status_code == 400, reply.text
        assert reply.json()["field"] == "webhook"
        reply = client.post("/v1/codeq/tasks/batch", json={"tasks": [
            {"command": command, "payload": 1, "webhook": url},
            {"command": command, "payload": 2}]})
        first, second = reply.json()["results"]
        assert first["field"] == "webhook" and "task" in second
        # Nothing of the refused ones was stored: only the good batch item.
        claimed = client.post("/v1/codeq/tasks/claim/batch", headers=W,
                              json={"commands": [command], "count": 10}).json()["tasks"]
        assert [t["payload"] for t in claimed] == ["2"]


def test_a_name_resolving_to_an_internal_address_is_not_called(strict_server, command):
    import socket

    name = next((n for n in (socket.gethostname(), "ip6-localhost", "localhost.localdomain")
                 if _resolves_internal(n)), None)
    if name is None:
        pytest.skip("no host name here resolves to an internal address")
    with Receiver() as receiver, \
            httpx.Client(base_url=strict_server.base, timeout=20) as client:
        url = receiver.url().replace("127.0.0.1", name)
        task = create(client, command, url)
        result(client, claim(client, command))
        state = wait_state(client, task["id"], "failed")
        assert "internal addresses" in state["lastError"], state
        assert receiver.got == []


def _resolves_internal(name: str) -> bool:
    import ipaddress
    import socket

    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        return False
    return bool(found) and all(not ipaddress.ip_address(a.split("%")[0]).is_global
                               for a in found)
