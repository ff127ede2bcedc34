"""The operators' commands of the installed ``codeq`` CLI, checked by their output."""

from __future__ import annotations

import json

import httpx

from tests.support import codeq_cli


def cli(server, *args: str):
    return codeq_cli(*args, "--url", server.base)


def dead_letter(server, command: str) -> str:
    with httpx.Client(base_url=server.base + "/v1/codeq", headers={"X-Worker-Id": "w"}) as h:
        task = h.post("/tasks", json={"command": command, "payload": 1, "maxAttempts": 1}).json()
        lease = h.post("/tasks/claim", json={"commands": [command]}).json()["leaseId"]
        h.post(f"/tasks/{task['id']}/nack", json={"leaseId": lease, "reason": "broken"})
        return task["id"]


def test_task_create_get_and_result(codeq_server, command):
    made = cli(codeq_server, "task", "create", command, '{"to": "ada"}', "--priority", "4",
               "--json")
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)
    assert (task["command"], task["priority"], task["status"]) == (command, 4, "PENDING")
    shown = cli(codeq_server, "task", "get", task["id"])
    assert shown.returncode == 0
    assert f"id           {task['id']}" in shown.stdout and "PENDING" in shown.stdout
    missing = cli(codeq_server, "task", "result", task["id"])
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "codeq: the task has no result yet (RESULT_NOT_FOUND)"]


def test_queues_and_the_dlq(codeq_server, command):
    first, second = dead_letter(codeq_server, command), dead_letter(codeq_server, command)
    table = cli(codeq_server, "queues")
    assert table.returncode == 0
    row = next(line for line in table.stdout.splitlines() if line.startswith(command))
    assert row.split()[1:5] == ["0", "0", "0", "2"]  # ready, delayed, in progress, dlq
    listed = cli(codeq_server, "dlq", "list", command, "--json")
    assert {t["id"] for t in json.loads(listed.stdout)["tasks"]} == {first, second}
    assert "broken" in cli(codeq_server, "dlq", "list", command).stdout
    requeued = cli(codeq_server, "dlq", "requeue", command, first)
    assert requeued.stdout.strip() == "requeued 1"
    refused = cli(codeq_server, "dlq", "purge", command)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = cli(codeq_server, "dlq", "purge", command, "--yes", "--json")
    assert json.loads(purged.stdout) == {"removed": 1}


def test_errors_are_one_line_and_a_nonzero_status(codeq_server):
    bad = cli(codeq_server, "task", "create", "bad name", "1")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "(BAD_REQUEST)" in bad.stderr
    down = codeq_cli("task", "get", "00000000-0000-4000-8000-000000000000",
                     "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and down.stderr.startswith("codeq: no answer from codeQ")
    assert cli(codeq_server, "task", "create", "x", "{not json").returncode == 2
