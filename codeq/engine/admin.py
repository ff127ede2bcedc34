"""Operators' view of a tenant's queues: depths, the dead-letter queue, cleanup.

Every call costs O(commands) or O(page) store work, never O(tasks): counts
are list lengths and zset cardinalities, and the oldest ready task of a
queue is the head of one of its ten FIFO tier lists (queue_stats.lua). A
sharded command's figures are its shards' summed (the oldest: the oldest of
their heads), and its DLQ pages are merged from theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from codeq import keys
from codeq.errors import TaskNotFound
from codeq.keys import PRIORITY_MAX
from codeq.schemas import MAX_ADMIN_PAGE, Task, task_of

if TYPE_CHECKING:
    from codeq.engine.queue import Engine

MAX_PAGE = MAX_ADMIN_PAGE


@dataclass
class QueueStats:
    command: str
    ready: int
    delayed: int
    in_progress: int
    dlq: int
    oldest_ready_age: float | None  # seconds, None when nothing is ready
    ready_by_priority: dict[str, int]


@dataclass
class DeadLetter:
    task: Task
    dead_lettered_at: datetime


class Admin:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _shards(self, tenant: str, command: str) -> list[keys.QueueKeys]:
        return [self.engine.queue(tenant, name) for name in self.engine.shard_names(command)]

    async def queue(self, tenant: str, command: str) -> QueueStats:
        replies = await asyncio.gather(*(
            self.engine._run("queue_stats",
                             (*q.ready, q.tiers, q.delayed, q.inflight, q.dlq, q.tasks), ())
            for q in self._shards(tenant, command)))
        tiers = [sum(r[i] for r in replies) for i in range(10)]
        ages = [max(0, r[14] - r[13]) / 1000 for r in replies if r[13] >= 0]
        return QueueStats(
            command=command, ready=sum(tiers), delayed=sum(r[10] for r in replies),
            in_progress=sum(r[11] for r in replies), dlq=sum(r[12] for r in replies),
            oldest_ready_age=max(ages) if ages else None,
            ready_by_priority={str(PRIORITY_MAX - i): n for i, n in enumerate(tiers) if n})

    async def queues(self, tenant: str) -> list[QueueStats]:
        commands = sorted(await self.engine.registry.commands(tenant))
        return list(await asyncio.gather(*(self.queue(tenant, c) for c in commands)))

    async def dlq(self, tenant: str, command: str, limit: int, cursor: tuple[int, str] | None,
                  ) -> tuple[list[DeadLetter], tuple[int, str] | None]:
        """A page of dead-lettered tasks, oldest first, after ``cursor`` (score, id)."""
        start = b"-inf" if cursor is None else cursor[0]
        shards = self._shards(tenant, command)
        # Ties on the score are ordered by id: skip those up to the cursor's.
        raws = await asyncio.gather(*(
            self.engine._cmd(b"ZRANGEBYSCORE", q.dlq, start, b"+inf", b"WITHSCORES",
                             b"LIMIT", 0, limit + MAX_PAGE if cursor else limit)
            for q in shards))
        found = sorted((int(float(raw[i + 1])), raw[i].decode(), q)
                       for q, raw in zip(shards, raws, strict=True)
                       for i in range(0, len(raw), 2))
        if cursor is not None:
            found = [f for f in found if f[:2] > (cursor[0], cursor[1])]
        found = found[:limit]
        records = await asyncio.gather(*(self._task(q, tenant, i) for _, i, q in found))
        page = [DeadLetter(task, datetime.fromtimestamp(score / 1000, UTC))
                for (score, _, _), task in zip(found, records, strict=True) if task is not None]
        after = (found[-1][0], found[-1][1]) if len(found) == limit else None
        return page, after

    async def _task(self, q: keys.QueueKeys, tenant: str, task_id: str) -> Task | None:
        raw, payload = await asyncio.gather(self.engine._cmd(b"HGET", q.tasks, task_id),
                                            self.engine._cmd(b"HGET", q.payloads, task_id))
        return None if raw is None else task_of(task_id, q.command, tenant, payload or b"", raw)

    async def requeue(self, tenant: str, command: str, ids: list[str] | None) -> int:
        async def one(q: keys.QueueKeys, chosen: list[str]) -> int:
            requeued, available = await self.engine._run(
                "dlq_requeue", (*q.ready, q.tiers, q.tasks, q.results, q.done, q.dlq, q.waiting,
                                q.outbox, q.callbacks),
                (MAX_PAGE, keys.EVENTS_CHANNEL, tenant, command, *chosen))
            self.engine.available(tenant, command, available)
            return int(requeued)

        return await self._each_shard(tenant, command, ids, one)

    async def purge(self, tenant: str, command: str, ids: list[str] | None) -> int:
        async def one(q: keys.QueueKeys, chosen: list[str]) -> int:
            return int(await self.engine._run(
                "dlq_purge", (q.tasks, q.payloads, q.results, q.done, q.dlq, q.idem, q.outbox,
                              q.callbacks, q.rwaiters), (MAX_PAGE, *chosen)))

        return await self._each_shard(tenant, command, ids, one)

    async def _each_shard(self, tenant: str, command: str, ids: list[str] | None,
                          one: Callable[[keys.QueueKeys, list[str]], Awaitable[int]]) -> int:
        """Run ``one`` on each shard with the given ids of its tasks (ids of
        another command's are left out), or with none (the oldest of each)."""
        shards = self._shards(tenant, command)
        if len(shards) == 1:
            return await one(shards[0], ids or [])  # the script judges every id
        if not ids:
            return sum(await asyncio.gather(*(one(q, []) for q in shards)))
        found = await asyncio.gather(*(self.engine._queue_of(tenant, i) for i in ids),
                                     return_exceptions=True)
        by_shard: dict[int, list[str]] = {}
        for task_id, q in zip(ids, found, strict=True):
            if isinstance(q, keys.QueueKeys) and q.command == command:
                by_shard.setdefault(q.shard, []).append(task_id)
            elif isinstance(q, BaseException) and not isinstance(q, TaskNotFound):
                raise q  # the store is down: the whole request fails
        return sum(await asyncio.gather(*(one(shards[k], chosen)
                                          for k, chosen in by_shard.items())))

    async def cleanup(self, tenant: str, limit: int) -> int:
        """Run the upkeep of every queue of the tenant now; return how many
        finished tasks past retention it removed (at most ``limit`` a queue)."""
        upkeep = self.engine.upkeep
        removed = 0
        for command in await self.engine.registry.commands(tenant):
            for name in self.engine.shard_names(command):
                reply = await upkeep.run_queue(tenant, name, limit)
                removed += reply[3]
                if reply[4] >= 0:  # its next upkeep, as a tick of the loop would note
                    self.engine.hint(tenant, name, reply[4])
        return removed
