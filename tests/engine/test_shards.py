"""--queue-shards: one command's tasks spread over several queues (hash tags)."""

from __future__ import annotations

import asyncio

import pytest

from codeq import keys
from codeq.engine.queue import LayoutMismatch
from codeq.schemas import CreateTask
from tests.engine.conftest import TENANT

SHARDS = 3


@pytest.fixture
async def sharded(make_engine):
    return await make_engine(queue_shards=SHARDS)


def shard_tags(engine, command="job"):
    return [engine.queue(TENANT, name) for name in engine.shard_names(command)]


async def test_creates_spread_round_robin_over_hash_tags(sharded, store):
    for n in range(3 * SHARDS):
        await sharded.create(TENANT, "job", b'{"n":%d}' % n)
    queues = shard_tags(sharded)
    assert [q.tasks for q in queues] == [b"codeq:{default:job}:tasks",
                                         b"codeq:{default:job#1}:tasks",
                                         b"codeq:{default:job#2}:tasks"]
    assert [store.hlen(q.tasks) for q in queues] == [3, 3, 3]


async def test_claims_visit_every_shard_and_report_the_command(sharded):
    created = {(await sharded.create(TENANT, "job", b"{}"))[0].id for _ in range(7)}
    claimed = await sharded.claim(TENANT, ["job"], "w1", count=10)
    assert {t.id for t in claimed} == created
    assert {t.command for t in claimed} == {"job"}
    for task in claimed:
        stored = await sharded.get(TENANT, task.id)
        assert stored.command == "job" and stored.status == "IN_PROGRESS"


async def test_no_shard_starves(sharded):
    # One task a shard: single claims from a rotating start take all three.
    for _ in range(SHARDS):
        await sharded.create(TENANT, "job", b"{}")
    got = [await sharded.claim(TENANT, ["job"], "w1") for _ in range(SHARDS)]
    assert all(len(tasks) == 1 for tasks in got)
    assert await sharded.claim(TENANT, ["job"], "w1") == []


async def test_priority_holds_within_a_shard_and_across_when_spread(sharded):
    # Round-robin creates give every shard the same mix: all the high ones
    # go before any low one.
    for _ in range(SHARDS):
        await sharded.create(TENANT, "job", b'"low"', priority=1)
    for _ in range(SHARDS):
        await sharded.create(TENANT, "job", b'"high"', priority=7)
    order = [(await sharded.claim(TENANT, ["job"], "w1"))[0].priority for _ in range(2 * SHARDS)]
    assert order == [7] * SHARDS + [1] * SHARDS


async def test_an_idempotent_retry_meets_its_first_try(sharded, store):
    first, created = await sharded.create(TENANT, "job", b"{}", idempotency_key="k1")
    assert created
    for _ in range(2 * SHARDS):  # whatever the round-robin turn
        again, created = await sharded.create(TENANT, "job", b"{}", idempotency_key="k1")
        assert not created and again.id == first.id
        batch = await sharded.create_many(TENANT, [CreateTask(command="job", payload=b"{}",
                                                              idempotencyKey="k1")])
        assert batch[0][0].id == first.id and not batch[0][1]
    assert sum(store.hlen(q.tasks) for q in shard_tags(sharded)) == 1


async def test_results_heartbeats_and_nacks_find_their_shard(sharded):
    for _ in range(SHARDS):
        await sharded.create(TENANT, "job", b"{}", max_attempts=1)
    tasks = await sharded.claim(TENANT, ["job"], "w1", count=SHARDS)
    assert len(tasks) == SHARDS
    done, failing, kept = tasks
    await sharded.heartbeat(TENANT, kept.id, "w1", kept.leaseId, 60)
    await sharded.submit_result(TENANT, done.id, "w1", done.leaseId, "COMPLETED", b'{"ok":1}')
    assert await sharded.nack(TENANT, failing.id, "w1", failing.leaseId) == ("dlq", None)
    _, result = await sharded.get_result(TENANT, done.id)
    assert result.status == "COMPLETED"
    stats = await sharded.admin.queue(TENANT, "job")
    assert (stats.ready, stats.in_progress, stats.dlq) == (0, 1, 1)


async def test_expired_leases_of_every_shard_are_requeued(make_engine):
    engine = await make_engine(queue_shards=SHARDS, backoff_base_seconds=0.0)
    for _ in range(SHARDS):
        await engine.create(TENANT, "job", b"{}")
    first = await engine.claim(TENANT, ["job"], "w1", count=SHARDS, lease_seconds=0.2)
    assert len(first) == SHARDS
    await asyncio.sleep(0.25)
    await engine.store.call(b"PING")  # the lease hints are in
    assert (await engine.tick()).requeued == SHARDS
    again = await engine.claim(TENANT, ["job"], "w2", count=SHARDS)
    assert {t.id for t in again} == {t.id for t in first}


