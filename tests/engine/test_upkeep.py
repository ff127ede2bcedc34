"""Upkeep by the due index: its cost follows the queues with due work."""

from __future__ import annotations

import asyncio
import time

from codeq import keys
from codeq.engine import upkeep
from codeq.engine.upkeep import Report
from tests.engine.conftest import TENANT
from tests.support import command_calls, kill_clients
from tests.support import settled as store_settled


def index_of(command: str) -> tuple[bytes, bytes, bytes]:
    """The due-index shard keys of a queue, and its member there."""
    member = keys.queue_member(TENANT, command)
    shard = keys.due_shard(member)
    return keys.due(shard), keys.upkeep(shard), member


async def create(engine, command="job", **kw):
    task, _ = await engine.create(TENANT, command, b"{}", **kw)
    return task


async def claim(engine, command="job", **kw):
    [task] = await engine.claim(TENANT, [command], "w1", **kw)
    return task


async def settled(engine):
    """Wait until the store has run every command the engine sent so far
    (hints are sent without waiting for them)."""
    await store_settled(engine.store)


async def tick_until(engine, done, timeout=10.0) -> Report:
    """Tick until the reports summed since the start satisfy ``done``."""
    total = Report()
    deadline = time.monotonic() + timeout
    while True:
        total += await engine.tick()
        if done(total):
            return total
        assert time.monotonic() < deadline, f"upkeep did not get there: {total}"
        await asyncio.sleep(0.02)


def commands_run(store) -> int:
    """Commands the store ran, less its upkeep: PINGs, INFOs, a cluster's slot
    map reads and its replicas' once-a-second REPLCONF ACKs."""
    return command_calls(store) - command_calls(store, "ping", "info", "cluster", "replconf")


async def test_upkeep_visits_only_queues_with_due_work(make_engine, store):
    # A long backoff keeps the requeued tasks delayed, so "promoted" counts only "later".
    engine = await make_engine(backoff_base_seconds=5)
    for n in range(200):
        await create(engine, f"idle.{n}")
    await create(engine, "later", delay_seconds=1)
    for n in range(3):
        await create(engine, f"leased.{n}")
        await claim(engine, f"leased.{n}", lease_seconds=1)
    assert (await engine.tick()).queues == 0  # nothing is due yet
    report = await tick_until(engine, lambda r: r.promoted == 1 and r.requeued == 3)
    assert report.queues == 4


async def test_an_idle_tick_costs_the_same_with_2000_queues_as_with_one(engine, store):
    async def cost_of_a_tick() -> int:
        before = commands_run(store)
        await engine.tick()
        return commands_run(store) - before

    await create(engine, "one")
    await engine.tick()
    baseline = await cost_of_a_tick()
    await asyncio.gather(*(create(engine, f"q.{n}") for n in range(2000)))
    await settled(engine)
    assert len(store.smembers(keys.tenant_commands(TENANT))) == 2001
    assert await cost_of_a_tick() == baseline


async def test_a_queue_leaves_the_registry_once_empty(make_engine, store):
    engine = await make_engine(retention_seconds=0.2)
    task = await create(engine, "short")
    leased = await claim(engine, "short")
    await engine.submit_result(TENANT, task.id, "w1", leased.leaseId, "COMPLETED")
    await create(engine, "busy")
    await settled(engine)
    registry = keys.tenant_commands(TENANT)
    assert store.smembers(registry) == {b"short", b"busy"}
    await tick_until(engine, lambda r: r.removed == 1)
    assert store.smembers(registry) == {b"busy"}
    due, _, member = index_of("short")
    assert store.zscore(due, member) is None  # nothing left to look after
    # A new task registers the queue again.
    await create(engine, "short")
    await settled(engine)
    assert store.smembers(registry) == {b"short", b"busy"}


async def test_a_repeated_create_does_not_stop_the_registration_of_the_next(make_engine,
                                                                             store):
    first, second = await make_engine(retention_seconds=0.2), await make_engine()
    task = await create(first, idempotency_key="k")
    leased = await claim(first)
    await first.submit_result(TENANT, task.id, "w1", leased.leaseId, "COMPLETED")
    # A retried create finds the original: no task made, nothing to remember.
    again, made = await second.create(TENANT, "job", b"{}", idempotency_key="k")
    assert not made and again.id == task.id
    await tick_until(first, lambda r: r.removed == 1)  # the queue is empty: forgotten
    assert store.smembers(keys.tenant_commands(TENANT)) == set()
    await create(second)  # the second process must register the queue again
    await settled(second)
    assert store.smembers(keys.tenant_commands(TENANT)) == {b"job"}
    assert await second.sweep() == 1


