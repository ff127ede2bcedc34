"""Upkeep by the due index: its cost follows the queues with due work."""

from __future__ import annotations

import asyncio

from codeq import keys
from tests.engine.conftest import TENANT

DUE, HELD = keys.tenant_due(TENANT), keys.tenant_upkeep(TENANT)


async def create(engine, command="job", **kw):
    task, _ = await engine.create(TENANT, command, b"{}", **kw)
    return task


async def claim(engine, command="job", **kw):
    [task] = await engine.claim(TENANT, [command], "w1", **kw)
    return task


def commands_processed(store) -> int:
    return int(store.info("stats")["total_commands_processed"])


async def test_upkeep_visits_only_queues_with_due_work(engine, store):
    for n in range(200):
        await create(engine, f"idle.{n}")
    await create(engine, "later", delay_seconds=0.2)
    for n in range(3):
        await create(engine, f"leased.{n}")
        await claim(engine, f"leased.{n}", lease_seconds=0.3)
    assert (await engine.tick()).queues == 0  # nothing is due yet
    await asyncio.sleep(0.35)
    report = await engine.tick()
    assert (report.queues, report.promoted, report.requeued) == (4, 1, 3)


async def test_an_idle_tick_costs_the_same_with_2000_queues_as_with_none(engine, store):
    async def cost_of_a_tick() -> int:
        before = commands_processed(store)
        await engine.tick()
        return commands_processed(store) - before

    await create(engine, "one")
    await engine.tick()
    baseline = await cost_of_a_tick()
    await asyncio.gather(*(create(engine, f"q.{n}") for n in range(2000)))
    assert len(store.smembers(keys.tenant_commands(TENANT))) == 2001
    assert await cost_of_a_tick() == baseline


async def test_a_queue_leaves_the_registry_once_empty(make_engine, store):
    engine = await make_engine(retention_seconds=0.2)
    task = await create(engine, "short")
    leased = await claim(engine, "short")
    await engine.submit_result(TENANT, task.id, "w1", leased.leaseId, "COMPLETED")
    await create(engine, "busy")
    registry = keys.tenant_commands(TENANT)
    assert store.smembers(registry) == {b"short", b"busy"}
    await asyncio.sleep(0.25)
    assert (await engine.tick()).removed == 1
    assert store.smembers(registry) == {b"busy"}
    assert store.zscore(DUE, "short") is None  # nothing left to look after
    # A new task registers the queue again.
    await create(engine, "short")
    assert store.smembers(registry) == {b"short", b"busy"}


async def test_an_upkeep_cut_short_is_taken_over_when_its_lease_ends(make_engine, store):
    crashed, survivor = await make_engine(), await make_engine()
    await create(crashed, delay_seconds=0.05)
    await asyncio.sleep(0.1)
    # A process takes the queue for upkeep, then dies before doing it.
    taken = await crashed._run("upkeep_take", (DUE, HELD), (10, 300))
    assert taken[1:] == [b"job"]
    assert (await survivor.tick()).queues == 0  # held by the dead one
    await asyncio.sleep(0.35)
    assert (await survivor.tick()).promoted == 1


async def test_a_hint_written_during_an_upkeep_is_kept(engine, store):
    await create(engine, delay_seconds=0.05)
    await asyncio.sleep(0.1)
    lease, command = await engine._run("upkeep_take", (DUE, HELD), (10, 60_000))
    assert (await engine.tick()).queues == 0  # held: never visited twice at once
    later = await create(engine, delay_seconds=0.3)  # hints while the upkeep runs
    await engine.store.call(b"PING")  # the hint has landed
    # The upkeep, which saw the queue before that create, says "nothing more".
    await engine._run("upkeep_done", (DUE, HELD), (lease, command, -1))
    assert store.zscore(DUE, "job") is not None
    await asyncio.sleep(0.35)
    assert (await engine.tick()).promoted == 2  # the first task and the later one
    ready = store.lrange(engine.queue(TENANT, "job").ready_tier(0), 0, -1)
    assert later.id.encode() in ready


async def test_the_sweep_restores_a_lost_due_index(engine, store):
    await create(engine, delay_seconds=0.05)
    await engine.store.call(b"PING")
    store.delete(DUE)  # as if the hint had been lost
    await asyncio.sleep(0.1)
    assert (await engine.tick()).promoted == 0
    assert await engine.sweep() == 1
    assert (await engine.tick()).promoted == 1


async def test_a_shorter_heartbeat_brings_the_expiry_closer(engine, store):
    await create(engine)
    task = await claim(engine, lease_seconds=60)
    await engine.heartbeat(TENANT, task.id, "w1", task.leaseId, 0.2)
    await asyncio.sleep(0.25)
    assert (await engine.tick()).requeued == 1


async def test_a_delayed_nack_is_promoted_on_time_without_a_claim(engine, store):
    await create(engine)
    task = await claim(engine, lease_seconds=60)
    assert await engine.nack(TENANT, task.id, "w1", task.leaseId, 0.2) == ("requeued", 0.2)
    await asyncio.sleep(0.25)
    assert (await engine.tick()).promoted == 1


async def test_a_queue_whose_upkeep_fails_holds_back_no_other(engine, store):
    await create(engine, "good", delay_seconds=0.05)
    await create(engine, "bad", delay_seconds=0.05)
    store.set(engine.queue(TENANT, "bad").done, "not a zset")  # its tick script fails
    await asyncio.sleep(0.1)
    report = await engine.tick()
    assert (report.queues, report.promoted) == (1, 1)  # "good" went through
    assert store.zscore(DUE, "good") is None  # settled: nothing more to do
    assert store.zscore(HELD, "bad") is not None  # left to its lease, to be taken again
