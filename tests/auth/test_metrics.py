"""/metrics: counters summed over the server processes, depths read from the store."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support import CodeqServer, new_store, wait_until

from .conftest import static_token

W: dict[str, str] = {}  # the worker is the token's name
V1 = "/v1/codeq"


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_a_known_sequence_with_two_processes(tokens_file, command):
    store = new_store().start()
    server = CodeqServer("--store-url", store.url, "--workers", "2", "--log-level", "warning",
                         "--tick-interval", "0.05", "--auth", "on",
                         "--tokens-file", str(tokens_file)).start()
    try:
        # Many connections, so both processes take some of the requests.
        auth = {"Authorization": f"Bearer {static_token('everything')}"}
        clients = [httpx.Client(base_url=server.base, timeout=20, headers=auth)
                   for _ in range(8)]
        for n in range(16):
            reply = clients[n % 8].post(f"{V1}/tasks", json={"command": command, "payload": n})
            assert reply.status_code == 202
        dead = clients[0].post(f"{V1}/tasks", json={"command": command + ".one", "payload": 1,
                                                    "maxAttempts": 1}).json()
        expiring = clients[1].post(f"{V1}/tasks", json={
            "command": command + ".two", "payload": 1, "maxAttempts": 1}).json()
        claimed = []
        for n in range(4):
            reply = clients[n].post(f"{V1}/tasks/claim", headers=W,
                                    json={"commands": [command]})
            claimed.append(reply.json())
        for n, status in enumerate(("COMPLETED", "COMPLETED", "FAILED")):
            reply = clients[n].post(f"{V1}/tasks/{claimed[n]['id']}/result", headers=W,
                                    json={"status": status, "leaseId": claimed[n]["leaseId"]})
            assert reply.status_code == 200
        task = clients[2].post(f"{V1}/tasks/claim", headers=W,
                               json={"commands": [command + ".one"]}).json()
        assert task["id"] == dead["id"]
        clients[3].post(f"{V1}/tasks/{task['id']}/nack", headers=W, json={})
        clients[4].post(f"{V1}/tasks/claim", headers=W,
                        json={"commands": [command + ".two"], "leaseSeconds": 1})
        q = {"tenant": "acme", "command": command}
        expected = [
            ("codeq_lease_expirations_total", {"tenant": "acme", "command": command + ".two"},
             1),
            ("codeq_tasks_created_total", q, 16),
            ("codeq_tasks_claimed_total", q, 4),
            ("codeq_tasks_completed_total", {"status": "COMPLETED", **q}, 2),
            ("codeq_tasks_completed_total", {"status": "FAILED", **q}, 1),
            ("codeq_tasks_dead_lettered_total", {"tenant": "acme", "command": command + ".one",
                                                 "reason": "MAX_ATTEMPTS"}, 1),
            ("codeq_tasks_dead_lettered_total", {"tenant": "acme", "command": command + ".two",
                                                 "reason": "LEASE_EXPIRED"}, 1),
            ("codeq_queue_depth", {"state": "ready", **q}, 12),
            ("codeq_queue_depth", {"state": "in_progress", **q}, 1),
            ("codeq_queue_depth", {"tenant": "acme", "command": command + ".one",
                                   "state": "dlq"}, 1),
            ("codeq_http_requests_total", {"route": "/v1/codeq/tasks", "method": "POST",
                                           "status": "202"}, 18),
            ("codeq_http_request_duration_seconds_count", {"route": "/v1/codeq/tasks/claim"}, 6),
        ]

        def differences():
            samples = scrape(clients[5])
            return [(name, labels, value(samples, name, **labels), want)
                    for name, labels, want in expected
                    if value(samples, name, **labels) != want]

        # Other processes' counts reach a scrape within a second.
        wait_until(lambda: not differences(), timeout=15, what="the counts")
        samples = scrape(clients[6])
        assert value(samples, "codeq_queue_oldest_ready_age_seconds", **q) >= 0
        assert value(samples, "codeq_store_call_duration_seconds_count") > 0
        assert value(samples, "codeq_store_call_duration_seconds_bucket", le="+Inf") == value(
            samples, "codeq_store_call_duration_seconds_count")
        assert expiring["id"]
        for client in clients:
            client.close()
    finally:
        server.stop()
        store.cleanup()
