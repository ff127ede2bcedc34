"""Availability webhooks: who is told that a queue got work, and how often."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime

import httpx
import pytest

from tests.support import Receiver, wait_until

from .conftest import SECRET

W = {"X-Worker-Id": "w1"}
BASE = "/v1/codeq/workers/subscriptions"


def subscribe(client: httpx.Client, url: str, *commands: str, **extra) -> dict:
    body = {"callbackUrl": url, **({"eventTypes": list(commands)} if commands else {}), **extra}
    reply = client.post(BASE, json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()


def make_available(client: httpx.Client, command: str, **extra) -> dict:
    """Create a task in an empty queue (the change that notifies)."""
    reply = client.post("/v1/codeq/tasks", json={"command": command, "payload": 1, **extra})
    assert reply.status_code == 202, reply.text
    return reply.json()


def drain(client: httpx.Client, command: str) -> None:
    reply = client.post("/v1/codeq/tasks/claim/batch", headers=W,
                        json={"commands": [command], "count": 100, "waitSeconds": 5})
    assert reply.status_code == 200, reply.text


def cycles(client: httpx.Client, command: str, n: int, witness: Receiver) -> None:
    """n times: the queue goes from empty to available; the witness hears each."""
    for i in range(n):
        make_available(client, command)
        witness.wait_for(i + 1)
        drain(client, command)


def pool_heard(*pool: Receiver) -> None:
    """Wait for the pool's 3 notifications: each is sent alongside the witness's."""
    wait_until(lambda: sum(len(r.got) for r in pool) >= 3, what="the pool's notifications")


@pytest.fixture
def client(push_server):
    with httpx.Client(base_url=push_server.base, timeout=20) as client:
        yield client


def test_fanout_notifies_every_subscriber_signed(client, command):
    with Receiver() as one, Receiver() as two:
        subscribe(client, one.url(), command, minIntervalSeconds=0)
        subscribe(client, two.url(), command, minIntervalSeconds=0)
        make_available(client, command)
        for receiver in (one, two):
            [sent] = receiver.wait_for(1)
            assert sent["eventType"] == command and sent["available"] is True
            assert sent["queueDepth"] == 1
            assert sent["claimUrl"].endswith("/v1/codeq/tasks/claim")
            datetime.fromisoformat(sent["sentAt"])
            _, headers, body = receiver.got[0]
            assert headers["X-CodeQ-Delivery-Id"] == sent["notificationId"]
            timestamp = headers["X-CodeQ-Timestamp"]
            assert headers["X-CodeQ-Signature"] == hmac.new(
                SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def test_more_tasks_in_a_queue_that_has_some_notify_nobody(client, command):
    with Receiver() as receiver, Receiver() as witness:
        subscribe(client, receiver.url(), command, minIntervalSeconds=0)
        make_available(client, command)
        receiver.wait_for(1)
        make_available(client, command)  # not empty before: no news
        other = command + ".other"
        subscribe(client, witness.url(), other, minIntervalSeconds=0)
        make_available(client, other)
        witness.wait_for(1)
        assert len(receiver.got) == 1


def test_group_mode_notifies_one_member_per_group_in_turn(client, command):
    with Receiver() as a, Receiver() as b, Receiver() as c, Receiver() as solo:
        for receiver in (a, b, c):
            subscribe(client, receiver.url(), command, deliveryMode="group", groupId="pool",
                      minIntervalSeconds=0)
        subscribe(client, solo.url(), command, deliveryMode="group", groupId="other",
                  minIntervalSeconds=0)
        cycles(client, command, 3, witness=solo)
        pool_heard(a, b, c)
        assert [len(r.got) for r in (a, b, c)] == [1, 1, 1]  # each in turn
        assert len(solo.got) == 3  # a group of one gets every one


def test_hash_mode_picks_one_stable_member(client, command):
    with Receiver() as a, Receiver() as b, Receiver() as c, Receiver() as witness:
        for receiver in (a, b, c):
            subscribe(client, receiver.url(), command, deliveryMode="hash", groupId="h",
                      minIntervalSeconds=0)
        subscribe(client, witness.url(), command, minIntervalSeconds=0)
        cycles(client, command, 3, witness=witness)
        pool_heard(a, b, c)
        assert sorted(len(r.got) for r in (a, b, c)) == [0, 0, 3]


def test_min_interval_is_respected(client, command):
    with Receiver() as slow, Receiver() as witness:
        subscribe(client, slow.url(), command, minIntervalSeconds=60)
        subscribe(client, witness.url(), command, minIntervalSeconds=0)
        cycles(client, command, 3, witness=witness)
        assert len(slow.got) == 1


def test_expired_and_deleted_subscriptions_get_nothing(client, command, store_of_push):
    with Receiver() as expired, Receiver() as deleted, Receiver() as witness:
        short = subscribe(client, expired.url(), command, ttlSeconds=1, minIntervalSeconds=0)
        gone = subscribe(client, deleted.url(), command, minIntervalSeconds=0)
        assert client.delete(f"{BASE}/{gone['subscriptionId']}").status_code == 204
        assert client.delete(f"{BASE}/{gone['subscriptionId']}").status_code == 404
        expiry = "codeq:{default}:subs:expiry"
        wait_until(lambda: store_of_push.zscore(expiry, short["subscriptionId"])
                   < time.time() * 1000, timeout=5, what="the subscription to expire")
        reply = client.post(f"{BASE}/{short['subscriptionId']}/heartbeat")
        assert reply.status_code == 404
        subscribe(client, witness.url(), command, minIntervalSeconds=0)
        cycles(client, command, 1, witness=witness)
        assert expired.got == [] and deleted.got == []


def test_heartbeat_extends_the_expiry(client, command):
    with Receiver() as receiver:
        sub = subscribe(client, receiver.url(), command, ttlSeconds=100)
        reply = client.post(f"{BASE}/{sub['subscriptionId']}/heartbeat")
        assert reply.status_code == 200
        renewed = reply.json()
        assert renewed["subscriptionId"] == sub["subscriptionId"]
        assert datetime.fromisoformat(renewed["expiresAt"]) >= datetime.fromisoformat(
            sub["expiresAt"])


def test_a_delayed_task_falling_due_and_an_abandon_notify(client, command):
    with Receiver() as receiver:
        subscribe(client, receiver.url(), command, minIntervalSeconds=0)
        make_available(client, command, delaySeconds=0.3)
        receiver.wait_for(1)  # from the upkeep, when it fell due
        reply = client.post("/v1/codeq/tasks/claim", headers=W,
                            json={"commands": [command], "waitSeconds": 5})
        task = reply.json()
        assert client.post(f"/v1/codeq/tasks/{task['id']}/abandon", headers=W,
                           json={"leaseId": task["leaseId"]}).status_code == 200
        receiver.wait_for(2)


def test_a_subscription_naming_no_command_hears_of_every_command(serve):
    server = serve()
    with Receiver() as receiver, httpx.Client(base_url=server.base, timeout=20) as client:
        subscribe(client, receiver.url(), minIntervalSeconds=0)
        make_available(client, "first")
        make_available(client, "second")
        assert {b["eventType"] for b in receiver.wait_for(2)} == {"first", "second"}


@pytest.mark.parametrize(("body", "field"), [
    ({"callbackUrl": "http://10.1.2.3/hook"}, "callbackUrl"),
    ({"callbackUrl": "ftp://example.com/"}, "callbackUrl"),
    ({}, "callbackUrl"),
    ({"callbackUrl": "https://example.com/", "deliveryMode": "broadcast"}, "deliveryMode"),
    ({"callbackUrl": "https://example.com/", "ttlSeconds": 0}, "ttlSeconds"),
    ({"callbackUrl": "https://example.com/", "eventTypes": ["bad name"]}, "eventTypes"),
    ({"callbackUrl": "https://example.com/", "minIntervalSeconds": -1}, "minIntervalSeconds"),
])
def test_bad_subscriptions_are_refused(strict_server, body, field):
    with httpx.Client(base_url=strict_server.base, timeout=20) as client:
        reply = client.post(BASE, json=body)
        assert reply.status_code == 400, reply.text
        assert reply.json()["field"] == field


def test_unknown_or_malformed_subscription_ids(client):
    unknown = "00000000-0000-4000-8000-000000000000"
    reply = client.post(f"{BASE}/{unknown}/heartbeat")
    assert (reply.status_code, reply.json()["code"]) == (404, "SUBSCRIPTION_NOT_FOUND")
    assert client.delete(f"{BASE}/{unknown}").status_code == 404
    reply = client.delete(f"{BASE}/not-a-uuid")
    assert (reply.status_code, reply.json()["field"]) == (400, "id")
