"""Availability webhooks: tell subscribed workers that a queue has work.

The engine reports each queue that goes from no ready task to some (a create,
a delayed task falling due, a requeue) in this process; the report only
marks the queue here, and a background task asks the store which
subscriptions to tell (``Subscriptions.pick``: delivery mode, group turns and
minInterval, atomically across processes) and POSTs them. Best effort: a
POST that fails is not retried, the next change notifies again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import msgspec
from msgspec import Struct

from codeq.config import Settings
from codeq.engine import Engine
from codeq.errors import StoreUnavailable
from codeq.push.sender import Sender
from codeq.push.worklist import Worklist, cancel

log = logging.getLogger("codeq.push")

PURGE_INTERVAL = 60.0  # seconds between removals of expired subscriptions
MAX_TENANTS_TRACKED = 10_000  # tenants remembered for the next purge


class Availability(Struct, kw_only=True):
    eventType: str
    available: bool
    queueDepth: int
    claimUrl: str
    sentAt: datetime
    notificationId: str


_encode = msgspec.json.Encoder().encode


class AvailabilityNotifier:
    """Notify the subscriptions matching the queues that got work (see the module docstring)."""

    def __init__(self, engine: Engine, settings: Settings, sender: Sender) -> None:
        self.engine = engine
        self.sender = sender
        base = settings.public_url or f"http://{settings.host}:{settings.port}"
        self.claim_url = base.rstrip("/") + "/v1/codeq/tasks/claim"
        self.limit = settings.callback_concurrency  # POSTs in flight at most
        self.dropped = 0
        self.work = Worklist()
        self.tenants: set[str] = set()  # seen since the last purge
        self.tasks: set[asyncio.Task[None]] = set()
        self.loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.engine.on_available = self.work.add
        self.loops = [asyncio.create_task(self._run(), name="availability"),
                      asyncio.create_task(self._purge(), name="subscription-purge")]

    async def stop(self) -> None:
        self.engine.on_available = None
        await cancel([*self.loops, *self.tasks])

    async def _run(self) -> None:
        subscriptions = self.engine.subscriptions
        while True:
            for tenant, command in await self.work.take():
                if len(self.tenants) < MAX_TENANTS_TRACKED:
                    self.tenants.add(tenant)
                try:
                    if not await subscriptions.any_live(tenant):
                        continue
                    # Read before the pick marks anyone notified.
                    depth = await subscriptions.ready_depth(tenant, command)
                    chosen = await subscriptions.pick(tenant, command)
                except StoreUnavailable:
                    continue  # best effort: the next change notifies again
                except Exception:
                    log.exception("picking subscriptions for %s/%s failed", tenant, command)
                    continue
                for _, url in chosen:
                    self._spawn(self._notify(url, command, depth))

    def _spawn(self, coro) -> None:
        if len(self.tasks) >= self.limit:
            # Receivers slower than the changes they are told of: drop (best
            # effort) rather than pile up notices that would arrive stale.
            coro.close()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("%d availability notices dropped: %d POSTs already in flight",
                            self.dropped, self.limit)
            return
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _notify(self, url: str, command: str, depth: int) -> None:
        notification_id = str(uuid.uuid4())
        body = _encode(Availability(eventType=command, available=True, queueDepth=depth,
                                    claimUrl=self.claim_url, sentAt=datetime.now(UTC),
                                    notificationId=notification_id))
        error = await self.sender.post(url, body, notification_id)
        self.engine.observer.webhook_sent("delivered" if error is None else "failed")
        if error is not None:
            log.info("availability webhook to %s not delivered: %s", url, error)

    async def _purge(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            tenants, self.tenants = self.tenants, set()
            for tenant in tenants:
                try:
                    await self.engine.subscriptions.purge_expired(tenant)
                except Exception as exc:
                    log.warning("removing expired subscriptions of %s failed: %s", tenant,
                                exc)
