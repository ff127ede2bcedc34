"""Availability subscriptions in the store: who wants to hear that a queue has work.

A tenant's subscriptions live under its hash tag (``keys.SubscriptionKeys``):
records, expiries, and one set of ids per command named (plus one for those
naming none). Nothing here runs on a task's path: the engine only reports a
queue going from no ready task to some (``Engine.on_available``), and the
push side asks ``pick`` which subscriptions to tell, in the background.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import msgspec
from msgspec import Struct

from codeq.errors import SubscriptionNotFound
from codeq.keys import SubscriptionKeys

if TYPE_CHECKING:
    from codeq.engine.queue import Engine

PURGE_LIMIT = 100  # expired subscriptions removed per purge call
LIVE_CACHE_SECONDS = 1.0  # how long "this tenant has no subscription" is believed


class StoredSubscription(Struct, array_like=True):
    """A subscription's record (sub_put.lua): fixed once made; its expiry apart."""

    callbackUrl: str
    eventTypes: list[str]
    deliveryMode: str
    groupId: str
    minIntervalMs: int
    ttlMs: int


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(StoredSubscription).decode


class Subscriptions:
    """Create, renew, delete and pick a tenant's availability subscriptions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._live: dict[str, tuple[float, bool]] = {}  # tenant -> (checked at, any live)

    async def create(self, tenant: str, url: str, event_types: list[str], ttl: float,
                     mode: str, group: str, min_interval: float) -> tuple[str, int]:
        """Store a subscription; return its id and when it expires (ms)."""
        k = SubscriptionKeys(tenant)
        sub_id = str(uuid.uuid4())
        record = StoredSubscription(url, event_types, mode, group, int(min_interval * 1000),
                                    int(ttl * 1000))
        expires = await self.engine._run("sub_put", (k.subs, k.expiry, *k.sets(event_types)),
                                         (sub_id, _encode(record), record.ttlMs))
        self._live[tenant] = (time.monotonic(), True)
        return sub_id, expires

    async def renew(self, tenant: str, sub_id: str) -> int:
        """Extend a live subscription by its ttl; return when it now expires (ms)."""
        k = SubscriptionKeys(tenant)
        expires = await self.engine._run("sub_renew", (k.subs, k.expiry), (sub_id,))
        if not expires:
            raise SubscriptionNotFound()
        return expires

    async def delete(self, tenant: str, sub_id: str) -> None:
        """Remove a subscription; SubscriptionNotFound unless it was live."""
        if not await self._remove(SubscriptionKeys(tenant), sub_id):
            raise SubscriptionNotFound()

    async def _remove(self, k: SubscriptionKeys, sub_id: str) -> bool:
        raw = await self.engine._cmd(b"HGET", k.subs, sub_id)
        sets = k.sets(_decode(raw).eventTypes) if raw is not None else (k.any,)
        return bool(await self.engine._run("sub_delete", (k.subs, k.expiry, k.last, *sets),
                                           (sub_id,)))

    async def purge_expired(self, tenant: str) -> int:
        """Remove up to PURGE_LIMIT expired subscriptions of a tenant; return how many."""
        k = SubscriptionKeys(tenant)
        now = int(time.time() * 1000)
        expired = await self.engine._cmd(b"ZRANGEBYSCORE", k.expiry, b"-inf", now, b"LIMIT", 0,
                                         PURGE_LIMIT)
        for sub_id in expired:
            await self._remove(k, sub_id.decode())
        return len(expired)

    async def any_live(self, tenant: str) -> bool:
        """Whether the tenant may have a live subscription (cached a moment)."""
        now = time.monotonic()
        checked = self._live.get(tenant)
        if checked is not None and now - checked[0] < LIVE_CACHE_SECONDS:
            return checked[1]
        k = SubscriptionKeys(tenant)
        live = bool(await self.engine._cmd(b"ZCOUNT", k.expiry, int(time.time() * 1000),
                                           b"+inf"))
        if len(self._live) > 10_000:
            self._live.clear()
        self._live[tenant] = (now, live)
        return live

    async def pick(self, tenant: str, command: str) -> list[tuple[str, str]]:
        """Return (id, callbackUrl) of the subscriptions to tell that ``command``
        has work, marked notified (see sub_pick.lua)."""
        k = SubscriptionKeys(tenant)
        reply = await self.engine._run(
            "sub_pick", (k.subs, k.expiry, k.last, k.turns, k.command(command), k.any),
            (command,))
        return [(reply[i].decode(), reply[i + 1].decode()) for i in range(0, len(reply), 2)]

    async def ready_depth(self, tenant: str, command: str) -> int:
        """How many tasks of the command are ready now (in all its shards)."""
        lengths = await asyncio.gather(*(
            self.engine._cmd(b"LLEN", key) for name in self.engine.shard_names(command)
            for key in self.engine.queue(tenant, name).ready))
        return sum(lengths)