async def test_delayed_tasks_of_every_shard_fall_due(sharded):
    for _ in range(SHARDS):
        await sharded.create(TENANT, "job", b"{}", delay_seconds=0.2)
    assert await sharded.claim(TENANT, ["job"], "w1", count=SHARDS) == []
    await asyncio.sleep(0.25)
    await sharded.store.call(b"PING")
    assert (await sharded.tick()).promoted == SHARDS
    assert len(await sharded.claim(TENANT, ["job"], "w1", count=SHARDS)) == SHARDS


async def test_a_long_poll_is_woken_by_a_task_on_any_shard(make_engine):
    producer = await make_engine(queue_shards=SHARDS)
    worker = await make_engine(queue_shards=SHARDS)
    for _ in range(SHARDS):  # tasks land on every shard, one by one
        poll = asyncio.create_task(worker.claim(TENANT, ["job"], "w1", wait_seconds=10))
        await asyncio.sleep(0.05)  # let the poll start waiting
        created, _ = await producer.create(TENANT, "job", b"{}")
        got = await asyncio.wait_for(poll, 5)
        assert [t.id for t in got] == [created.id]


async def test_admin_sums_shards_and_pages_their_dead_letters_in_order(sharded, store):
    ids = []
    for n in range(2 * SHARDS):
        task, _ = await sharded.create(TENANT, "job", b'{"n":%d}' % n, max_attempts=1)
        ids.append(task.id)
    await sharded.create(TENANT, "job", b"{}", priority=5)
    for task in await sharded.claim(TENANT, ["job"], "w1", count=10):
        if task.id in ids:
            await sharded.nack(TENANT, task.id, "w1", task.leaseId)
    stats = await sharded.admin.queue(TENANT, "job")
    assert (stats.ready, stats.dlq) == (0, 2 * SHARDS)
    # Pages of 4 walk all six dead letters across the shards, oldest first.
    seen, cursor = [], None
    while True:
        page, cursor = await sharded.admin.dlq(TENANT, "job", 4, cursor)
        seen += [(d.dead_lettered_at, d.task.id) for d in page]
        if cursor is None:
            break
    assert sorted(i for _, i in seen) == sorted(ids)
    assert seen == sorted(seen)
    # Requeue two by id (on different shards), then the rest by "oldest".
    chosen = ids[:2]  # on two shards (round-robin)
    assert await sharded.admin.requeue(TENANT, "job", chosen) == 2
    assert (await sharded.admin.queue(TENANT, "job")).ready == 2
    assert await sharded.admin.purge(TENANT, "job", None) == 2 * SHARDS - 2
    assert (await sharded.admin.queue(TENANT, "job")).dlq == 0


async def test_an_empty_command_is_forgotten_only_when_every_shard_is(make_engine, store):
    engine = await make_engine(queue_shards=SHARDS, retention_seconds=0.2)
    registry = keys.tenant_commands(TENANT)
    for _ in range(2):
        await engine.create(TENANT, "job", b"{}")
    one, other = await engine.claim(TENANT, ["job"], "w1", count=2)
    await engine.submit_result(TENANT, one.id, "w1", one.leaseId, "COMPLETED")
    await asyncio.sleep(0.25)
    await engine.store.call(b"PING")
    await engine.tick()
    assert store.sismember(registry, "job")  # the other shard still holds a task
    await engine.submit_result(TENANT, other.id, "w1", other.leaseId, "COMPLETED")
    await asyncio.sleep(0.25)
    await engine.store.call(b"PING")
    await engine.tick()
    assert not store.sismember(registry, "job")


async def test_a_process_with_another_shard_count_is_refused(sharded, make_engine, store):
    assert store.get(keys.QUEUE_SHARDS) == str(SHARDS).encode()
    with pytest.raises(LayoutMismatch, match="--queue-shards 3"):
        await make_engine(queue_shards=1)


async def test_a_store_used_before_shards_were_recorded_counts_as_unsharded(make_engine, store):
    store.set(keys.LAYOUT, keys.LAYOUT_VERSION)
    with pytest.raises(LayoutMismatch, match="over 1 shard"):
        await make_engine(queue_shards=2)


async def test_dead_letters_of_one_instant_page_whole(make_engine):
    # One upkeep dead-letters them all at the same millisecond: more ties on
    # the cursor's score than one read of the zset holds.
    engine = await make_engine(queue_shards=1)
    total = 700
    for _ in range(total // 100):
        await engine.create_many(TENANT, [CreateTask(command="job", payload=b"{}",
                                                     maxAttempts=1) for _ in range(100)])
    claimed = []
    while len(claimed) < total:
        claimed += await engine.claim(TENANT, ["job"], "w1", count=100, lease_seconds=0.1)
    await asyncio.sleep(0.15)
    await engine.store.call(b"PING")
    assert (await engine.tick()).dead == total
    seen, cursor = [], None
    while True:
        page, cursor = await engine.admin.dlq(TENANT, "job", 100, cursor)
        seen += [d.task.id for d in page]
        if cursor is None:
            break
    assert sorted(seen) == sorted(t.id for t in claimed)
