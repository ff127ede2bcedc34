"""Which tenants exist, and which of their queues hold tasks.

The registry lists queues for the sweep (and for operators); the upkeep
forgets a queue once it holds no task. Registration and forgetting cross
hash slots, so they are ordered steps that keep every queue with a task
registered:

- a create sends its registration right after its script, on the same
  connection, so it reaches the store after the task;
- forgetting is SREM, then a second look at the queue: a task that landed
  before the SREM is seen and the queue registered again, and a create
  landing after it sends its registration after its task.

A process skips the registration of a queue it created a task in a short
while ago: shorter than the retention, so that task is still there, and the
queue not forgotten, until the process registers it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from codeq import keys
from codeq._core import Client
from codeq.errors import StoreUnavailable

REFRESH = 60.0  # seconds a process trusts its own registration, at most

Run = Callable[..., Awaitable[Any]]


class Registry:
    """Register queues as tasks are created; forget empty ones; list them."""

    def __init__(self, store: Client, run: Run, retention_seconds: float) -> None:
        self.store = store
        self.run = run  # runs one command, store errors as StoreUnavailable
        self.refresh = min(REFRESH, retention_seconds / 2)
        self._known: set[tuple[str, str]] = set()

    def register(self, tenant: str, command: str) -> None:
        """Register a queue; call just before sending a create's script.

        The SADDs are queued on the next turn of the loop, when the create
        has queued its script: they follow it on the connection.
        """
        if (tenant, command) not in self._known:
            asyncio.get_running_loop().call_soon(self._send, tenant, command)

    def _send(self, tenant: str, command: str) -> None:
        try:
            for cmd in ((b"SADD", keys.TENANTS, tenant),
                        (b"SADD", keys.tenant_commands(tenant), command)):
                self.store.execute(cmd).add_done_callback(_consume)
        except StoreUnavailable:
            pass  # the create fails too; the next one registers

    def created(self, tenant: str, command: str) -> None:
        """Note that a create made a task in the queue (so it is registered)."""
        key = (tenant, command)
        if key not in self._known:
            self._known.add(key)
            asyncio.get_running_loop().call_later(self.refresh, self._known.discard, key)

    async def forget(self, tenant: str, command: str) -> None:
        """Take a queue found empty out of the registry (see the module docstring)."""
        registry = keys.tenant_commands(tenant)
        self._known.discard((tenant, command))
        await self.run(b"SREM", registry, command)
        if await self.run(b"HLEN", keys.QueueKeys(tenant, command).tasks):
            await self.run(b"SADD", registry, command)

    async def tenants(self) -> list[str]:
        return [t.decode() for t in await self.run(b"SMEMBERS", keys.TENANTS)]

    async def commands(self, tenant: str) -> list[str]:
        return [c.decode() for c in await self.run(b"SMEMBERS", keys.tenant_commands(tenant))]


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a refused registration is retried by the next create
