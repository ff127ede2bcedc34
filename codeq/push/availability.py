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

log = logging.getLogger("codeq.push")

PURGE_INTERVAL = 60.0  # seconds between removals of expired subscriptions


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
        self.slots = asyncio.Semaphore(settings.callback_concurrency)
        self.due: set[tuple[str, str]] = set()
        self.tenants: set[str] = set()  # seen since the last purge
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.engine.on_available = self.kick
        self.loops = [asyncio.create_task(self._run(), name="availability"),
                      asyncio.create_task(self._purge(), name="subscription-purge")]

    async def stop(self) -> None:
        self.engine.on_available = None
        tasks = [*self.loops, *self.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def kick(self, tenant: str, command: str) -> None:
        """The queue went from no ready task to some."""
        self.due.add((tenant, command))
        self.wake.set()

    async def _run(self) -> None:
        subscriptions = self.engine.subscriptions
        while True:
            await self.wake.wait()
            self.wake.clear()
            due, self.due = self.due, set()
            for tenant, command in due:
                try:
                    if not await subscriptions.any_live(tenant):
                        continue
                    self.tenants.add(tenant)
                    chosen = await subscriptions.pick(tenant, command)
                    if chosen:
                        depth = await subscriptions.ready_depth(tenant, command)
                except StoreUnavailable:
                    continue  # best effort: the next change notifies again
                except Exception:
                    log.exception("picking subscriptions for %s/%s failed", tenant, command)
                    continue
                for _, url in chosen:
                    self._spawn(self._notify(url, command, depth))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _notify(self, url: str, command: str, depth: int) -> None:
        notification_id = str(uuid.uuid4())
        body = _encode(Availability(eventType=command, available=True, queueDepth=depth,
                                    claimUrl=self.claim_url, sentAt=datetime.now(UTC),
                                    notificationId=notification_id))
        async with self.slots:
            error = await self.sender.post(url, body, notification_id)
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
