"""Background upkeep: promote due delayed tasks, requeue expired leases,
remove finished tasks past retention, forget empty queues.

Its cost follows the queues that have due work, not the queues or tenants
that exist. A due index (``keys.due``, spread over ``keys.DUE_SHARDS`` hash
tags) maps each queue to the earliest time it may need upkeep. The index and
the queues live in different hash slots, so no script can keep them in step;
instead the index is a lower bound kept by two rules:

- every change that brings a queue's next due time closer writes the new
  time to the index *after* the change (a delayed create, a claim, a
  heartbeat, a delayed nack: ``Engine.hint``); ZADD LT keeps the earlier;
- an upkeep takes due queues out of the index under a lease, runs each
  queue's tick script, and puts the queue back at the next time the script
  reports (ZADD LT again, so a hint written meanwhile is kept).

A hint written after a take is kept; one written before it comes after its
change, which the tick then sees. A process that dies mid-upkeep leaves its
lease to run out, and its queues are taken again. What a hint lost on the way
(a crash, or a connection dropped, between a change and its hint) would keep
from the index, the sweep restores: it marks every registered queue due, at
every (re)connection to the store and every ``sweep_interval`` s.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from codeq import keys
from codeq.errors import StoreUnavailable

if TYPE_CHECKING:
    from codeq.engine.queue import Engine

log = logging.getLogger("codeq.upkeep")

TICK_LIMIT = 1000  # tasks promoted, reaped or removed per queue and upkeep
TAKE_LIMIT = 500  # queues taken per shard and tick
# How long a taken queue waits for its upkeep to end before another process
# may take it; a failed upkeep is retried after that long.
UPKEEP_LEASE_MS = 10_000
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
    """The upkeep of every due queue, run by each server process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def tick(self) -> Report:
        """Upkeep every queue whose time has come."""
        report = Report()
        for part in await asyncio.gather(*(self._shard(s) for s in range(keys.DUE_SHARDS))):
            report += part
        return report

    async def _shard(self, shard: int) -> Report:
        engine = self.engine
        index = (keys.due(shard), keys.upkeep(shard))
        taken = await engine._run("upkeep_take", index, (TAKE_LIMIT, UPKEEP_LEASE_MS))
        lease, members = taken[0], taken[1:]
        if not members:
            return Report()
        queues = [m.decode().split(":", 1) for m in members]
        replies = await asyncio.gather(*(self.run_queue(t, name) for t, name in queues),
                                       return_exceptions=True)
        report, back, follow_ups = Report(), [lease], []
        for member, (tenant, name), reply in zip(members, queues, replies, strict=True):
            if isinstance(reply, BaseException):
                # Left to its lease, and taken again when it ends; the others go on.
                # A store (or cluster node) away is expected now and then: a warning.
                level = logging.WARNING if isinstance(reply, StoreUnavailable) else logging.ERROR
                log.log(level, "upkeep of %s/%s failed: %s", tenant, name, reply)
                continue
            promoted, requeued, dead, removed, next_at, empty = reply[:6]
            report += Report(1, promoted, requeued, dead, removed)
            back += [member, next_at]
            if empty:
                command = engine.queue(tenant, name).command
                follow_ups.append(engine.registry.forget(tenant, command))
        await engine._run("upkeep_done", index, tuple(back))
        for outcome in await asyncio.gather(*follow_ups, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("forgetting an empty queue failed: %s", outcome)
        return report

    async def run_queue(self, tenant: str, name: str, limit: int = TICK_LIMIT) -> list:
        """Run one queue's tick script (a command's queue, or one shard of it)
        and act on what it reports (callbacks due, the queue becoming
        available); return its reply (tick.lua)."""
        engine, q = self.engine, self.engine.queue(tenant, name)
        command = q.command
        reply = await engine._run(
            "tick", (*engine._retry_keys(q), q.payloads, q.idem),
            (limit, *engine._backoff, random.random(), keys.EVENTS_CHANNEL, tenant, command,
             engine._retention_ms))
        requeued, dead, callbacks_due, available = reply[1], reply[2], reply[6], reply[7]
        if requeued or dead:
            # Everything the tick requeues or dead-letters had its lease run out.
            engine.observer.lease_expired(tenant, command, requeued + dead)
        if dead:
            engine.observer.dead_lettered(tenant, command, "LEASE_EXPIRED", dead)
        if callbacks_due and engine.on_callbacks is not None:
            engine.on_callbacks(tenant, name)
        engine.available(tenant, command, available)
        return reply

    async def sweep(self) -> int:
        """Mark every registered queue due now; return how many.

        A safety net: upkeep goes by the due index, and this restores what a
        hint lost on the way could have kept from it.
        """
        by_shard: dict[int, list[bytes]] = {}
        for tenant in await self.engine.registry.tenants():
            for command in await self.engine.registry.commands(tenant):
                for name in self.engine.shard_names(command):
                    member = keys.queue_member(tenant, name)
                    by_shard.setdefault(keys.due_shard(member), []).append(member)
        for shard, members in by_shard.items():
            for start in range(0, len(members), SWEEP_BATCH):
                pairs = [part for m in members[start:start + SWEEP_BATCH] for part in (0, m)]
                await self.engine._cmd(b"ZADD", keys.due(shard), b"LT", *pairs)
        return sum(len(members) for members in by_shard.values())
