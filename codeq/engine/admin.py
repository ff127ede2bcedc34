"""Operators' view of a tenant's queues: depths, the dead-letter queue, cleanup.

Every call costs O(commands) or O(page) store work, never O(tasks): counts
are list lengths and zset cardinalities, and the oldest ready task of a
queue is the head of one of its ten FIFO tier lists (queue_stats.lua). A
sharded command's figures are its shards' summed (the oldest: the oldest of
their heads), and its DLQ and in-flight pages are merged from theirs.

The throughput series (the dashboard's charts, codeq/ui) is a hash per
tenant and minute of per-second counts, which every server process adds its
own counts to once a second: summed across processes by construction, and
bounded by its TTL whatever the traffic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from codeq import keys
from codeq.errors import TaskNotFound
from codeq.keys import PRIORITY_MAX
from codeq.schemas import MAX_ADMIN_PAGE, Result, Task, result_of, task_of

if TYPE_CHECKING:
    from codeq.engine.queue import Engine

MAX_PAGE = MAX_ADMIN_PAGE
THROUGHPUT = ("created", "completed", "failed")  # the series, in this order
THROUGHPUT_TTL = 900  # seconds a minute of the series is kept after its last write


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
        found, after = await self._page(tenant, command, "dlq", limit, cursor)
        records = await asyncio.gather(*(self._task(q, tenant, i) for _, i, q in found))
        page = [DeadLetter(task, datetime.fromtimestamp(score / 1000, UTC))
                for (score, _, _), task in zip(found, records, strict=True) if task is not None]
        return page, after

    async def inflight(self, tenant: str, command: str, limit: int,
                       cursor: tuple[int, str] | None,
                       ) -> tuple[list[Task], tuple[int, str] | None]:
        """A page of in-flight tasks, soonest lease expiry first, after ``cursor`` (score, id)."""
        found, after = await self._page(tenant, command, "inflight", limit, cursor)
        records = await asyncio.gather(*(self._task(q, tenant, i) for _, i, q in found))
        return [task for task in records if task is not None], after

    async def _page(self, tenant: str, command: str, zset: str, limit: int,
                    cursor: tuple[int, str] | None,
                    ) -> tuple[list[tuple[int, str, keys.QueueKeys]], tuple[int, str] | None]:
        """The members of one zset of the command's queues (``dlq`` or
        ``inflight``), lowest score first, after ``cursor``, merged over its
        shards: (score, id, shard), and the cursor of the next page."""
        shards = self._shards(tenant, command)
        pages = await asyncio.gather(*(self._after(getattr(q, zset), limit, cursor)
                                       for q in shards))
        found = sorted((score, task_id, q) for q, page in zip(shards, pages, strict=True)
                       for score, task_id in page)[:limit]
        after = (found[-1][0], found[-1][1]) if len(found) == limit else None
        return found, after

    async def _after(self, zset: bytes, limit: int, cursor: tuple[int, str] | None,
                     ) -> list[tuple[int, str]]:
        """Up to ``limit`` (score, id) of a zset after ``cursor``, in its order
        (ties on the score by id). O(limit), plus O(ties) at the cursor's score."""
        cmd = self.engine._cmd
        if cursor is None:
            return _pairs(await cmd(b"ZRANGEBYSCORE", zset, b"-inf", b"+inf", b"WITHSCORES",
                                    b"LIMIT", 0, limit))
        score, last = cursor
        out: list[tuple[int, str]] = []
        offset = 0
        while len(out) < limit:  # the members tied with the cursor, past its id
            tied = _pairs(await cmd(b"ZRANGEBYSCORE", zset, score, score, b"WITHSCORES",
                                    b"LIMIT", offset, MAX_PAGE))
            out += [pair for pair in tied if pair[1] > last]
            if len(tied) < MAX_PAGE:
                break
            offset += MAX_PAGE
        if len(out) < limit:
            out += _pairs(await cmd(b"ZRANGEBYSCORE", zset, f"({score}", b"+inf", b"WITHSCORES",
                                    b"LIMIT", 0, limit - len(out)))
        return out[:limit]

    async def task(self, tenant: str, task_id: str,
                   ) -> tuple[Task, Result | None, datetime | None]:
        """A task, its result if it has one, and when it was dead-lettered if
        it is in the DLQ (TaskNotFound for another tenant's)."""
        q = await self.engine._queue_of(tenant, task_id)
        task, raw, score = await asyncio.gather(
            self.engine.get(tenant, task_id), self.engine._cmd(b"HGET", q.results, task_id),
            self.engine._cmd(b"ZSCORE", q.dlq, task_id))
        return (task, None if raw is None else result_of(task_id, raw),
                None if score is None else datetime.fromtimestamp(float(score) / 1000, UTC))

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

    async def add_throughput(self, tenant: str, second: int, counts: Sequence[int]) -> None:
        """Add one process' tasks created, completed and failed (``THROUGHPUT``)
        in ``second`` (Unix time) to the tenant's series."""
        fields = [x for name, n in zip(THROUGHPUT, counts, strict=True) if n
                  for x in (f"{second}:{name}", n)]
        if fields:
            await self.engine._run("throughput_add", (keys.throughput(tenant, second // 60),),
                                   (THROUGHPUT_TTL, *fields))

    async def throughput(self, tenant: str, first: int, last: int) -> dict[str, list[int]]:
        """The tenant's tasks created, completed and failed in each second from
        ``first`` to ``last`` (Unix time): O(seconds), a hash read per minute."""
        series = {name: [0] * (last - first + 1) for name in THROUGHPUT}
        raws = await asyncio.gather(*(self.engine._cmd(b"HGETALL", keys.throughput(tenant, m))
                                      for m in range(first // 60, last // 60 + 1)))
        for raw in raws:
            for i in range(0, len(raw), 2):
                second, _, name = raw[i].decode().partition(":")
                at = int(second) - first
                if name in series and 0 <= at <= last - first:
                    series[name][at] += int(raw[i + 1])
        return series


def _pairs(raw: list[bytes]) -> list[tuple[int, str]]:
    """(score, id) pairs of a WITHSCORES reply."""
    return [(int(float(raw[i + 1])), raw[i].decode()) for i in range(0, len(raw), 2)]
