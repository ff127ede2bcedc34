"""Background upkeep: promote due delayed tasks, requeue expired leases,
remove finished tasks past retention, forget empty queues.

Its cost follows the queues that have due work, not the queues that exist.
Each tenant has a due index (``keys.tenant_due``): command -> the earliest
time its queue may need upkeep. The index lives in the tenant's hash slot,
the queues in slots of their own, so no script can keep both in step;
instead the index is a lower bound kept by two rules:

- every change that brings a queue's next due time closer writes the new
  time to the index *after* the change (a delayed create, a claim, a shorter
  heartbeat, a delayed nack: ``Engine.hint``); ZADD LT keeps the earlier;
- an upkeep takes due queues out of the index under a lease, runs each
  queue's tick script, and puts the queue back at the next time the script
  reports (ZADD LT again, so a hint written meanwhile is kept).

A hint written after a take is kept; one written before it comes after its
change, which the tick then sees. A process that dies mid-upkeep leaves its
lease to run out, and its queues are taken again. What only a crash between
a change and its hint could lose, the sweep (every ``sweep_interval`` s, and
at start) restores by marking every registered queue due.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from codeq import keys

if TYPE_CHECKING:
    from codeq.engine.queue import Engine

log = logging.getLogger("codeq.upkeep")

TICK_LIMIT = 1000  # tasks promoted, reaped or removed per queue and upkeep
TAKE_LIMIT = 500  # queues taken per tenant and tick
UPKEEP_LEASE_MS = 60_000  # how long a taken queue waits for its upkeep to end
SWEEP_BATCH = 1000  # queues marked due per ZADD


@dataclass
class Report:
    """What one round of upkeep did."""

    queues: int = 0
    promoted: int = 0
    requeued: int = 0
    dead: int = 0
    removed: int = 0

    def __iadd__(self, other: Report) -> Report:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


class Upkeep:
    """The upkeep of every tenant's due queues, run by each server process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def tick(self) -> Report:
        """Upkeep every queue whose time has come, in every tenant."""
        report = Report()
        tenants = await self.engine._cmd(b"SMEMBERS", keys.TENANTS)
        for part in await asyncio.gather(*(self._tenant(t.decode()) for t in tenants)):
            report += part
        return report

    async def _tenant(self, tenant: str) -> Report:
        engine = self.engine
        index = (keys.tenant_due(tenant), keys.tenant_upkeep(tenant))
        taken = await engine._run("upkeep_take", index, (TAKE_LIMIT, UPKEEP_LEASE_MS))
        lease, commands = taken[0], [c.decode() for c in taken[1:]]
        if not commands:
            return Report()
        replies = await asyncio.gather(*(self._queue(tenant, c) for c in commands),
                                       return_exceptions=True)
        report, back, deletes = Report(), [lease], []
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, BaseException):
                # Left to its lease: taken again when it ends. The others go on.
                log.error("upkeep of %s/%s failed: %s", tenant, command, reply)
                continue
            promoted, requeued, dead, next_at, empty, *removed = reply
            report += Report(1, promoted, requeued, dead, len(removed))
            back += [command, next_at]
            # One DEL a key: each id key has a hash slot of its own (a
            # multi-key DEL is CROSSSLOT on a cluster); pipelined anyway.
            deletes += [engine._cmd(b"DEL", keys.task_command(tenant, task_id.decode()))
                        for task_id in removed]
            if empty:
                deletes.append(self._forget(tenant, command))
        await asyncio.gather(*deletes)
        await engine._run("upkeep_done", index, tuple(back))
        return report

    async def _queue(self, tenant: str, command: str) -> list:
        engine, q = self.engine, self.engine.queue(tenant, command)
        return await engine._run(
            "tick", (*engine._retry_keys(q), q.idem),
            (TICK_LIMIT, *engine._backoff, random.random(), keys.EVENTS_CHANNEL, tenant, command,
             engine._retention_ms))

    async def _forget(self, tenant: str, command: str) -> None:
        """Take an empty queue out of the tenant's registry.

        A create sends its registration before its task; if one landed since
        the tick saw the queue empty, the task is there now: register again.
        """
        registry = keys.tenant_commands(tenant)
        await self.engine._cmd(b"SREM", registry, command)
        self.engine._registered.discard((tenant, command))
        if await self.engine._cmd(b"HLEN", self.engine.queue(tenant, command).tasks):
            await self.engine._cmd(b"SADD", registry, command)

    async def sweep(self) -> int:
        """Mark every registered queue due now; return how many.

        A safety net: upkeep goes by the due index, and this restores what
        only a crash between a change and its hint could have kept from it.
        """
        marked = 0
        for raw in await self.engine._cmd(b"SMEMBERS", keys.TENANTS):
            tenant = raw.decode()
            commands = await self.engine._cmd(b"SMEMBERS", keys.tenant_commands(tenant))
            for start in range(0, len(commands), SWEEP_BATCH):
                batch = commands[start:start + SWEEP_BATCH]
                pairs = [part for command in batch for part in (0, command)]
                await self.engine._cmd(b"ZADD", keys.tenant_due(tenant), b"LT", *pairs)
            marked += len(commands)
        return marked
