"""The store layout: lean records, scripts per queue not per task, few lookups."""

from __future__ import annotations

import json

import pytest

from codeq import keys
from codeq._core import connect
from codeq.config import Settings
from codeq.engine import Engine, Notifier
from codeq.engine.queue import LayoutMismatch
from codeq.schemas import CreateTask, request_decoders
from tests.engine.conftest import TENANT
from tests.support import NODE_KIND, command_calls, journal_position


def calls(store, command: str) -> int:
    return command_calls(store, command)


def item(command: str, **fields) -> CreateTask:
    body = {"command": command, "payload": {"n": 1}, **fields}
    return request_decoders[CreateTask].decode(json.dumps(body).encode())


async def test_a_batch_runs_one_script_per_queue(engine, store):
    for command in ("a", "b", "c"):  # their queue numbers are known from here on
        await engine.create(TENANT, command, b"0")
    before = calls(store, "evalsha")
    made = await engine.create_many(TENANT, [item(c) for c in "abcabcabca"])
    assert calls(store, "evalsha") - before == 3
    assert [task.command for task, _ in made] == list("abcabcabca")
    claimed = await engine.claim(TENANT, ["a", "b"], "w1", count=8)
    assert len(claimed) == 8
    before = calls(store, "evalsha")
    outcomes = await engine.submit_results(
        TENANT, "w1", [(t.id, t.leaseId, "COMPLETED", b"", None, b"") for t in claimed])
    assert calls(store, "evalsha") - before == 2
    assert [o.status for o in outcomes] == ["COMPLETED"] * 8


async def test_a_claim_pops_only_tiers_that_hold_tasks(engine, store):
    await engine.create(TENANT, "job", b"1", priority=0)
    await engine.create(TENANT, "job", b"2", priority=4)
    before = calls(store, "lpop")
    assert len(await engine.claim(TENANT, ["job"], "w1")) == 1
    assert len(await engine.claim(TENANT, ["job"], "w1")) == 1
    # Scanning all ten lists would be 6 + 10 pops; a tier emptied by taking its
    # last task leaves the index at once.
    assert calls(store, "lpop") - before == 2
    assert store.zcard("codeq:{default:job}:tiers") == 0
    assert await engine.claim(TENANT, ["job"], "w1") == []
    assert await engine.claim(TENANT, ["job"], "w1") == []
    assert calls(store, "lpop") - before == 2  # nothing is left to pop from


async def test_a_claim_across_many_empty_commands_claims_from_none(engine, store):
    commands = [f"empty.{n}" for n in range(64)]
    before = calls(store, "evalsha")
    assert await engine.claim(TENANT, commands, "w1", wait_seconds=0.2) == []
    # 64 peeks (in one pipelined round trip) per look, and no claim script.
    assert (calls(store, "evalsha") - before) % 64 == 0
    await engine.create(TENANT, "empty.63", b"1", priority=3)
    before = calls(store, "evalsha")
    [task] = await engine.claim(TENANT, commands, "w1")
    assert task.command == "empty.63"
    assert calls(store, "evalsha") - before == 65


async def test_changing_a_task_never_rewrites_its_payload(engine, store):
    payload = b'"' + b"x" * 1_000_000 + b'"'
    task, _ = await engine.create(TENANT, "big", payload)
    q = engine.queue(TENANT, "big")
    assert store.hstrlen(q.tasks, task.id) < 200  # the record holds no payload
    [leased] = await engine.claim(TENANT, ["big"], "w1", lease_seconds=60)
    assert leased.payload == payload.decode()
    before = journal_position(store)
    for _ in range(5):
        await engine.heartbeat(TENANT, task.id, "w1", leased.leaseId, 60)
    await engine.nack(TENANT, task.id, "w1", leased.leaseId, 0)
    if NODE_KIND == "redis":  # its journal is in bytes; KVRocks' WAL counts writes
        assert journal_position(store) - before < 20_000


@pytest.mark.parametrize(("found", "refused"), [
    ({keys.TENANTS: ("sadd", "default")}, "0.1"),
    ({keys.LAYOUT: ("set", "3")}, "layout '3'"),
])
async def test_a_store_of_another_layout_is_refused(store_url, store, found, refused):
    for key, (command, value) in found.items():
        store.execute_command(command, key, value)
    engine = Engine(connect(store_url), Notifier(store_url), Settings())
    try:
        with pytest.raises(LayoutMismatch, match=refused):
            await engine.open(loops=False)
    finally:
        await engine.close()


async def test_an_empty_store_is_marked_with_this_layout(engine, store):
    assert store.get(keys.LAYOUT) == keys.LAYOUT_VERSION
