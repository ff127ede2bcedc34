"""The queue engine: task semantics as one Lua script per transition.

Speaks in tenants, commands and tasks; knows nothing of HTTP. Every state
change of a queue's tasks is one EVALSHA on that queue (a batch of one queue
is one call too). A task id carries its queue's number (ids.py), so nothing
about a task lives outside its queue's hash slot. What spans two slots is
done as ordered steps whose interruption loses nothing: a queue gets its
number before its first task; changes that bring a queue's upkeep closer
write the due index after the change (upkeep.py); a create registers its
queue before its task, and again after it (registry.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from codeq import ids, keys
from codeq._core import ReplicationUnconfirmed, ReplyError, Store
from codeq.config import Settings, redact
from codeq.engine import scripts
from codeq.engine.admin import Admin
from codeq.engine.events import Observer
from codeq.engine.notify import Notifier
from codeq.engine.registry import Registry
from codeq.engine.subscriptions import Subscriptions
from codeq.engine.upkeep import Report, Upkeep
from codeq.errors import (
    CodeqError,
    ResultNotFound,
    StoreUnavailable,
    TaskNotFound,
    script_error,
)
from codeq.keys import PRIORITY_MAX, PRIORITY_MIN, QueueKeys
from codeq.schemas import CreateTask, Result, Task, callback_of, result_of, task_of

log = logging.getLogger("codeq.engine")

# Queue numbers <-> (tenant, queue name), cached per process; a number never
# changes its queue, so entries never go stale. Bounded all the same.
QUEUE_CACHE_SIZE = 100_000
# Seconds (at most a tenth of the wait) a long poll stops waiting before its
# end, for its last look to answer within the time asked.
LAST_LOOK = 0.05
# Milliseconds the waiting key of an empty claim outlives its poll: while it
# lives, later polls of this process that find the queue known empty wait
# at once (Notifier.known_empty). Its cost: ready tasks are announced that long.
WAITING_MARGIN_MS = 5000
# Milliseconds after a callback is written that the queue's upkeep looks at
# it, should the process that wrote it not have taken it for delivery by then.
CALLBACK_HINT_MS = 2000
STORE_SAMPLE = 16  # script calls per one timed for the store latency histogram


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


# Bounded: claims may name any number of commands that hold no tasks.
@functools.lru_cache(maxsize=4096)
def _queue_keys(tenant: str, name: str) -> QueueKeys:
    return QueueKeys(tenant, name)


async def _wait(waiter: asyncio.Future[None], timeout: float,
                gone: asyncio.Future[None] | None) -> None:
    """Wait for ``waiter``, at most ``timeout`` s, or until ``gone`` completes.

    Neither future is cancelled here: the caller still reads ``waiter``.
    """
    watched = (waiter,) if gone is None else (waiter, gone)
    await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)


def _ms_of(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def _discard(fut: asyncio.Future) -> None:
    """Drop a queued command's outcome without leaving it unretrieved."""
    if fut.done():
        if not fut.cancelled():
            fut.exception()
    else:
        fut.cancel()


def _claimed(q: QueueKeys, reply: list[Any]) -> list[Task]:
    """The tasks a claim script's reply holds."""
    return [task_of(reply[i].decode(), q.command, q.tenant, reply[i + 2], reply[i + 1])
            for i in range(1, len(reply), 3)]


def _raise_if_all_failed(outcomes: Sequence[object]) -> None:
    """Raise the first failure if every outcome is one (some may stand in for
    queues whose store node is away)."""
    if outcomes and all(isinstance(o, BaseException) for o in outcomes):
        first = outcomes[0]
        assert isinstance(first, BaseException)
        raise first


def _clamp(priority: int) -> int:
    return min(max(priority, PRIORITY_MIN), PRIORITY_MAX)


def _run_at_ms(task: CreateTask) -> int | str:
    return "" if task.runAt is None else int(task.runAt.timestamp() * 1000)


class LayoutMismatch(RuntimeError):
    """The store holds data of another layout of codeQ's keys."""


