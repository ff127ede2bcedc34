"""Operators' view of a tenant's queues: depths, the dead-letter queue, cleanup.

Every call costs O(commands) or O(page) store work, never O(tasks): counts
are list lengths and zset cardinalities, and the oldest ready task of a
queue is the head of one of its ten FIFO tier lists (queue_stats.lua).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from codeq import keys
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

    async def queue(self, tenant: str, command: str) -> QueueStats:
        q = self.engine.queue(tenant, command)
        reply = await self.engine._run("queue_stats",
                                       (*q.ready, q.tiers, q.delayed, q.inflight, q.dlq, q.tasks),
                                       ())
        tiers = reply[:10]
        oldest, now = reply[13], reply[14]
        return QueueStats(
            command=command, ready=sum(tiers), delayed=reply[10], in_progress=reply[11],
            dlq=reply[12], oldest_ready_age=None if oldest < 0 else max(0, now - oldest) / 1000,
            ready_by_priority={str(PRIORITY_MAX - i): n for i, n in enumerate(tiers) if n})

    async def queues(self, tenant: str) -> list[QueueStats]:
        commands = sorted(await self.engine.registry.commands(tenant))
        return list(await asyncio.gather(*(self.queue(tenant, c) for c in commands)))

    async def dlq(self, tenant: str, command: str, limit: int, cursor: tuple[int, str] | None,
                  ) -> tuple[list[DeadLetter], tuple[int, str] | None]:
        """A page of dead-lettered tasks, oldest first, after ``cursor`` (score, id)."""
        q = self.engine.queue(tenant, command)
        start = b"-inf" if cursor is None else cursor[0]
        # Ties on the score are ordered by id: skip those up to the cursor's.
        raw = await self.engine._cmd(b"ZRANGEBYSCORE", q.dlq, start, b"+inf", b"WITHSCORES",
                                     b"LIMIT", 0, limit + MAX_PAGE if cursor else limit)
        pairs = [(raw[i].decode(), int(float(raw[i + 1]))) for i in range(0, len(raw), 2)]
        if cursor is not None:
            pairs = [(i, s) for i, s in pairs if (s, i) > (cursor[0], cursor[1])]
        pairs = pairs[:limit]
        records = await asyncio.gather(*(self._task(q, tenant, i) for i, _ in pairs))
        page = [DeadLetter(task, datetime.fromtimestamp(score / 1000, UTC))
                for (_, score), task in zip(pairs, records, strict=True) if task is not None]
        after = (pairs[-1][1], pairs[-1][0]) if len(pairs) == limit else None
        return page, after

    async def _task(self, q: keys.QueueKeys, tenant: str, task_id: str) -> Task | None:
        raw, payload = await asyncio.gather(self.engine._cmd(b"HGET", q.tasks, task_id),
                                            self.engine._cmd(b"HGET", q.payloads, task_id))
        return None if raw is None else task_of(task_id, q.command, tenant, payload or b"", raw)

    async def requeue(self, tenant: str, command: str, ids: list[str] | None) -> int:
        q = self.engine.queue(tenant, command)
        requeued, available = await self.engine._run(
            "dlq_requeue", (*q.ready, q.tiers, q.tasks, q.results, q.done, q.dlq, q.waiting,
                            q.outbox, q.callbacks),
            (MAX_PAGE, keys.EVENTS_CHANNEL, tenant, command, *(ids or ())))
        self.engine.available(tenant, command, available)
        return requeued

    async def purge(self, tenant: str, command: str, ids: list[str] | None) -> int:
        q = self.engine.queue(tenant, command)
        return await self.engine._run(
            "dlq_purge", (q.tasks, q.payloads, q.results, q.done, q.dlq, q.idem, q.outbox,
                          q.callbacks, q.rwaiters), (MAX_PAGE, *(ids or ())))

    async def cleanup(self, tenant: str, limit: int) -> int:
        """Run the upkeep of every queue of the tenant now; return how many
        finished tasks past retention it removed (at most ``limit`` a queue)."""
        upkeep = self.engine.upkeep
        removed = 0
        for command in await self.engine.registry.commands(tenant):
            reply = await upkeep.run_queue(tenant, command, limit)
            removed += reply[3]
            if reply[4] >= 0:  # its next upkeep, as a tick of the loop would note
                self.engine.hint(tenant, command, reply[4])
        return removed