async def test_an_upkeep_cut_short_is_taken_over_when_its_lease_ends(make_engine, store):
    crashed, survivor = await make_engine(), await make_engine()
    await create(crashed, delay_seconds=0.05)
    await settled(crashed)
    due, held, member = index_of("job")
    await asyncio.sleep(0.1)
    # A process takes the queue for upkeep, then dies before doing it.
    taken = await crashed._run("upkeep_take", (due, held), (10, 1000))
    assert taken[1:] == [member]
    assert (await survivor.tick()).queues == 0  # held by the dead one
    report = await tick_until(survivor, lambda r: r.promoted == 1)
    assert report.queues == 1


async def test_a_hint_written_during_an_upkeep_is_kept(engine, store):
    await create(engine, delay_seconds=0.05)
    await settled(engine)
    due, held, member = index_of("job")
    await asyncio.sleep(0.1)
    lease, taken = await engine._run("upkeep_take", (due, held), (10, 60_000))
    assert taken == member
    assert (await engine.tick()).queues == 0  # held: never visited twice at once
    later = await create(engine, delay_seconds=0.3)  # hints while the upkeep runs
    await settled(engine)
    # The upkeep, which saw the queue before that create, says "nothing more".
    await engine._run("upkeep_done", (due, held), (lease, member, -1))
    assert store.zscore(due, member) is not None
    await tick_until(engine, lambda r: r.promoted == 2)  # the first task and the later one
    assert later.id.encode() in store.lrange(engine.queue(TENANT, "job").ready_tier(0), 0, -1)


async def test_queues_held_by_others_do_not_keep_due_ones_waiting(engine, store, monkeypatch):
    # More held queues with a pending hint in each shard than a take takes.
    monkeypatch.setattr(upkeep, "TAKE_LIMIT", 20)
    for n in range(600):
        await create(engine, f"held.{n}", delay_seconds=0.01)
    await settled(engine)
    await asyncio.sleep(0.05)
    for shard in range(keys.DUE_SHARDS):
        taken = await engine._run("upkeep_take", (keys.due(shard), keys.upkeep(shard)),
                                  (1000, 60_000))
        assert len(taken) > 21
    for n in range(600):  # hints for the held queues, as if created meanwhile
        await create(engine, f"held.{n}", delay_seconds=0.01)
    await create(engine, "free", delay_seconds=0.01)
    await settled(engine)
    await asyncio.sleep(0.05)
    report = await engine.tick()
    assert (report.queues, report.promoted) == (1, 1)


async def test_the_sweep_restores_a_lost_due_index(engine, store):
    await create(engine, delay_seconds=0.05)
    await settled(engine)
    due, _, _ = index_of("job")
    store.delete(due)  # as if the hint had been lost
    await asyncio.sleep(0.1)
    assert (await engine.tick()).promoted == 0
    assert await engine.sweep() == 1
    assert (await engine.tick()).promoted == 1


async def test_a_reconnection_sweeps_for_hints_it_may_have_lost(make_engine, store):
    engine = await make_engine(tick_interval=0.05, sweep_interval=3600)
    engine.start()  # the upkeep loops run
    await create(engine)
    await claim(engine, lease_seconds=0.3)
    await settled(engine)
    due, _, _ = index_of("job")
    store.delete(due)  # the claim's hint went down with the connection...
    assert kill_clients(store, "codeq")  # ...which drops
    queue = engine.queue(TENANT, "job")
    deadline = time.monotonic() + 10
    while store.llen(queue.ready_tier(0)) != 1:  # requeued once the lease ran out
        assert time.monotonic() < deadline, "the expired lease was never requeued"
        await asyncio.sleep(0.05)


async def test_a_shorter_heartbeat_brings_the_expiry_closer(engine, store):
    await create(engine)
    task = await claim(engine, lease_seconds=60)
    await engine.heartbeat(TENANT, task.id, "w1", task.leaseId, 0.2)
    await tick_until(engine, lambda r: r.requeued == 1, timeout=5)


async def test_a_delayed_nack_is_promoted_on_time_without_a_claim(engine, store):
    await create(engine)
    task = await claim(engine, lease_seconds=60)
    assert await engine.nack(TENANT, task.id, "w1", task.leaseId, 0.2) == ("requeued", 0.2)
    await tick_until(engine, lambda r: r.promoted == 1, timeout=5)


async def test_a_queue_whose_upkeep_fails_holds_back_no_other(engine, store):
    await create(engine, "good", delay_seconds=0.05)
    await create(engine, "bad", delay_seconds=0.05)
    await settled(engine)
    store.set(engine.queue(TENANT, "bad").done, "not a zset")  # its tick script fails
    await asyncio.sleep(0.1)
    report = await engine.tick()
    assert (report.queues, report.promoted) == (1, 1)  # "good" went through
    good_due, _, good = index_of("good")
    _, bad_held, bad = index_of("bad")
    assert store.zscore(good_due, good) is None  # settled: nothing more to do
    assert store.zscore(bad_held, bad) is not None  # left to its lease, to be taken again
