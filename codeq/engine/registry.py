"""Which tenants exist, and which of their queues hold tasks.

The registry lists queues for the sweep (and for operators); the upkeep
forgets a queue once it holds no task. Registration and forgetting cross
hash slots (on a cluster, nodes), so they are ordered steps that keep every
queue with a task registered:

- a create registers its queue, and waits for that, before its script runs;
  and again, waited for too, after its task is in and before it is
  acknowledged, in case the queue was forgotten between (only a crash
  between the task and this second registration, while a forget of that
  very queue ran, leaves a task unregistered; the next create in the queue
  registers it);
- forgetting is SREM, then a second look at the queue: a task that landed
  before the SREM is seen and the queue registered again, and a create
  landing after it registers again after its task.

A process skips the registration of a queue it created a task in a short
while ago: shorter than the retention, so that task is still there, and the
queue not forgotten, until the process registers it again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from codeq import keys
from codeq.errors import StoreUnavailable

if TYPE_CHECKING:
    from codeq.engine.queue import Engine

REFRESH = 60.0  # seconds a process trusts its own registration, at most


class Registry:
    """Register queues as tasks are created; forget empty ones; list them."""

    def __init__(self, engine: Engine, retention_seconds: float) -> None:
        self.engine = engine
        self.run = engine._cmd  # runs one command, store errors as StoreUnavailable
        self.refresh = min(REFRESH, retention_seconds / 2)
        self._known: set[tuple[str, str]] = set()

    async def register(self, tenant: str, command: str) -> None:
        """Register a queue, before a create's script (see the module docstring)."""
        if (tenant, command) not in self._known:
            await self._send(tenant, command)

    async def created(self, tenant: str, command: str) -> None:
        """A create made a task in the queue: register it again, waited for,
        before the create is acknowledged (a forget may have run since the
        first time), then trust it a while."""
        key = (tenant, command)
        if key in self._known:
            return
        try:
            await self._send(tenant, command)
        except StoreUnavailable:
            return  # registered before the script; the next create tries again
        self._known.add(key)
        asyncio.get_running_loop().call_later(self.refresh, self._known.discard, key)

    async def _send(self, tenant: str, command: str) -> None:
        """Add the tenant to the tenants, and the command to the tenant's queues."""
        await asyncio.gather(self.run(b"SADD", keys.TENANTS, tenant),
                             self.run(b"SADD", keys.tenant_commands(tenant), command))

    async def forget(self, tenant: str, command: str) -> None:
        """Take a queue found empty out of the registry (see the module docstring)."""
        registry = keys.tenant_commands(tenant)
        self._known.discard((tenant, command))
        await self.run(b"SREM", registry, command)
        queues = [self.engine.queue(tenant, name) for name in self.engine.shard_names(command)]
        if any(await asyncio.gather(*(self.run(b"HLEN", q.tasks) for q in queues))):
            await self.run(b"SADD", registry, command)

    async def tenants(self) -> list[str]:
        return [t.decode() for t in await self.run(b"SMEMBERS", keys.TENANTS)]

    async def commands(self, tenant: str) -> list[str]:
        return [c.decode() for c in await self.run(b"SMEMBERS", keys.tenant_commands(tenant))]
