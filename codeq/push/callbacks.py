"""Deliver result callbacks from the queues' outboxes.

The script that makes a task terminal writes its callback to the queue's
outbox (finish.lua); the engine tells this process' dispatcher which queues
have callbacks due (right after a result or a dead-lettering here, and from
the upkeep for the rest: retries coming due, entries of a dispatcher that
died). The dispatcher takes entries under a lease, POSTs them concurrently
(at most ``callback_concurrency`` at once) and records each outcome; a
failed attempt is retried after 2 s, 8 s, 32 s ... (base times 4 per
attempt, capped, jittered by +-20 %), and after the last attempt the entry is
kept as failed. With the defaults (8 attempts, base 2 s, cap 900 s) the
retries span about 41 minutes, plus the attempts' own timeouts.

At most ``callback_host_concurrency`` of the POSTs in flight go to one
receiver (host and port), so a receiver that hangs cannot hold every slot.
A queue is taken from only as far as the receiver of its last callback has
free slots (a queue's callbacks mostly go to one receiver), so a backlog for
a slow receiver stays in the store rather than being taken and handed back.
While that receiver is full, a queue waiting on it still has up to
PROBE_TAKE entries taken, in case they are for other receivers, but not
within a second of a take that had to hand callbacks for the full receiver
back: those are handed back unsent, due again a second later, without
counting an attempt. So a queue whose tasks call a hanging receiver and
others gets to the others' callbacks behind the hanging one's at about
PROBE_TAKE a second (plus the hanging receiver's freed slots), not at once.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import time
import uuid
from collections import Counter
from datetime import datetime
from urllib.parse import urlsplit

import msgspec
from msgspec import Raw, Struct

from codeq.config import Settings
from codeq.engine import Engine
from codeq.errors import StoreUnavailable
from codeq.keys import command_of
from codeq.push.sender import Sender
from codeq.push.worklist import Worklist, cancel
from codeq.schemas import (
    STATUSES,
    stored_callback_decoder,
    stored_result_decoder,
    stored_task_decoder,
)

log = logging.getLogger("codeq.push")

TAKE_LIMIT = 100  # entries taken per queue and round
STOP_GRACE = 2.0  # seconds deliveries in flight get to end when the process stops
DEFER_MS = 1000  # an entry handed back because its receiver was busy is due again after
MAX_QUEUES_REMEMBERED = 10_000
PROBE_TAKE = 16  # entries a probe of a queue waiting on a full receiver takes at most
BACKOFF_FACTOR = 4
JITTER = 0.2


class CallbackBody(Struct, kw_only=True, omit_defaults=True):
    taskId: str
    command: str
    status: str
    result: Raw | None = None
    error: str | None = None
    artifacts: Raw | None = None
    attempts: int
    completedAt: datetime
    deliveryId: str


_encode = msgspec.json.Encoder().encode


def receiver_of(raw_task: bytes) -> str:
    """The host and port a task's callback goes to ('' if it cannot be told:
    the delivery then fails on its own and is counted as an attempt)."""
    try:
        url = urlsplit(stored_task_decoder.decode(raw_task).webhook or "")
        if not url.hostname:
            return ""
        return f"{url.hostname.lower()}:{url.port or (443 if url.scheme == 'https' else 80)}"
    except (msgspec.DecodeError, ValueError):
        return ""


def retry_delay(attempts: int, base: float, cap: float, rand: float) -> float:
    """Seconds to wait after ``attempts`` failed attempts (>= 1)."""
    delay = min(cap, base * BACKOFF_FACTOR ** min(attempts - 1, 30))
    return delay * (1 - JITTER + 2 * JITTER * rand)


class Dispatcher:
    """Take callbacks due in the outboxes and deliver them (see the module docstring)."""

    def __init__(self, engine: Engine, settings: Settings, sender: Sender) -> None:
        self.engine = engine
        self.settings = settings
        self.sender = sender
        # Each take gets its own token, so a late outcome of an earlier take
        # of the same entry (by this process too) is refused.
        self.taker = uuid.uuid4().hex
        self.takes = itertools.count()
        # Longer than one attempt can take, with room for recording its outcome.
        self.lease_ms = int((2 * settings.callback_timeout + 1) * 1000)
        self.work = Worklist()
        self.busy = 0
        self.per_receiver = min(settings.callback_host_concurrency,
                                settings.callback_concurrency)
        self.receivers: Counter[str] = Counter()  # deliveries in flight per receiver
        self.last_receiver: dict[tuple[str, str], str] = {}  # queue -> its last receiver
        # Full receiver -> when callbacks for it were last handed back.
        self.probed: dict[str, float] = {}
        self.deliveries: set[asyncio.Task[None]] = set()
        self.loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.engine.on_callbacks = self.work.add
        self.loop_task = asyncio.create_task(self._run(), name="callbacks")

    async def stop(self) -> None:
        """Stop taking entries, give the deliveries in flight a moment to end,
        then cut them: their leases run out and any process sends them again."""
        self.engine.on_callbacks = None
        await cancel([self.loop_task] if self.loop_task else [])
        if self.deliveries:
            await asyncio.wait(self.deliveries, timeout=min(self.settings.callback_timeout,
                                                            STOP_GRACE))
        await cancel(self.deliveries)

    async def _run(self) -> None:
        while True:
            for tenant, queue in await self.work.take():
                free = self.settings.callback_concurrency - self.busy
                limit = min(free, TAKE_LIMIT)
                # Sized to what the receiver of the queue's last callback can take
                # now: a queue's callbacks mostly go to one receiver.
                last = self.last_receiver.get((tenant, queue))
                if last is not None and limit > 0:
                    limit = min(limit, self.per_receiver - self.receivers[last])
                    if limit <= 0 and self._may_probe(last):
                        # The next callbacks may be for other receivers.
                        limit = min(free, PROBE_TAKE)
                if limit <= 0:
                    self.work.due.add((tenant, queue))  # a finished delivery wakes us
                    continue
                taker = f"{self.taker}.{next(self.takes)}"
                try:
                    entries = await self.engine.take_callbacks(
                        tenant, queue, limit, self.lease_ms, taker)
                except StoreUnavailable:
                    continue  # the upkeep hands them on once the store is back
                except Exception:
                    log.exception("taking callbacks of %s/%s failed", tenant, queue)
                    continue
                deferred = []
                for entry in entries:
                    receiver = receiver_of(entry[2])
                    if self.receivers[receiver] >= self.per_receiver:
                        deferred.append(entry[0])
                        self.probed[receiver] = time.monotonic()
                        continue
                    self.busy += 1
                    self.receivers[receiver] += 1
                    task = asyncio.create_task(self._deliver(tenant, queue, taker, *entry))
                    self.deliveries.add(task)
                    task.add_done_callback(functools.partial(self._delivered, receiver))
                if entries:
                    self._remember(tenant, queue, receiver)  # the last entry's
                if deferred:
                    await self._defer(tenant, queue, taker, deferred)
                if len(entries) == limit:
                    self.work.add(tenant, queue)  # there may be more

    def _remember(self, tenant: str, queue: str, receiver: str) -> None:
        known = self.last_receiver.pop((tenant, queue), None)
        if known is None and len(self.last_receiver) >= MAX_QUEUES_REMEMBERED:
            del self.last_receiver[next(iter(self.last_receiver))]  # the least recent
        self.last_receiver[(tenant, queue)] = receiver

    def _may_probe(self, receiver: str) -> bool:
        """Whether a queue waiting on this full receiver may be taken from now:
        not within DEFER_MS of a take that had to hand back callbacks for it,
        so handing back costs a few writes a second however many queues wait."""
        return time.monotonic() - self.probed.get(receiver, 0.0) >= DEFER_MS / 1000

    async def _defer(self, tenant: str, queue: str, taker: str, ids: list[str]) -> None:
        """Hand entries back unsent; any left unrecorded come back when their lease ends."""
        retry_at = int(time.time() * 1000) + DEFER_MS
        outcomes = await asyncio.gather(
            *(self.engine.callback_done(tenant, queue, task_id, taker, "deferred", "", retry_at)
              for task_id in ids), return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            log.warning("%d callbacks of %s/%s not handed back: %s", len(failed), tenant,
                        queue, failed[0])

    def _delivered(self, receiver: str, task: asyncio.Task[None]) -> None:
        self.deliveries.discard(task)
        self.busy -= 1
        self.receivers[receiver] -= 1
        if not self.receivers[receiver]:
            del self.receivers[receiver]
            self.probed.pop(receiver, None)
        if self.work.due:
            self.work.wake.set()

    async def _deliver(self, tenant: str, queue: str, taker: str, task_id: str,
                       raw_callback: bytes, raw_task: bytes, raw_result: bytes) -> None:
        callback = stored_callback_decoder.decode(raw_callback)
        try:
            task = stored_task_decoder.decode(raw_task)
            result = stored_result_decoder.decode(raw_result)
            body = _encode(CallbackBody(
                taskId=task_id, command=command_of(queue), status=STATUSES[result.status],
                result=None if result.result is None else Raw(result.result),
                error=result.error,
                artifacts=None if result.artifacts is None else Raw(result.artifacts),
                attempts=task.attempts, completedAt=result.completedAt,
                deliveryId=callback.deliveryId))
            error = await self.sender.post(task.webhook or "", body, callback.deliveryId)
        except Exception as exc:
            # Counted as a failed attempt, so that it cannot come back forever.
            log.exception("delivering the callback of task %s failed", task_id)
            error = f"internal error: {type(exc).__name__}"
        attempts = callback.attempts + 1
        s = self.settings
        if error is None:
            outcome, retry_at = "delivered", 0
        elif attempts >= s.callback_max_attempts:
            outcome, retry_at = "failed", 0
            log.warning("callback of task %s failed after %d attempts: %s", task_id, attempts,
                        error)
        else:
            delay = retry_delay(attempts, s.callback_backoff_base_seconds,
                                s.callback_backoff_max_seconds, random.random())
            outcome, retry_at = "retry", int((time.time() + delay) * 1000)
        self.engine.observer.callback_attempt(outcome)
        try:
            await self.engine.callback_done(tenant, queue, task_id, taker, outcome,
                                            error or "", retry_at)
        except Exception as exc:
            # Left to its lease: taken again (and maybe sent again) when it ends.
            log.error("recording the callback of task %s failed: %s", task_id, exc)