class Engine:
    """Create, claim and finish tasks; run the background upkeep loops."""

    def __init__(self, store: Store, notifier: Notifier, settings: Settings) -> None:
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self._numbers: dict[tuple[str, str], int] = {}
        self._names: dict[int, tuple[str, str]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._resweep: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._late_check: asyncio.Task[None] | None = None
        # Creates and claims wait for the store's layout to be checked: a
        # process of another layout or shard count must not write to it.
        self.checked = False
        self.refused: str | None = None  # why the store was refused, once checked
        self.draining = False
        # Called with (tenant, queue name) when a queue's outbox has callbacks
        # due; set by the dispatcher of this process (codeq.push).
        self.on_callbacks: Callable[[str, str], None] | None = None
        # Called with (tenant, command) when a queue went from no ready task to
        # some (availability webhooks); set by codeq.push.
        self.on_available: Callable[[str, str], None] | None = None
        self.observer = Observer()  # codeq.metrics puts its own
        self._calls = 0
        self._s = {name: scripts.load(name) for name in scripts.NUMKEYS}
        for script in self._s.values():
            store.register(script)
        self._backoff = (
            settings.backoff_policy,
            _ms(settings.backoff_base_seconds),
            _ms(settings.backoff_max_seconds),
        )
        self._retention_ms = _ms(settings.retention_seconds)
        self.shards = settings.queue_shards
        self._turn = 0  # round-robin of creates, and start of claims, over shards
        self.registry = Registry(self, settings.retention_seconds)
        self.upkeep = Upkeep(self)
        self.subscriptions = Subscriptions(self)
        self.admin = Admin(self)
        store.on_connect = self._reconnected

    # -- plumbing -------------------------------------------------------------

    @staticmethod
    def queue(tenant: str, name: str) -> QueueKeys:
        """Return the keys of a queue: a command's, or one shard of it (``cmd#k``)."""
        return _queue_keys(tenant, name)

    def shard_names(self, command: str) -> list[str]:
        """Return the names of a command's queues, one per shard."""
        return [keys.shard_name(command, k) for k in range(self.shards)]

    def _shard_for(self, command: str, idempotency_key: str | None) -> str:
        """Pick the queue of a new task: its idempotency key's shard (so a
        retry meets the first try), else the next in turn."""
        if self.shards == 1:
            return command
        if idempotency_key:
            return keys.shard_name(command, zlib.crc32(idempotency_key.encode()) % self.shards)
        self._turn += 1
        return keys.shard_name(command, self._turn % self.shards)

    async def _run(self, name: str, keys_: tuple[bytes, ...], args: tuple[object, ...]) -> Any:
        """Run one script; a store error becomes StoreUnavailable.

        PERF: one call in STORE_SAMPLE is timed for the observer (every
        failure is reported).
        """
        self._calls += 1
        timed = not self._calls % STORE_SAMPLE
        started = time.perf_counter() if timed else 0.0
        try:
            reply = await self._settle(self.store.evalsha(self._s[name], keys_, args), name)
        except StoreUnavailable:
            self.observer.store_call(0.0, True)
            raise
        if timed:
            self.observer.store_call(time.perf_counter() - started, False)
        return reply

    async def _cmd(self, *args: bytes | str | int) -> Any:
        """Run one plain command; a store error becomes StoreUnavailable."""
        return await self._settle(self.store.execute(args), args[0])

    @staticmethod
    async def _settle(pending: Awaitable[Any], what: object) -> Any:
        try:
            return await pending
        except ReplyError as exc:
            # A bug, or a store refusing writes (OOM, read-only replica):
            # either way the store cannot serve the request.
            log.error("store refused %s: %s", what, exc)
            raise StoreUnavailable(f"store refused the operation: {exc}") from None

    def _learn(self, number: int, tenant: str, name: str) -> tuple[str, str]:
        if len(self._names) >= QUEUE_CACHE_SIZE:
            self._names.clear()
            self._numbers.clear()
        self._numbers[(tenant, name)] = number
        self._names[number] = (tenant, name)
        return tenant, name

    async def _number(self, tenant: str, name: str) -> int:
        """Return the queue's number, giving it one the first time."""
        number = self._numbers.get((tenant, name))
        if number is None:
            number = await self._run("queue_id", (keys.QUEUE_IDS, keys.QUEUE_NAMES),
                                     (f"{tenant}:{name}",))
            self._learn(number, tenant, name)
        return number

    async def _queue_of(self, tenant: str, task_id: str) -> QueueKeys:
        """Return the queue a task id names; TaskNotFound for another tenant's."""
        number = ids.queue_of(task_id)
        if number is None:
            raise TaskNotFound()
        name = self._names.get(number)
        if name is None:
            raw = await self._cmd(b"HGET", keys.QUEUE_NAMES, number)
            if raw is None:
                raise TaskNotFound()
            owner, queue = raw.decode().split(":", 1)
            name = self._learn(number, owner, queue)
        if name[0] != tenant:
            raise TaskNotFound()
        return self.queue(*name)

    def hint(self, tenant: str, name: str, at_ms: int) -> None:
        """Bring the queue's entry in the due index down to ``at_ms``.

        Sent after the change it follows, never awaited: a lost hint is
        restored by the sweep (see upkeep.py).
        """
        member = keys.queue_member(tenant, name)
        try:
            pending = self.store.execute(
                (b"ZADD", keys.due(keys.due_shard(member)), b"LT", at_ms, member))
        except StoreUnavailable:
            return
        pending.add_done_callback(_discard)

    # -- producer side ----------------------------------------------------------

    async def create(self, tenant: str, command: str, payload: bytes, *, priority: int = 0,
                     max_attempts: int | None = None, webhook: str | None = None,
                     idempotency_key: str | None = None, run_at: datetime | None = None,
                     delay_seconds: float | None = None) -> tuple[Task, bool]:
        """Create a task; return it and whether it is new (idempotency)."""
        self._check_writable()
        q = self.queue(tenant, self._shard_for(command, idempotency_key))
        priority = _clamp(priority)
        task_id = ids.task_id(await self._number(tenant, q.name))
        await self.registry.register(tenant, command)
        reply = await self._run(
            "create", (q.ready_tier(priority), q.tiers, q.delayed, q.tasks, q.payloads, q.idem,
                       q.waiting),
            (task_id, payload, priority, max_attempts or self.settings.max_attempts,
             webhook or "", idempotency_key or "",
             "" if run_at is None else int(run_at.timestamp() * 1000),
             _ms(delay_seconds or 0), keys.EVENTS_CHANNEL, tenant, command))
        self.available(tenant, command, reply[0])
        if reply[3]:
            await self.registry.created(tenant, command)
        return self._created(q, payload, *reply[1:5])

    def _created(self, q: QueueKeys, payload: bytes, task_id: bytes, raw: bytes,
                 created: int, found: bytes | None) -> tuple[Task, bool]:
        payload = payload if created else (found or b"")
        task = task_of(task_id.decode(), q.command, q.tenant, payload, raw)
        if created:
            self.observer.created(q.tenant, q.command, 1)
            if task.visibleAt is not None and task.visibleAt > task.createdAt:
                self.hint(q.tenant, q.name, _ms_of(task.visibleAt))
        return task, bool(created)

    async def create_many(self, tenant: str, items: Sequence[CreateTask],
                          ) -> list[tuple[Task, bool]]:
        """Create tasks, one script call per queue; results in the items' order."""
        self._check_writable()
        by_queue: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            by_queue[self._shard_for(item.command, item.idempotencyKey)].append(i)
        out: list[Any] = [None] * len(items)
        await asyncio.gather(*(self._create_group(tenant, name, [items[i] for i in where],
                                                  where, out)
                               for name, where in by_queue.items()))
        return out

    async def _create_group(self, tenant: str, name: str, items: list[CreateTask],
                            where: list[int], out: list[Any]) -> None:
        q = self.queue(tenant, name)
        command = q.command
        number = await self._number(tenant, name)
        await self.registry.register(tenant, command)
        args: list[object] = [keys.EVENTS_CHANNEL, tenant, command]
        payloads = []
        for item in items:
            payload = bytes(item.payload)
            payloads.append(payload)
            args += [ids.task_id(number), payload, _clamp(item.priority),
                     item.maxAttempts or self.settings.max_attempts, item.webhook or "",
                     item.idempotencyKey or "", _run_at_ms(item), _ms(item.delaySeconds or 0)]
        reply = await self._run("create_batch", (*q.ready, q.tiers, q.delayed, q.tasks,
                                                 q.payloads, q.idem, q.waiting), tuple(args))
        self.available(tenant, command, reply[0])
        if any(reply[3 + 4 * n] for n in range(len(items))):
            await self.registry.created(tenant, command)
        for n, (i, payload) in enumerate(zip(where, payloads, strict=True)):
            out[i] = self._created(q, payload, *reply[1 + 4 * n:5 + 4 * n])

    async def get(self, tenant: str, task_id: str) -> Task:
        q = await self._queue_of(tenant, task_id)
        raw, payload, callback = await asyncio.gather(
            self._cmd(b"HGET", q.tasks, task_id), self._cmd(b"HGET", q.payloads, task_id),
            self._cmd(b"HGET", q.callbacks, task_id))
        if raw is None:
            raise TaskNotFound()
        task = task_of(task_id, q.command, tenant, payload, raw)
        if callback is not None:
            task.callback = callback_of(callback)
        return task

    async def get_result(self, tenant: str, task_id: str, wait: float = 0,
                         gone: asyncio.Future[None] | None = None) -> tuple[Task, Result]:
        """Return a task and its result, waiting up to ``wait`` s for it
        (or until ``gone`` completes)."""
        q = await self._queue_of(tenant, task_id)
        deadline = time.monotonic() + wait
        while True:
            remaining = 0 if self.draining else deadline - time.monotonic()
            waiter = self.notifier.result_waiter(tenant, task_id) if remaining > 0 else None
            try:
                reply = await self._run("result_wait",
                                        (q.tasks, q.payloads, q.results, q.rwaiters),
                                        (task_id, 1 if waiter else 0))
                if reply[0] == 0:
                    return (task_of(task_id, q.command, tenant, reply[2], reply[1]),
                            result_of(task_id, reply[3]))
                if reply[0] != 6:
                    raise script_error(reply[0])
                if waiter is None:
                    raise ResultNotFound()
                await _wait(waiter, remaining, gone)
                if gone is not None and gone.done():
                    raise ResultNotFound()
                # Woken, or out of time: read again (the last read does not
                # wait), so a lost wake-up never hides a result that is there.
            finally:
                if waiter is not None:
                    self.notifier.drop_result_waiter(tenant, task_id, waiter)

    # -- worker side ------------------------------------------------------------

    async def claim(self, tenant: str, commands: Sequence[str], worker: str, *,
                    lease_seconds: float | None = None, wait_seconds: float = 0,
                    count: int = 1, gone: asyncio.Future[None] | None = None) -> list[Task]:
        """Claim up to ``count`` tasks, long-polling up to ``wait_seconds``.

        A long poll ends early, empty, once ``gone`` completes (the caller
        left): a task claimed then would sit out its lease unworked, so one
        claimed as the caller left is given back.
        """
        self._check_writable()
        commands = list(dict.fromkeys(commands))
        lease_ms = _ms(lease_seconds or self.settings.default_lease_seconds)
        # Stop waiting a little early, so the last look answers in time.
        deadline = time.monotonic() + wait_seconds - min(LAST_LOOK, wait_seconds / 10)
        first = True
        while True:
            remaining = 0 if self.draining else deadline - time.monotonic()
            waiter = self.notifier.ready_waiter(tenant, commands) if remaining > 0 else None
            try:
                tasks = await self._look(tenant, commands, worker, lease_ms, count,
                                         deadline if waiter else 0, first)
                first = False
                if tasks and gone is not None and gone.done():
                    await self._give_back(tenant, worker, tasks)
                    return []
                if tasks or waiter is None:
                    return tasks
                await _wait(waiter, remaining, gone)
                if gone is not None and gone.done():
                    if waiter.done() and not waiter.cancelled():
                        # Woken as the caller left: hand the wake-up on.
                        self.notifier.wake_ready(tenant, commands)
                    return []
                # Woken, or out of time: look again. Out of time, the next
                # round is a last claim without waiting, so a lost wake-up
                # costs latency, never a wrong "nothing to do".
            finally:
                if waiter is not None:
                    self.notifier.drop_ready_waiter(tenant, commands, waiter)

    async def _look(self, tenant: str, commands: list[str], worker: str, lease_ms: int,
                    count: int, deadline: float, first: bool) -> list[Task]:
        """Claim once; with a ``deadline`` (monotonic), as a poll that will wait.

        PERF: a new poll on one command that this process knows to be empty
        waits without a claim that would find nothing: under load every
        worker's next claim came up empty first, then ran again once woken
        (two scripts a task). An empty claim's waiting key keeps every new
        task announced until the time the queue is remembered empty. A poll
        woken by an announcement always claims.
        """
        if not deadline:
            return await self._claim_once(tenant, commands, worker, lease_ms, count, 0)
        single = len(commands) == 1
        if first and single and self.notifier.known_empty(tenant, commands[0], deadline):
            return []
        wait_ms = _ms(deadline - time.monotonic()) + WAITING_MARGIN_MS
        looked = time.monotonic()
        tasks = await self._claim_once(tenant, commands, worker, lease_ms, count, wait_ms)
        if single and not tasks:
            # Less a second for the clocks of this host and the store.
            self.notifier.mark_empty(tenant, commands[0], looked + wait_ms / 1000 - 1)
        return tasks

    async def _give_back(self, tenant: str, worker: str, tasks: list[Task]) -> None:
        """Abandon tasks claimed for a caller that has left (best effort: an
        abandon that fails leaves the task to its lease)."""
        outcomes = await asyncio.gather(
            *(self.abandon(tenant, t.id, worker, t.leaseId) for t in tasks),
            return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                log.warning("could not give back a task its caller left: %s", outcome)

    async def _claim_once(self, tenant: str, commands: list[str], worker: str,
                          lease_ms: int, count: int, wait_ms: int) -> list[Task]:
        if self.shards > 1:
            return await self._claim_shards(tenant, commands, worker, lease_ms, count, wait_ms)
        if len(commands) == 1:
            return await self._claim_from(tenant, commands[0], worker, lease_ms, count, wait_ms)
        return await self._claim_ranked(tenant, commands, worker, lease_ms, count, wait_ms)

    async def _claim_ranked(self, tenant: str, names: list[str], worker: str, lease_ms: int,
                            count: int, wait_ms: int) -> list[Task]:
        """Look at every queue in one pipelined round trip (marking the empty
        ones long-polled), then claim from the most urgent first, and only
        from queues that may hold work (ties: in the order given)."""
        peeks = await asyncio.gather(*(
            self._run("peek", (q.tiers, q.delayed, q.waiting), (wait_ms,))
            for q in (self.queue(tenant, name) for name in names)), return_exceptions=True)
        _raise_if_all_failed(peeks)
        ranked = sorted((-best, n) for n, best in enumerate(peeks)
                        if isinstance(best, int) and best >= 0)
        return await self._claim_in_turn(tenant, [names[n] for _, n in ranked], worker,
                                         lease_ms, count, wait_ms)

    async def _claim_in_turn(self, tenant: str, names: list[str], worker: str, lease_ms: int,
                             count: int, wait_ms: int) -> list[Task]:
        """Claim from queue after queue until ``count`` are claimed.

        A queue whose store node is away is passed over (on a cluster, the
        others carry on); only if every one failed and nothing was claimed
        does the claim fail.
        """
        tasks: list[Task] = []
        failures: list[StoreUnavailable] = []
        for name in names:
            try:
                tasks += await self._claim_from(tenant, name, worker, lease_ms,
                                                count - len(tasks), wait_ms)
            except StoreUnavailable as exc:
                failures.append(exc)
                continue
            if len(tasks) >= count:
                break
        if failures and len(failures) == len(names):
            raise failures[0]
        return tasks

    async def _claim_shards(self, tenant: str, commands: list[str], worker: str,
                            lease_ms: int, count: int, wait_ms: int) -> list[Task]:
        """Claim from sharded queues, visiting the shards from a rotating start
        so none starves.

        One command: shard after shard until ``count`` are claimed (one
        script while the first holds work). Several: ranked by their heads,
        as unsharded queues of several commands are.
        """
        self._turn += 1
        start = self._turn % self.shards
        order = [(start + k) % self.shards for k in range(self.shards)]
        if len(commands) > 1:
            names = [keys.shard_name(c, k) for k in order for c in commands]
            return await self._claim_ranked(tenant, names, worker, lease_ms, count, wait_ms)
        return await self._claim_in_turn(tenant, [keys.shard_name(commands[0], k)
                                                  for k in order],
                                         worker, lease_ms, count, wait_ms)

    async def _claim_from(self, tenant: str, name: str, worker: str, lease_ms: int,
                          count: int, wait_ms: int) -> list[Task]:
        q = self.queue(tenant, name)
        try:
            reply = await self._run(
                "claim", (*q.ready, q.tiers, q.delayed, q.inflight, q.tasks, q.payloads,
                          q.waiting),
                (worker, lease_ms, ids.lease_token(), count, wait_ms, keys.EVENTS_CHANNEL,
                 tenant, q.command))
        except ReplicationUnconfirmed as exc:
            # Leased, but not safely: give them back rather than leave them
            # leased to a caller that gets a 503.
            await self._give_back(tenant, worker, _claimed(q, exc.reply))
            raise
        tasks = _claimed(q, reply)
        if tasks:
            self.observer.claimed(tenant, q.command, len(tasks))
            self._hint_lease(q, tasks[-1])
        return tasks

    def _hint_lease(self, q: QueueKeys, task: Task) -> None:
        # The lease may run out, and before that the task may finish, to be
        # removed a retention later: the queue needs upkeep by either time.
        assert task.leaseUntil is not None
        self.hint(q.tenant, q.name, min(_ms_of(task.leaseUntil),
                                        _ms_of(task.updatedAt) + self._retention_ms))

    async def _lease_op(self, name: str, keys_: tuple[bytes, ...],
                        args: tuple[object, ...]) -> Any:
        """Run a lease holder's script; raise the error its status code names."""
        reply = await self._run(name, keys_, args)
        if reply[0] != 0:
            raise script_error(reply[0])
        return reply

    async def heartbeat(self, tenant: str, task_id: str, worker: str, lease_id: str | None,
                        extend_seconds: float | None = None) -> float:
        """Extend a lease; return the new lease end (epoch seconds)."""
        q = await self._queue_of(tenant, task_id)
        extend = _ms(extend_seconds or self.settings.default_lease_seconds)
        reply = await self._lease_op("heartbeat", (q.tasks, q.inflight),
                                     (task_id, worker, lease_id or "", extend))
        self.hint(tenant, q.name, reply[1])  # a shorter lease than before
        return reply[1] / 1000

    async def abandon(self, tenant: str, task_id: str, worker: str, lease_id: str | None) -> None:
        q = await self._queue_of(tenant, task_id)
        reply = await self._lease_op(
            "abandon", (*q.ready, q.tiers, q.tasks, q.inflight, q.waiting),
            (task_id, worker, lease_id or "", keys.EVENTS_CHANNEL, tenant, q.command))
        self.available(tenant, q.command, reply[1])

    def _retry_keys(self, q: QueueKeys) -> tuple[bytes, ...]:
        return (*q.ready, q.tiers, q.tasks, q.inflight, q.delayed, q.results, q.done, q.dlq,
                q.waiting, q.rwaiters, q.outbox, q.callbacks)

    async def nack(self, tenant: str, task_id: str, worker: str, lease_id: str | None,
                   delay_seconds: float | None = None, reason: str | None = None,
                   ) -> tuple[str, float | None]:
        """Refuse a delivery; return ("requeued", delay s) or ("dlq", None)."""
        q = await self._queue_of(tenant, task_id)
        reply = await self._lease_op(
            "nack", self._retry_keys(q),
            (task_id, worker, lease_id or "", -1 if delay_seconds is None else _ms(delay_seconds),
             reason or "", *self._backoff, random.random(), keys.EVENTS_CHANNEL, tenant,
             q.command),
        )
        outcome = reply[1].decode()
        if outcome == "dlq":
            self.observer.dead_lettered(tenant, q.command, "MAX_ATTEMPTS", 1)
            self.callbacks_owed(tenant, q.name, reply[2])
            return outcome, None
        if reply[2] > 0:
            self.hint(tenant, q.name, reply[3])
        self.available(tenant, q.command, reply[4])
        return outcome, reply[2] / 1000

    async def submit_result(self, tenant: str, task_id: str, worker: str, lease_id: str | None,
                            status: str, result: bytes = b"", error: str | None = None,
                            artifacts: bytes = b"") -> Result:
        q = await self._queue_of(tenant, task_id)
        outcome = (await self._results(tenant, q, [(task_id, worker, lease_id or "", status,
                                                    result, error or "", artifacts)]))[0]
        if isinstance(outcome, CodeqError):
            raise outcome
        return outcome

    async def submit_results(self, tenant: str, worker: str,
                             items: Sequence[tuple[str, str | None, str, bytes, str | None,
                                                   bytes]],
                             ) -> list[Result | CodeqError]:
        """Submit results (task id, lease id, status, result, error, artifacts),
        one script call per queue; each outcome in the items' order."""
        out: list[Result | CodeqError] = [TaskNotFound()] * len(items)
        queues = await asyncio.gather(*(self._queue_of(tenant, item[0]) for item in items),
                                      return_exceptions=True)
        by_queue: dict[str, list[int]] = defaultdict(list)
        for i, q in enumerate(queues):
            if isinstance(q, QueueKeys):
                by_queue[q.name].append(i)
            elif not isinstance(q, TaskNotFound):
                raise q  # the store is down: the whole request fails

        async def one_queue(name: str, where: list[int]) -> None:
            rows = [(items[i][0], worker, items[i][1] or "", items[i][2], items[i][3],
                     items[i][4] or "", items[i][5]) for i in where]
            outcomes = await self._results(tenant, self.queue(tenant, name), rows)
            for i, outcome in zip(where, outcomes, strict=True):
                out[i] = outcome

        await asyncio.gather(*(one_queue(n, where) for n, where in by_queue.items()))
        return out

    async def _results(self, tenant: str, q: QueueKeys,
                       rows: list[tuple[str, str, str, str, bytes, str, bytes]],
                       ) -> list[Result | CodeqError]:
        args: list[object] = [keys.EVENTS_CHANNEL, tenant]
        for row in rows:
            args += row
        reply = await self._run("result", (q.tasks, q.inflight, q.results, q.done, q.rwaiters,
                                            q.outbox, q.callbacks), tuple(args))
        self.callbacks_owed(tenant, q.name, reply[-1])
        out = [result_of(row[0], reply[2 * n + 1]) if reply[2 * n] == 0
               else script_error(reply[2 * n]) for n, row in enumerate(rows)]
        for status in ("COMPLETED", "FAILED"):
            n = sum(1 for r in out if isinstance(r, Result) and r.status == status)
            if n:
                self.observer.finished(tenant, q.command, status, n)
        return out

    async def take_token(self, principal: str, op: str, rate: float, burst: int) -> float:
        """Take a token of the caller's bucket for ``op``; return 0, or the
        seconds until one is there."""
        wait_ms = await self._run("rate_take", (keys.rate_bucket(principal, op),), (rate, burst))
        return wait_ms / 1000

    # -- push hooks -----------------------------------------------------------------

    def available(self, tenant: str, command: str, became: int) -> None:
        """A script reported the queue going from no ready task to some."""
        if became and self.on_available is not None:
            self.on_available(tenant, command)

    def callbacks_owed(self, tenant: str, name: str, count: int) -> None:
        """Callbacks were written to a queue's outbox: tell this process'
        dispatcher, and make the queue's upkeep come back for them in case
        this process dies first (then any process' upkeep finds them)."""
        if count:
            self.hint(tenant, name, _ms(time.time()) + CALLBACK_HINT_MS)
            if self.on_callbacks is not None:
                self.on_callbacks(tenant, name)

    async def take_callbacks(self, tenant: str, name: str, limit: int, lease_ms: int,
                             taker: str) -> list[tuple[str, bytes, bytes, bytes]]:
        """Take up to ``limit`` callbacks due in a queue's outbox, for ``lease_ms``;
        return (task id, callback record, task record, result record) of each."""
        q = self.queue(tenant, name)
        reply = await self._run("callback_take", (q.outbox, q.callbacks, q.tasks, q.results),
                                (limit, lease_ms, taker))
        until_ms, rest = reply[0], reply[1:]
        if rest:
            # Should this process die holding them, the upkeep hands them on.
            self.hint(tenant, name, until_ms)
        return [(rest[i].decode(), rest[i + 1], rest[i + 2], rest[i + 3])
                for i in range(0, len(rest), 4)]

    async def callback_done(self, tenant: str, name: str, task_id: str, taker: str,
                            outcome: str, error: str = "", retry_at_ms: int = 0) -> bool:
        """Record one delivery attempt's outcome (delivered, retry or failed),
        or hand an entry back unsent (deferred, due again at ``retry_at_ms``);
        False when the entry was taken over meanwhile."""
        q = self.queue(tenant, name)
        done = await self._run("callback_done", (q.outbox, q.callbacks),
                               (task_id, taker, outcome, error, retry_at_ms))
        if done and outcome in ("retry", "deferred"):
            self.hint(tenant, name, retry_at_ms)
        return bool(done)

    # -- upkeep -------------------------------------------------------------------

    async def tick(self) -> Report:
        """Upkeep every queue whose time has come (see upkeep.py)."""
        return await self.upkeep.tick()

    async def sweep(self) -> int:
        """Mark every registered queue due for upkeep; return how many."""
        return await self.upkeep.sweep()

    # -- lifecycle ----------------------------------------------------------------

    async def open(self, connect_timeout: float = 5.0, loops: bool = True) -> None:
        """Connect, check the store's layout, and start the loops.

        A store still down is not fatal: requests get 503 until the
        reconnect loop gets through. A store holding another layout of
        codeQ's keys is (LayoutMismatch).
        """
        self._loop = asyncio.get_running_loop()
        self.store.start()
        self.notifier.start()
        if await self.store.wait_connected(connect_timeout):
            await self.check_layout()
        else:
            log.warning("store %s not reachable yet; retrying in the background",
                        redact(self.store.url))
            self._late_check = asyncio.create_task(self._check_later(), name="check-layout")
        if loops:
            self.start()

    async def _check_later(self) -> None:
        """Check the layout once the store answers (503 for creates and claims
        until then; for good, should it hold another layout)."""
        while True:
            try:
                await self.check_layout()
                return
            except StoreUnavailable:
                await asyncio.sleep(0.5)
            except LayoutMismatch as exc:
                self.refused = str(exc)
                log.critical("refusing the store: %s", exc)
                return

    def _check_writable(self) -> None:
        if not self.checked:
            raise StoreUnavailable(f"this process refuses the store: {self.refused}"
                                   if self.refused else "the store's layout is not checked yet")

    async def check_layout(self) -> None:
        """Mark an empty store with this layout; refuse one written by another.

        The layout of 0.1 (a task record as a msgpack map, one id -> command
        key per task) cannot be read by this version: drain it with 0.1, or
        flush it.
        """
        found = await self._cmd(b"GET", keys.LAYOUT)
        if found is None:
            if await self._cmd(b"EXISTS", keys.TENANTS):
                raise LayoutMismatch(
                    "the store holds tasks of codeQ 0.1 (key layout 1), which this version "
                    "cannot read: finish them with codeQ 0.1 or flush the store")
            await self._cmd(b"SET", keys.LAYOUT, keys.LAYOUT_VERSION, b"NX")
        elif found != keys.LAYOUT_VERSION:
            raise LayoutMismatch(f"the store holds codeQ key layout {found.decode()!r}; this "
                                 f"version reads layout {keys.LAYOUT_VERSION.decode()!r}")
        await self._check_shards(found is not None)
        if getattr(self.store, "wait_replicas", 0):
            info = await self._cmd(b"INFO", b"server")
            if b"kvrocks_version" in info:
                raise LayoutMismatch("--store-wait-replicas needs WAIT, which KVRocks does not "
                                     "have: leave it at 0 there")
        self.checked = True

    async def _check_shards(self, used: bool) -> None:
        """Record the store's queue shards the first time; refuse another number
        (claims would miss the tasks of shards they do not visit)."""
        mine = str(self.shards).encode()
        # A store used before shards were recorded has its queues unsharded.
        await self._cmd(b"SET", keys.QUEUE_SHARDS, b"1" if used else mine, b"NX")
        found = await self._cmd(b"GET", keys.QUEUE_SHARDS)
        if found != mine:
            raise LayoutMismatch(
                f"the store's queues are spread over {found.decode()} shard(s); start every "
                f"process with --queue-shards {found.decode()}; to change it, drain every "
                "queue, stop every process and delete the key codeq:{queues}:shards")

    def drain(self) -> None:
        """End every long poll now (shutdown is coming); safe from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self.draining = True
        self.notifier.wake_all()

    async def close(self) -> None:
        await self.stop()
        await self.notifier.close()
        await self.store.close()

    async def ping(self) -> bool:
        """Return whether the store answers right now and wake-ups can arrive."""
        if not self.notifier.subscribed or not self.checked:
            return False
        try:
            return await asyncio.wait_for(self.store.execute((b"PING",)), 2.0) == b"PONG"
        except (StoreUnavailable, ReplyError, TimeoutError):
            return False

    def _reconnected(self) -> None:
        # Hints on the connection that dropped may not have reached the
        # store: a sweep restores them. (The sweep loop's first round covers
        # the first connection.)
        if self._loops and (self._resweep is None or self._resweep.done()):
            self._resweep = asyncio.create_task(self._sweep_once(), name="sweep")

    async def _sweep_once(self) -> None:
        try:
            await self.sweep()
        except StoreUnavailable:
            pass  # dropped again: the next reconnection sweeps
        except Exception:
            log.exception("sweep after reconnecting failed")

    def start(self) -> None:
        """Start the background loops of this process."""
        self._loops = [
            asyncio.create_task(self._every(self.settings.tick_interval, self.tick), name="tick"),
            asyncio.create_task(self._every(self.settings.sweep_interval, self.sweep,
                                            at_start=True), name="sweep"),
        ]

    async def stop(self) -> None:
        tasks = [*self._loops, *(t for t in (self._resweep, self._late_check) if t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops, self._resweep = [], None

    async def _every(self, interval: float, job, at_start: bool = False) -> None:
        """Run ``job`` every ``interval`` s; while the store is down, retry each second."""
        if not at_start:
            await asyncio.sleep(interval)
        while True:
            try:
                if self.store.is_connected:
                    await job()
                    await asyncio.sleep(interval)
                    continue
            except StoreUnavailable:
                pass  # the store went away; try again soon
            except Exception:
                log.exception("background %s failed", job.__name__)
            await asyncio.sleep(min(interval, 1.0))
