"""Every transition of the task state machine, straight on the engine."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from codeq import keys
from codeq.engine.upkeep import Report
from codeq.errors import (
    LeaseExpired,
    NotInProgress,
    NotOwner,
    StaleLease,
    StoreUnavailable,
    TaskNotFound,
)
from codeq.schemas import CreateTask, request_decoders
from tests.engine.conftest import TENANT
from tests.support import (
    command_calls,
    journal_position,
    kill_clients,
    refusing_writes,
    snapshot,
)
from tests.support import settled as store_settled


async def create(engine, command="job", payload=b'{"n":1}', **kw):
    task, created = await engine.create(TENANT, command, payload, **kw)
    assert created
    return task


async def claim_one(engine, commands=("job",), worker="w1", **kw):
    tasks = await engine.claim(TENANT, list(commands), worker, **kw)
    assert len(tasks) == 1, tasks
    return tasks[0]


async def settled(engine):
    """Wait until the store has run every command the engine sent so far
    (hints are sent without waiting for them)."""
    await store_settled(engine.store)


async def test_create_stores_a_pending_task(engine):
    task = await create(engine, payload=b'{"to": "a@b"}', max_attempts=3, webhook="https://x/y")
    assert task.status == "PENDING"
    assert task.attempts == 0
    assert task.maxAttempts == 3
    assert task.payload == '{"to": "a@b"}'
    assert task.webhook == "https://x/y"
    assert task.tenantId == TENANT
    assert abs(task.createdAt - datetime.now(UTC)) < timedelta(seconds=5)
    assert await engine.get(TENANT, task.id) == task


async def test_claim_leases_the_task(engine):
    task = await create(engine)
    claimed = await claim_one(engine, lease_seconds=30)
    assert claimed.id == task.id
    assert claimed.status == "IN_PROGRESS"
    assert claimed.attempts == 1
    assert claimed.workerId == "w1"
    assert claimed.leaseId
    lease_left = (claimed.leaseUntil - datetime.now(UTC)).total_seconds()
    assert 25 < lease_left <= 31
    assert await engine.claim(TENANT, ["job"], "w2") == []


async def test_each_claim_gets_a_fresh_lease_token(engine):
    await create(engine)
    first = await claim_one(engine)
    await engine.abandon(TENANT, first.id, "w1", first.leaseId)
    second = await claim_one(engine)
    assert second.id == first.id
    assert second.leaseId != first.leaseId


async def test_priority_tiers_then_fifo_and_clamping(engine):
    order = [(0, "a"), (9, "b"), (5, "c"), (9, "d"), (0, "e"), (12, "f"), (-3, "g")]
    ids = {}
    for priority, name in order:
        ids[(await create(engine, priority=priority)).id] = name
    claimed = [ids[(await claim_one(engine)).id] for _ in order]
    assert claimed == ["b", "d", "f", "c", "a", "e", "g"]


async def test_fifo_within_a_tier(engine):
    created = [(await create(engine, priority=4)).id for _ in range(50)]
    claimed = [(await claim_one(engine)).id for _ in range(50)]
    assert claimed == created


async def test_claim_across_commands_takes_the_most_urgent_first(engine):
    low = await create(engine, command="a", priority=1)
    high = await create(engine, command="b", priority=8)
    assert (await claim_one(engine, ["a", "b"])).id == high.id
    assert (await claim_one(engine, ["a", "b"])).id == low.id
    assert await engine.claim(TENANT, ["a", "b"], "w1") == []


async def test_claim_only_named_commands(engine):
    await create(engine, command="other")
    assert await engine.claim(TENANT, ["job"], "w1") == []


async def test_delayed_task_invisible_until_due(engine):
    task = await create(engine, delay_seconds=0.3)
    assert task.visibleAt > task.createdAt
    assert await engine.claim(TENANT, ["job"], "w1") == []
    await asyncio.sleep(0.35)
    assert (await claim_one(engine)).id == task.id


async def test_run_at_in_future_and_in_past(engine):
    later = await create(engine, run_at=datetime.now(UTC) + timedelta(seconds=60))
    now = await create(engine, run_at=datetime.now(UTC) - timedelta(seconds=60))
    assert (await claim_one(engine)).id == now.id
    assert await engine.claim(TENANT, ["job"], "w1") == []
    assert (await engine.get(TENANT, later.id)).status == "PENDING"


async def test_tick_promotes_due_tasks_without_a_claim(engine, store):
    task = await create(engine, delay_seconds=0.1)
    q = engine.queue(TENANT, "job")
    await asyncio.sleep(0.15)
    assert (await engine.tick()).promoted == 1
    assert store.lrange(q.ready_tier(0), 0, -1) == [task.id.encode()]


async def test_idempotency_key_returns_the_original(engine, store):
    first, created = await engine.create(TENANT, "job", b"1", idempotency_key="order-7")
    again, created_again = await engine.create(TENANT, "job", b"2", idempotency_key="order-7")
    assert created and not created_again
    assert again.id == first.id
    assert again.payload == "1"
    q = engine.queue(TENANT, "job")
    assert store.hlen(q.tasks) == store.hlen(q.payloads) == 1
    assert store.llen(q.ready_tier(0)) == 1


async def test_heartbeat_extends_the_lease(engine):
    await create(engine)
    task = await claim_one(engine, lease_seconds=5)
    until = await engine.heartbeat(TENANT, task.id, "w1", task.leaseId, 60)
    assert 55 < until - time.time() <= 61
    assert (await engine.get(TENANT, task.id)).leaseUntil.timestamp() == pytest.approx(until)


async def test_lease_holder_checks(engine, store):
    await create(engine)
    task = await claim_one(engine)
    await settled(engine)
    before = snapshot(store)
    with pytest.raises(NotOwner):
        await engine.heartbeat(TENANT, task.id, "w2", None)
    with pytest.raises(StaleLease):
        await engine.heartbeat(TENANT, task.id, "w1", "not-the-token")
    with pytest.raises(NotOwner):
        await engine.submit_result(TENANT, task.id, "w2", None, "COMPLETED")
    with pytest.raises(StaleLease):
        await engine.nack(TENANT, task.id, "w1", "stale")
    with pytest.raises(NotOwner):
        await engine.abandon(TENANT, task.id, "intruder", None)
    with pytest.raises(TaskNotFound):
        await engine.heartbeat(TENANT, "00000000-0000-4000-8000-000000000000", "w1", None)
    assert snapshot(store) == before


async def test_operations_after_expiry_are_refused(engine):
    await create(engine)
    task = await claim_one(engine, lease_seconds=1)
    await asyncio.sleep(1.05)
    with pytest.raises(LeaseExpired):
        await engine.heartbeat(TENANT, task.id, "w1", task.leaseId)
    with pytest.raises(LeaseExpired):
        await engine.submit_result(TENANT, task.id, "w1", task.leaseId, "COMPLETED")


async def test_stale_delivery_cannot_finish_a_redelivered_task(engine):
    await create(engine)
    first = await claim_one(engine, worker="pool")
    await engine.abandon(TENANT, first.id, "pool", first.leaseId)
    second = await claim_one(engine, worker="pool")
    with pytest.raises(StaleLease):
        await engine.submit_result(TENANT, first.id, "pool", first.leaseId, "COMPLETED")
    record = await engine.submit_result(TENANT, second.id, "pool", second.leaseId, "COMPLETED")
    assert record.status == "COMPLETED"


async def test_abandon_requeues_at_once_without_using_an_attempt(engine):
    a = await create(engine)
    b = await create(engine)
    claimed = await claim_one(engine)
    assert claimed.id == a.id
    await engine.abandon(TENANT, a.id, "w1", claimed.leaseId)
    task = await engine.get(TENANT, a.id)
    assert task.status == "PENDING"
    assert task.attempts == 0
    assert task.workerId is None and task.leaseId is None
    # Back at the head of its tier, ahead of b.
    assert (await claim_one(engine)).id == a.id
    assert (await claim_one(engine)).id == b.id


async def test_nack_requeues_after_the_delay(engine):
    task = await create(engine)
    claimed = await claim_one(engine)
    outcome, delay = await engine.nack(TENANT, task.id, "w1", claimed.leaseId, 0.3, "busy")
    assert (outcome, delay) == ("requeued", 0.3)
    stored = await engine.get(TENANT, task.id)
    assert stored.status == "PENDING"
    assert stored.error == "busy"
    assert stored.attempts == 1
    assert await engine.claim(TENANT, ["job"], "w1") == []
    await asyncio.sleep(0.35)
    again = await claim_one(engine)
    assert again.attempts == 2


async def test_nack_delay_is_capped_at_the_backoff_maximum(make_engine):
    engine = await make_engine(backoff_max_seconds=2.0)
    task = await create(engine)
    claimed = await claim_one(engine)
    assert await engine.nack(TENANT, task.id, "w1", claimed.leaseId, 3600) == ("requeued", 2.0)


async def test_nack_without_delay_uses_the_policy(engine):
    task = await create(engine)
    claimed = await claim_one(engine)
    assert await engine.nack(TENANT, task.id, "w1", claimed.leaseId) == ("requeued", 0.2)


async def test_nack_on_last_attempt_dead_letters(engine, store):
    task = await create(engine, max_attempts=1)
    claimed = await claim_one(engine)
    assert await engine.nack(TENANT, task.id, "w1", claimed.leaseId, 0, "broken") == ("dlq", None)
    stored, result = await engine.get_result(TENANT, task.id)
    assert stored.status == "FAILED"
    assert stored.error == "broken"  # the worker's last word stays on the task
    assert result.status == "FAILED"
    assert result.error == "MAX_ATTEMPTS"
    q = engine.queue(TENANT, "job")
    assert store.zscore(q.dlq, task.id) is not None
    assert store.zcard(q.inflight) == 0


async def test_result_is_terminal(engine):
    task = await create(engine)
    claimed = await claim_one(engine)
    record = await engine.submit_result(TENANT, task.id, "w1", claimed.leaseId, "COMPLETED",
                                        b'{"ok": true}', None, b'[{"name": "log"}]')
    assert record.status == "COMPLETED"
    assert bytes(record.result) == b'{"ok": true}'
    assert bytes(record.artifacts) == b'[{"name": "log"}]'
    with pytest.raises(NotInProgress):
        await engine.submit_result(TENANT, task.id, "w1", claimed.leaseId, "FAILED")
    with pytest.raises(NotInProgress):
        await engine.heartbeat(TENANT, task.id, "w1", None)
    stored, result = await engine.get_result(TENANT, task.id)
    assert stored.status == "COMPLETED"
    assert result == record


async def test_failed_result_keeps_the_error(engine):
    task = await create(engine)
    claimed = await claim_one(engine)
    record = await engine.submit_result(TENANT, task.id, "w1", claimed.leaseId, "FAILED",
                                        error="smtp refused")
    assert (record.status, record.error) == ("FAILED", "smtp refused")
    assert (await engine.get(TENANT, task.id)).status == "FAILED"


async def test_expired_lease_redelivers_then_dead_letters(make_engine, store):
    engine = await make_engine(backoff_base_seconds=0.0)
    task = await create(engine, max_attempts=2)
    first = await claim_one(engine, lease_seconds=1)
    await asyncio.sleep(1.05)
    assert (await engine.tick()).requeued == 1
    second = await claim_one(engine, worker="w2", lease_seconds=1)
    assert second.id == task.id
    assert second.attempts == 2
    assert second.leaseId != first.leaseId
    await asyncio.sleep(1.05)
    assert (await engine.tick()).dead == 1
    stored, result = await engine.get_result(TENANT, task.id)
    assert stored.status == "FAILED"
    assert result.error == "LEASE_EXPIRED"
    assert store.zscore(engine.queue(TENANT, "job").dlq, task.id) is not None


async def test_upkeep_removes_only_finished_tasks_past_retention(make_engine, store):
    engine = await make_engine(retention_seconds=1)
    done = await create(engine, idempotency_key="k")
    claimed = await claim_one(engine)
    await engine.submit_result(TENANT, done.id, "w1", claimed.leaseId, "COMPLETED")
    pending = await create(engine)
    assert (await engine.tick()).removed == 0  # not expired yet
    await asyncio.sleep(1.05)
    assert (await engine.tick()).removed == 1
    with pytest.raises(TaskNotFound):
        await engine.get(TENANT, done.id)
    assert (await engine.get(TENANT, pending.id)).status == "PENDING"
    q = engine.queue(TENANT, "job")
    assert store.hlen(q.results) == 0
    assert store.hlen(q.idem) == 0
    assert store.zcard(q.done) == 0
    assert store.hlen(q.payloads) == 1  # the pending task's only


async def test_claim_long_poll_woken_by_another_process(make_engine):
    worker_side = await make_engine()
    producer_side = await make_engine()
    started = time.monotonic()
    poll = asyncio.ensure_future(worker_side.claim(TENANT, ["job"], "w1", wait_seconds=10))
    await asyncio.sleep(0.2)
    assert not poll.done()
    task = await create(producer_side)
    claimed = await asyncio.wait_for(poll, 5)
    assert [t.id for t in claimed] == [task.id]
    assert time.monotonic() - started < 2


async def test_claim_long_poll_times_out_empty(engine):
    started = time.monotonic()
    assert await engine.claim(TENANT, ["job"], "w1", wait_seconds=0.3) == []
    assert 0.25 <= time.monotonic() - started < 2


async def test_a_task_claimed_as_its_caller_left_is_given_back(engine):
    task = await create(engine)
    gone = asyncio.get_running_loop().create_future()
    gone.set_result(None)  # the caller's connection has closed
    assert await engine.claim(TENANT, ["job"], "w1", wait_seconds=5, gone=gone) == []
    back = await engine.get(TENANT, task.id)
    assert (back.status, back.attempts) == ("PENDING", 0)


async def test_one_ready_task_wakes_one_of_many_pollers(make_engine):
    engine = await make_engine()
    polls = [asyncio.ensure_future(engine.claim(TENANT, ["job"], f"w{i}", wait_seconds=3))
             for i in range(5)]
    await asyncio.sleep(0.2)
    await create(engine)
    results = await asyncio.gather(*polls)
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 1]


async def test_result_long_poll_woken_by_another_process(make_engine):
    reader = await make_engine()
    worker = await make_engine()
    task = await create(worker)
    claimed = await claim_one(worker)
    poll = asyncio.ensure_future(reader.get_result(TENANT, task.id, wait=10))
    await asyncio.sleep(0.2)
    assert not poll.done()
    await worker.submit_result(TENANT, task.id, "w1", claimed.leaseId, "COMPLETED", b"42")
    stored, result = await asyncio.wait_for(poll, 5)
    assert bytes(result.result) == b"42"
    assert stored.status == "COMPLETED"


async def test_tasks_promoted_by_a_claim_wake_other_pollers(make_engine):
    engine = await make_engine()  # upkeep loops off: only the claim promotes
    await create(engine, delay_seconds=0.2)
    await create(engine, delay_seconds=0.2)
    poll = asyncio.ensure_future(engine.claim(TENANT, ["job"], "poller", wait_seconds=5))
    await asyncio.sleep(0.3)
    assert not poll.done()
    assert len(await engine.claim(TENANT, ["job"], "other")) == 1  # promotes both, takes one
    started = time.monotonic()
    assert len(await asyncio.wait_for(poll, 5)) == 1
    assert time.monotonic() - started < 1


async def test_multi_command_long_poll_is_woken_by_any_of_them(make_engine):
    engine = await make_engine()
    poll = asyncio.ensure_future(engine.claim(TENANT, ["a", "b", "c"], "w1", wait_seconds=5))
    await asyncio.sleep(0.2)
    task = await create(engine, command="c")
    assert [t.id for t in await asyncio.wait_for(poll, 5)] == [task.id]


async def test_foreign_messages_on_the_events_channel_are_ignored(make_engine, store):
    engine = await make_engine()
    poll = asyncio.ensure_future(engine.claim(TENANT, ["job"], "w1", wait_seconds=5))
    await asyncio.sleep(0.2)
    for junk in (b"ready|default|job|many", b"ready", b"\xff\xfe", b"result|x", b"hello"):
        store.publish(keys.EVENTS_CHANNEL, junk)
    task = await create(engine)
    assert [t.id for t in await asyncio.wait_for(poll, 5)] == [task.id]


async def test_store_refusing_writes_is_unavailable_and_changes_nothing(engine, store):
    await create(engine)  # registers the queue, so the refused create adds no key
    await settled(engine)  # its hints too (on a cluster, on other masters' connections)
    before = snapshot(store)
    with refusing_writes(store) as refusal, pytest.raises(StoreUnavailable, match=refusal):
        await engine.create(TENANT, "job", b"{}")
    # The id -> command key went out in the same write; the store refused it too.
    assert snapshot(store) == before
    assert (await create(engine)).status == "PENDING"


async def test_idle_upkeep_writes_nothing(engine, store):
    await create(engine)
    await create(engine, delay_seconds=60)
    await engine.tick()
    await settled(engine)  # the creates' hints too (on a cluster, on other masters)
    before = journal_position(store), snapshot(store)
    for _ in range(5):
        assert await engine.tick() == Report()
    assert (journal_position(store), snapshot(store)) == before


async def test_long_poll_survives_a_lost_subscription(make_engine, store):
    worker_side = await make_engine()
    producer_side = await make_engine()
    poll = asyncio.ensure_future(worker_side.claim(TENANT, ["job"], "w1", wait_seconds=10))
    await asyncio.sleep(0.2)
    assert kill_clients(store, kind="pubsub")  # every process' subscriber drops
    task = await create(producer_side)  # published while nobody listens
    # The resubscribe wakes every poll to look again, so none waits it out.
    assert [t.id for t in await asyncio.wait_for(poll, 5)] == [task.id]


def evalsha_calls(store) -> int:
    return command_calls(store, "evalsha")


async def poll_waits(store, command="job"):
    """Wait until a poll claimed, found nothing and waits (its waiting key is set)."""
    deadline = time.monotonic() + 5
    while not store.exists(keys.QueueKeys(TENANT, command).waiting):
        assert time.monotonic() < deadline, "no poll came to wait"
        await asyncio.sleep(0.01)


async def test_a_poll_on_a_queue_known_empty_waits_without_a_claim(engine, store):
    first = asyncio.ensure_future(engine.claim(TENANT, ["job"], "w1", wait_seconds=5))
    await poll_waits(store)
    before = evalsha_calls(store)
    second = asyncio.ensure_future(engine.claim(TENANT, ["job"], "w2", wait_seconds=5))
    await asyncio.sleep(0.2)
    assert evalsha_calls(store) == before  # waits at once: no claim that finds nothing
    task = await create(engine)
    claimed = await asyncio.wait_for(first, 5)  # the longest waiting is woken, and claims
    assert [t.id for t in claimed] == [task.id]
    task = await create(engine)
    assert [t.id for t in await asyncio.wait_for(second, 5)] == [task.id]


async def test_tasks_no_waiter_here_will_take_end_the_known_empty(engine, store):
    first = asyncio.ensure_future(engine.claim(TENANT, ["job"], "w1", wait_seconds=5))
    await poll_waits(store)
    await engine.create_many(TENANT, [
        request_decoders[CreateTask].decode(b'{"command": "job", "payload": 1}')] * 2)
    assert len(await asyncio.wait_for(first, 5)) == 1
    # One of the two announced tasks had no waiter here: a new poll claims it at once.
    started = time.monotonic()
    assert len(await engine.claim(TENANT, ["job"], "w2", wait_seconds=5)) == 1
    assert time.monotonic() - started < 1
