"""The queue engine: task semantics as one Lua script per transition.

Speaks in tenants, commands and tasks; knows nothing of HTTP. Every state
change of one task is one EVALSHA on that task's queue. Operations spanning
two hash slots are ordered steps whose interruption loses nothing: create
writes the id -> command key first, then the task; retention removes the
task first, then its id -> command key (either leaves at worst a dangling id
key, which reads as an unknown task); changes that bring a queue's upkeep
closer write the due index after the change (see upkeep.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any

from codeq import ids, keys
from codeq._core import Client, ReplyError
from codeq.config import Settings, redact
from codeq.engine import scripts
from codeq.engine.notify import Notifier
from codeq.engine.registry import Registry
from codeq.engine.upkeep import Report, Upkeep
from codeq.errors import (
    ResultNotFound,
    StoreUnavailable,
    TaskNotFound,
    script_error,
)
from codeq.keys import PRIORITY_MAX, PRIORITY_MIN, QueueKeys
from codeq.schemas import ResultRecord, Task, result_decoder, task_decoder

log = logging.getLogger("codeq.engine")

# id -> command lookups cached per process; ids never change command, so
# entries never go stale (a removed task simply reads as not found).
COMMAND_CACHE_SIZE = 100_000
# Seconds (at most a tenth of the wait) a long poll stops waiting before its
# end, for its last look to answer within the time asked.
LAST_LOOK = 0.05


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


# Bounded: claims may name any number of commands that hold no tasks.
@functools.lru_cache(maxsize=4096)
def _queue_keys(tenant: str, command: str) -> QueueKeys:
    return QueueKeys(tenant, command)


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


class Engine:
    """Create, claim and finish tasks; run the background upkeep loops."""

    def __init__(self, store: Client, notifier: Notifier, settings: Settings) -> None:
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self._commands: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._loops: list[asyncio.Task[None]] = []
        self._resweep: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.draining = False
        self._s = {name: scripts.load(name) for name in scripts.NUMKEYS}
        for script in self._s.values():
            store.register(script)
        self._backoff = (
            settings.backoff_policy,
            _ms(settings.backoff_base_seconds),
            _ms(settings.backoff_max_seconds),
        )
        self._retention_ms = _ms(settings.retention_seconds)
        self.registry = Registry(store, self._cmd, settings.retention_seconds)
        self.upkeep = Upkeep(self)
        store.on_connect = self._reconnected

    # -- plumbing -------------------------------------------------------------

    @staticmethod
    def queue(tenant: str, command: str) -> QueueKeys:
        return _queue_keys(tenant, command)

    async def _run(self, name: str, keys_: tuple[bytes, ...], args: tuple[object, ...]) -> Any:
        """Run one script; a store error becomes StoreUnavailable."""
        return await self._settle(self.store.evalsha(self._s[name], keys_, args), name)

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

    def _remember(self, tenant: str, task_id: str, command: str) -> None:
        cache = self._commands
        if len(cache) >= COMMAND_CACHE_SIZE:
            # PERF: OrderedDict evicts the oldest in O(1); a plain dict's
            # next(iter()) crawls over deleted slots (3.8 us vs 0.14 us a call).
            cache.popitem(last=False)
        cache[(tenant, task_id)] = command

    async def _queue_of(self, tenant: str, task_id: str) -> QueueKeys:
        command = self._commands.get((tenant, task_id))
        if command is None:
            raw = await self._cmd(b"GET", keys.task_command(tenant, task_id))
            if raw is None:
                raise TaskNotFound()
            command = raw.decode()
            self._remember(tenant, task_id, command)
        return self.queue(tenant, command)

    def hint(self, tenant: str, command: str, at_ms: int) -> None:
        """Bring the queue's entry in the due index down to ``at_ms``.

        Sent after the change it follows, never awaited: a lost hint is
        restored by the sweep (see upkeep.py).
        """
        member = keys.queue_member(tenant, command)
        try:
            pending = self.store.execute(
                (b"ZADD", keys.due(keys.due_shard(member)), b"LT", at_ms, member))
        except StoreUnavailable:
            return
        pending.add_done_callback(_discard)

    # -- producer side ----------------------------------------------------------

    async def create(
        self,
        tenant: str,
        command: str,
        payload: bytes,
        *,
        priority: int = 0,
        max_attempts: int | None = None,
        webhook: str | None = None,
        idempotency_key: str | None = None,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
    ) -> tuple[Task, bool]:
        """Create a task; return it and whether it is new (idempotency)."""
        q = self.queue(tenant, command)
        priority = min(max(priority, PRIORITY_MIN), PRIORITY_MAX)
        task_id = ids.task_id()
        self.registry.register(tenant, command)
        args = (
            task_id,
            command,
            payload,
            priority,
            max_attempts or self.settings.max_attempts,
            webhook or "",
            idempotency_key or "",
            tenant,
            "" if run_at is None else int(run_at.timestamp() * 1000),
            _ms(delay_seconds or 0),
            keys.EVENTS_CHANNEL,
        )
        # The id -> command key goes first, in the same pipelined write.
        loc = self.store.execute((b"SET", keys.task_command(tenant, task_id), command))
        try:
            reply = await self._run(
                "create", (q.ready_tier(priority), q.delayed, q.tasks, q.idem, q.waiting), args)
        except BaseException:
            _discard(loc)
            raise
        await self._settle(loc, "SET")
        task = task_decoder.decode(reply[1])
        created = reply[2] == 1
        if not created:
            # The key matched an earlier task: the id reserved above is unused.
            await self._cmd(b"DEL", keys.task_command(tenant, task_id))
        self._remember(tenant, task.id, command)
        if created:
            self.registry.created(tenant, command)
            if task.visibleAt is not None and task.visibleAt > task.createdAt:
                self.hint(tenant, command, _ms_of(task.visibleAt))
        return task, created

    async def get(self, tenant: str, task_id: str) -> Task:
        q = await self._queue_of(tenant, task_id)
        raw = await self._cmd(b"HGET", q.tasks, task_id)
        if raw is None:
            raise TaskNotFound()
        return task_decoder.decode(raw)

    async def get_result(self, tenant: str, task_id: str, wait: float = 0,
                         gone: asyncio.Future[None] | None = None,
                         ) -> tuple[Task, ResultRecord]:
        """Return a task and its result, waiting up to ``wait`` s for it
        (or until ``gone`` completes)."""
        q = await self._queue_of(tenant, task_id)
        deadline = time.monotonic() + wait
        while True:
            remaining = 0 if self.draining else deadline - time.monotonic()
            waiter = self.notifier.result_waiter(tenant, task_id) if remaining > 0 else None
            try:
                reply = await self._run(
                    "result_wait", (q.tasks, q.results, q.rwaiters),
                    (task_id, 1 if waiter else 0),
                )
                if reply[0] == 0:
                    return task_decoder.decode(reply[1]), result_decoder.decode(reply[2])
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

    async def claim(
        self,
        tenant: str,
        commands: Sequence[str],
        worker: str,
        *,
        lease_seconds: float | None = None,
        wait_seconds: float = 0,
        count: int = 1,
        gone: asyncio.Future[None] | None = None,
    ) -> list[Task]:
        """Claim up to ``count`` tasks, long-polling up to ``wait_seconds``.

        A long poll ends early, empty, once ``gone`` completes (the caller
        left): a task claimed then would sit out its lease unworked, so one
        claimed as the caller left is given back.
        """
        commands = list(dict.fromkeys(commands))
        lease_ms = _ms(lease_seconds or self.settings.default_lease_seconds)
        # Stop waiting a little early, so the last look answers in time.
        deadline = time.monotonic() + wait_seconds - min(LAST_LOOK, wait_seconds / 10)
        while True:
            remaining = 0 if self.draining else deadline - time.monotonic()
            waiter = self.notifier.ready_waiter(tenant, commands) if remaining > 0 else None
            try:
                tasks = await self._claim_once(tenant, commands, worker, lease_ms, count,
                                               _ms(remaining) + 1000 if waiter else 0)
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
        order = commands
        if len(commands) > 1:
            # Look at every queue in one pipelined batch, then claim from the
            # most urgent first. Empty queues stay in the order: a claim on
            # them is cheap and marks them long-polled when all come up empty.
            peeks: list[int] = await asyncio.gather(*(
                self._run("peek", (*self.queue(tenant, c).ready, self.queue(tenant, c).delayed), ())
                for c in commands
            ))
            order = [c for _, c in sorted(zip(peeks, commands, strict=True),
                                          key=lambda pair: -pair[0])]
        tasks: list[Task] = []
        for command in order:
            q = self.queue(tenant, command)
            reply = await self._run(
                "claim",
                (*q.ready, q.delayed, q.inflight, q.tasks, q.waiting),
                (worker, lease_ms, ids.lease_token(), count - len(tasks), wait_ms,
                 keys.EVENTS_CHANNEL, tenant, command),
            )
            for raw in reply[1:]:
                task = task_decoder.decode(raw)
                self._remember(tenant, task.id, command)
                tasks.append(task)
            if len(reply) > 1:
                self._hint_lease(tenant, command, tasks[-1])
            if len(tasks) >= count:
                break
        return tasks

    def _hint_lease(self, tenant: str, command: str, task: Task) -> None:
        # The lease may run out, and before that the task may finish, to be
        # removed a retention later: the queue needs upkeep by either time.
        assert task.leaseUntil is not None
        self.hint(tenant, command, min(_ms_of(task.leaseUntil),
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
        self.hint(tenant, q.command, reply[1])  # a shorter lease than before
        return reply[1] / 1000

    async def abandon(self, tenant: str, task_id: str, worker: str, lease_id: str | None) -> None:
        q = await self._queue_of(tenant, task_id)
        await self._lease_op("abandon", (*q.ready, q.tasks, q.inflight, q.waiting),
                             (task_id, worker, lease_id or "", keys.EVENTS_CHANNEL, tenant))

    def _retry_keys(self, q: QueueKeys) -> tuple[bytes, ...]:
        return (*q.ready, q.tasks, q.inflight, q.delayed, q.results, q.done, q.dlq,
                q.waiting, q.rwaiters)

    async def nack(self, tenant: str, task_id: str, worker: str, lease_id: str | None,
                   delay_seconds: float | None = None, reason: str | None = None,
                   ) -> tuple[str, float | None]:
        """Refuse a delivery; return ("requeued", delay s) or ("dlq", None)."""
        q = await self._queue_of(tenant, task_id)
        reply = await self._lease_op(
            "nack", self._retry_keys(q),
            (task_id, worker, lease_id or "", -1 if delay_seconds is None else _ms(delay_seconds),
             reason or "", *self._backoff, random.random(), keys.EVENTS_CHANNEL, tenant),
        )
        outcome = reply[1].decode()
        if outcome == "dlq":
            return outcome, None
        if reply[2] > 0:
            self.hint(tenant, q.command, reply[3])
        return outcome, reply[2] / 1000

    async def submit_result(self, tenant: str, task_id: str, worker: str, lease_id: str | None,
                            status: str, result: bytes = b"", error: str | None = None,
                            artifacts: bytes = b"") -> ResultRecord:
        q = await self._queue_of(tenant, task_id)
        reply = await self._lease_op(
            "result", (q.tasks, q.inflight, q.results, q.done, q.rwaiters),
            (task_id, worker, lease_id or "", status, result, error or "", artifacts,
             keys.EVENTS_CHANNEL, tenant),
        )
        return result_decoder.decode(reply[1])

    # -- upkeep -------------------------------------------------------------------

    async def tick(self) -> Report:
        """Upkeep every queue whose time has come (see upkeep.py)."""
        return await self.upkeep.tick()

    async def sweep(self) -> int:
        """Mark every registered queue due for upkeep; return how many."""
        return await self.upkeep.sweep()

    async def open(self, connect_timeout: float = 5.0, loops: bool = True) -> None:
        """Connect and start the loops.

        A store still down is not fatal: requests get 503 until the
        reconnect loop gets through.
        """
        self._loop = asyncio.get_running_loop()
        self.store.start()
        self.notifier.start()
        if not await self.store.wait_connected(connect_timeout):
            log.warning("store %s not reachable yet; retrying in the background",
                        redact(self.store.url))
        if loops:
            self.start()

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
        if not self.notifier.subscribed:
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
        tasks = [*self._loops, *([self._resweep] if self._resweep else [])]
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
