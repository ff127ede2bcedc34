"""A worker runtime: claim tasks, run handlers, heartbeat, report.

    from codeq.worker import Worker

    def send_email(payload, ctx):
        ...                      # raise to nack (retried later); return a JSON value
        return {"messageId": "m-1"}

    Worker("http://127.0.0.1:8080", handlers={"email.send": send_email},
           concurrency=8).run()  # until SIGTERM / SIGINT or worker.stop()

Claims long-poll (a batch claim when more than one slot is free) and never
take more tasks than free slots. Sync handlers run in a thread pool, async
ones on the loop. Each task's lease is extended every third of its length
while its handler runs. What a handler returns is the COMPLETED result; what
it raises becomes a nack (reason: the exception), retried after the
handler's ``retry_delay`` attribute if it has one, else the server's backoff.
On stop, no more claims are made; handlers get ``grace_seconds`` to finish,
and the tasks still running after that are abandoned (claimable at once by
another worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import msgspec

from codeq.client.types import Task

log = logging.getLogger("codeq.worker")

Handler = Callable[[Any, "TaskContext"], Any]
_task = msgspec.json.Decoder(Task)
_tasks = msgspec.json.Decoder(dict[str, list[Task]])
_outcomes = msgspec.json.Decoder(dict[str, list[dict[str, Any]]])
JSON = {"Content-Type": "application/json"}
MAX_BATCH = 100  # results a request


class CodeqHttpError(Exception):
    """An answer the worker did not expect (it logs it and goes on)."""


class TaskContext:
    """What a handler knows of its task, and the one thing it may do to it."""

    def __init__(self, worker: Worker, task: Task, lease_seconds: float) -> None:
        self.task = task
        self.attempts = task.attempts
        self.deadline = time.monotonic() + lease_seconds  # the lease's end, monotonic
        self._worker = worker
        self._lease_seconds = lease_seconds

    def heartbeat(self) -> None:
        """Extend the lease now (it is also extended every third of it)."""
        loop = self._worker.loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            raise TypeError("on the event loop, await ctx.aheartbeat() instead")
        asyncio.run_coroutine_threadsafe(self.aheartbeat(), loop).result()

    async def aheartbeat(self) -> None:
        await self._worker._heartbeat(self)


class Worker:
    """See the module docstring."""

    def __init__(self, url: str, handlers: Mapping[str, Handler], *, concurrency: int = 8,
                 token: str | None = None, worker_id: str | None = None,
                 lease_seconds: float = 60.0, wait_seconds: float = 10.0,
                 grace_seconds: float = 30.0) -> None:
        if not handlers:
            raise ValueError("a worker needs at least one handler")
        self.url = url.rstrip("/")
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.grace_seconds = grace_seconds
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if worker_id or not token:
            self.headers["X-Worker-Id"] = worker_id or f"codeq-worker-{id(self):x}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._leased: dict[str, TaskContext] = {}  # task id -> its running handler's context
        self._completed: list[tuple[Task, Any, asyncio.Future[None]]] = []  # to report
        self._flushes: set[asyncio.Future[None]] = set()
        self._async: dict[str, bool] = {c: asyncio.iscoroutinefunction(h)
                                        for c, h in self.handlers.items()}
        self.processed = 0  # tasks whose outcome was reported

    # -- running and stopping ---------------------------------------------------

    def run(self) -> None:
        """Work until SIGTERM, SIGINT (in the main thread) or ``stop()``."""
        main = threading.current_thread() is threading.main_thread()
        asyncio.run(self.run_async(signals=main))

    def stop(self) -> None:
        """Ask a running worker to stop (from any thread)."""
        if self.loop is not None and self._stopping is not None:
            self.loop.call_soon_threadsafe(self._stopping.set)

    async def run_async(self, signals: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self._stopping.set)
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="codeq-handler")
        # aiohttp: httpx's async connection pool spent most of a busy worker's CPU
        # choosing a connection for each request (measured with py-spy).
        connector = aiohttp.TCPConnector(limit=self.concurrency + 2)
        timeout = aiohttp.ClientTimeout(total=self.wait_seconds + 30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         headers=self.headers) as http:
            self.http = http
            keeper = asyncio.create_task(self._keep_leased())
            try:
                await self._claim_loop(pool)
            finally:
                await self._wind_down()
                keeper.cancel()
                pool.shutdown(wait=False, cancel_futures=True)

    async def _claim_loop(self, pool: ThreadPoolExecutor) -> None:
        assert self._stopping is not None
        commands = sorted(self.handlers)
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                await self._until_a_slot_or_stop()
                continue
            try:
                tasks = await self._claim(commands, free)
            except (aiohttp.ClientError, OSError, TimeoutError, CodeqHttpError) as exc:
                log.warning("claim failed (%s); trying again in 1 s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                continue
            for task in tasks:
                job = asyncio.create_task(self._work(task, pool))
                self._running.add(job)
                job.add_done_callback(self._running.discard)

    async def _until_a_slot_or_stop(self) -> None:
        assert self._stopping is not None
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({stop, *self._running}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        async with self.http.post(self.url + "/v1/codeq" + path,
                                  data=msgspec.json.encode(body), headers=JSON) as reply:
            return reply.status, await reply.read()

    async def _claim(self, commands: list[str], free: int) -> list[Task]:
        body: dict[str, Any] = {"commands": commands, "leaseSeconds": self.lease_seconds,
                                "waitSeconds": self.wait_seconds}
        if free > 1:
            status, data = await self._post("/tasks/claim/batch", {**body, "count": free})
        else:
            status, data = await self._post("/tasks/claim", body)
        if status == 204:
            return []
        if status != 200:
            raise CodeqHttpError(f"claim answered {status}: {data[:200]!r}")
        if free > 1:
            return _tasks.decode(data)["tasks"]
        return [_task.decode(data)]

    async def _wind_down(self) -> None:
        """Let running handlers finish within the grace period; abandon the rest."""
        if not self._running:
            return
        _, pending = await asyncio.wait(self._running, timeout=self.grace_seconds)
        for job in pending:
            job.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._flushes, return_exceptions=True)  # results on their way

    # -- one task -----------------------------------------------------------------

    async def _work(self, task: Task, pool: ThreadPoolExecutor) -> None:
        ctx = TaskContext(self, task, self.lease_seconds)
        handler = self.handlers[task.command]
        self._leased[task.id] = ctx
        try:
            payload = msgspec.json.decode(task.payload)
            if self._async[task.command]:
                result = await handler(payload, ctx)
            else:
                assert self.loop is not None
                result = await self.loop.run_in_executor(pool, handler, payload, ctx)
            result = msgspec.Raw(msgspec.json.encode(result))  # not JSON: a nack
        except asyncio.CancelledError:
            del self._leased[task.id]
            await self._report(task, "abandon", {})
            raise
        except Exception as exc:
            del self._leased[task.id]
            body: dict[str, Any] = {"reason": f"{type(exc).__name__}: {exc}"[:4000]}
            delay = getattr(handler, "retry_delay", None)
            if delay is not None:
                body["delaySeconds"] = delay
            await self._report(task, "nack", body)
            return
        del self._leased[task.id]
        await self._complete(task, result)

    async def _complete(self, task: Task, result: Any) -> None:
        """Report a COMPLETED result, with the others finished in the same turn of
        the loop: one POST /tasks/batch/results for up to 100 of them.

        PERF: an HTTP request per task was most of the worker's CPU.
        """
        assert self.loop is not None
        done = self.loop.create_future()
        self._completed.append((task, result, done))
        if len(self._completed) == 1:
            self.loop.call_soon(self._flush_results)
        await done

    def _flush_results(self) -> None:
        batch, self._completed = self._completed[:MAX_BATCH], self._completed[MAX_BATCH:]
        if self._completed:
            assert self.loop is not None
            self.loop.call_soon(self._flush_results)
        flush = asyncio.ensure_future(self._post_results(batch))
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _post_results(self, batch: list[tuple[Task, Any, asyncio.Future[None]]]) -> None:
        body = {"results": [{"taskId": t.id, "leaseId": t.leaseId, "status": "COMPLETED",
                             "result": r} for t, r, _ in batch]}
        try:
            status, data = await self._post("/tasks/batch/results", body)
            if status != 200:
                raise CodeqHttpError(f"batch/results answered {status}: {data[:200]!r}")
            for (task, _, _), item in zip(batch, _outcomes.decode(data)["results"],
                                          strict=True):
                if "result" in item:
                    self.processed += 1
                else:
                    log.error("result of task %s refused: %s", task.id, item)
        except (aiohttp.ClientError, OSError, TimeoutError, CodeqHttpError) as exc:
            log.error("%d results not reported (%s): their leases will run out", len(batch),
                      exc)
        finally:
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    async def _keep_leased(self) -> None:
        """Extend the leases of the running handlers, each every third of its length.

        PERF: one loop for all of them, not a task per task.
        """
        step = self.lease_seconds / 6
        while True:
            await asyncio.sleep(step)
            soon = time.monotonic() + 2 * self.lease_seconds / 3
            due = [c for c in self._leased.values() if c.deadline <= soon]
            for ctx, outcome in zip(due, await asyncio.gather(
                    *(self._heartbeat(c) for c in due), return_exceptions=True), strict=True):
                if isinstance(outcome, Exception):
                    log.warning("heartbeat of task %s failed: %s", ctx.task.id, outcome)

    async def _heartbeat(self, ctx: TaskContext) -> None:
        status, data = await self._post(f"/tasks/{ctx.task.id}/heartbeat", {
            "extendSeconds": self.lease_seconds, "leaseId": ctx.task.leaseId})
        if status != 200:
            raise CodeqHttpError(f"heartbeat answered {status}: {data[:200]!r}")
        ctx.deadline = time.monotonic() + self.lease_seconds

    async def _report(self, task: Task, what: str, body: dict[str, Any]) -> None:
        body["leaseId"] = task.leaseId
        # Shielded: a stop must not cut the report of a finished handler short.
        try:
            status, data = await asyncio.shield(self._post(f"/tasks/{task.id}/{what}", body))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.error("%s of task %s not reported (%s): its lease will run out", what,
                      task.id, exc)
            return
        if status >= 400:
            log.error("%s of task %s refused: %s", what, task.id, data[:300])
        else:
            self.processed += 1


__all__ = ["Handler", "TaskContext", "Worker"]
