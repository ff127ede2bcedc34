"""Python client of the codeQ API: ``Client`` (sync) and ``AsyncClient``.

    from codeq.client import Client

    with Client("http://127.0.0.1:8080", token="...") as codeq:
        task = codeq.create("email.send", {"to": "ada@example.com"})
        done = codeq.result(task.id, wait=30)

One pooled keep-alive connection set per client (httpx). Calls that are
safe to repeat are retried on a 503, a 429 (after its Retry-After) or a
connection error, with exponential backoff and jitter: reads, and creates
that carry an idempotency key. Every create gets a fresh key unless the
caller passes its own (or ``idempotency_key=None`` to send none), so a
retried create never makes a second task. Errors raise the exceptions of
``codeq.client.errors``, named after the API's answers.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import httpx
import msgspec

from codeq.client.errors import CodeqError, NotFound, RateLimited, Unavailable, error_of
from codeq.client.types import Result, Task, TaskResult
from codeq.schemas import DeadLetterPage, Queue, QueueDetail

AUTO: Any = object()  # a fresh idempotency key for each create
MAX_BATCH = 100
V1 = "/v1/codeq"

_task = msgspec.json.Decoder(Task)
_with_result = msgspec.json.Decoder(TaskResult)
_queues = msgspec.json.Decoder(dict[str, list[Queue]])
_queue = msgspec.json.Decoder(QueueDetail)
_dlq = msgspec.json.Decoder(DeadLetterPage)
_count = msgspec.json.Decoder(dict[str, int])
_outcomes = msgspec.json.Decoder(dict[str, list[dict[str, msgspec.Raw]]])


def _create_body(command: str, payload: Any, priority: int = 0, delay: float | None = None,
                 run_at: datetime | None = None, max_attempts: int | None = None,
                 webhook: str | None = None, idempotency_key: Any = AUTO) -> dict[str, Any]:
    body: dict[str, Any] = {"command": command, "payload": payload}
    if priority:
        body["priority"] = priority
    if delay is not None:
        body["delaySeconds"] = delay
    if run_at is not None:
        body["runAt"] = run_at
    if max_attempts is not None:
        body["maxAttempts"] = max_attempts
    if webhook is not None:
        body["webhook"] = webhook
    key = str(uuid.uuid4()) if idempotency_key is AUTO else idempotency_key
    if key is not None:
        body["idempotencyKey"] = key
    return body


def _body(json: Any) -> dict[str, Any]:
    """A request's body as httpx takes it: JSON by msgspec (datetimes, Structs)."""
    if json is None:
        return {}
    return {"content": msgspec.json.encode(json),
            "headers": {"Content-Type": "application/json"}}


def _item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A create_many item (create's keywords as keys) as the API's create body."""
    names = {"delay": "delay", "run_at": "run_at", "max_attempts": "max_attempts",
             "idempotency_key": "idempotency_key", "priority": "priority",
             "webhook": "webhook"}
    kw = {names[k]: v for k, v in item.items() if k in names}
    return _create_body(item["command"], item["payload"], **kw)


class _Base:
    """What the sync and async clients share: requests, answers, backoff."""

    def __init__(self, url: str, token: str | None, retries: int, backoff: float) -> None:
        self.base = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self.backoff = backoff

    def _delay(self, attempt: int, error: CodeqError) -> float:
        if isinstance(error, RateLimited):
            return error.retry_after
        return random.uniform(0, self.backoff * 2 ** attempt)

    @staticmethod
    def _answer(reply: httpx.Response) -> bytes:
        if reply.status_code < 400:
            return reply.content
        try:
            body = msgspec.json.decode(reply.content)
        except msgspec.DecodeError:
            body = {}
        raise error_of(reply.status_code, body if isinstance(body, dict) else {},
                       reply.headers.get("Retry-After"))

    @staticmethod
    def _retryable(error: CodeqError) -> bool:
        return isinstance(error, Unavailable | RateLimited)

    @staticmethod
    def _outcomes(data: bytes) -> list[Task | CodeqError]:
        out: list[Task | CodeqError] = []
        for item in _outcomes.decode(data)["results"]:
            if "task" in item:
                out.append(_task.decode(item["task"]))
            else:
                fields = {k: msgspec.json.decode(v) for k, v in item.items()}
                out.append(error_of(400, fields, None))
        return out


class Client(_Base):
    """The synchronous client (see the module docstring)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 70.0,
                 retries: int = 5, backoff: float = 0.2) -> None:
        super().__init__(url, token, retries, backoff)
        self.http = httpx.Client(base_url=self.base + V1, headers=self.headers,
                                 timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, *, retry: bool, json: Any = None,
              params: dict[str, Any] | None = None) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                try:
                    reply = self.http.request(method, path, params=params, **_body(json))
                except httpx.TransportError as exc:
                    raise Unavailable(f"no answer from codeQ: {exc}") from exc
                return self._answer(reply)
            except CodeqError as error:
                if not (retry and self._retryable(error)) or attempt == self.retries:
                    raise
                time.sleep(self._delay(attempt, error))
        raise AssertionError("unreachable")

    def create(self, command: str, payload: Any, *, priority: int = 0,
               delay: float | None = None, run_at: datetime | None = None,
               max_attempts: int | None = None, webhook: str | None = None,
               idempotency_key: Any = AUTO) -> Task:
        """Create a task; return it (the original one when its key was used before)."""
        body = _create_body(command, payload, priority, delay, run_at, max_attempts, webhook,
                            idempotency_key)
        data = self._call("POST", "/tasks", json=body, retry="idempotencyKey" in body)
        return _task.decode(data)

    def create_many(self, items: Iterable[Mapping[str, Any]]) -> list[Task | CodeqError]:
        """Create tasks in batches of 100; each item's task, or its own error."""
        bodies = [_item(item) for item in items]
        out: list[Task | CodeqError] = []
        for start in range(0, len(bodies), MAX_BATCH):
            chunk = bodies[start:start + MAX_BATCH]
            data = self._call("POST", "/tasks/batch", json={"tasks": chunk},
                              retry=all("idempotencyKey" in b for b in chunk))
            out += self._outcomes(data)
        return out

    def get(self, task_id: str) -> Task:
        return _task.decode(self._call("GET", f"/tasks/{task_id}", retry=True))

    def result(self, task_id: str, wait: float = 0) -> TaskResult:
        """The task and its result, waiting up to ``wait`` s (60 at most) for it;
        NotFound (code RESULT_NOT_FOUND) when there is none by then."""
        data = self._call("GET", f"/tasks/{task_id}/result", retry=True,
                          params={"waitSeconds": wait} if wait else None)
        return _with_result.decode(data)

    def wait_for(self, task_ids: Iterable[str], timeout: float = 300.0,
                 ) -> dict[str, TaskResult]:
        """Wait until every task has a result (or ``timeout`` s pass); return
        those that have one, by id."""
        deadline = time.monotonic() + timeout
        done: dict[str, TaskResult] = {}
        for task_id in task_ids:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    done[task_id] = self.result(task_id, wait=min(60.0, left))
                    break
                except NotFound as exc:
                    if exc.code != "RESULT_NOT_FOUND":
                        raise
        return done


    # -- admin (scope codeq:admin) -------------------------------------------------

    def queues(self) -> list[Queue]:
        """Every queue of the tenant with its depths."""
        return _queues.decode(self._call("GET", "/admin/queues", retry=True))["queues"]

    def queue(self, command: str) -> QueueDetail:
        return _queue.decode(self._call("GET", f"/admin/queues/{command}", retry=True))

    def dlq(self, command: str, limit: int = 100, cursor: str | None = None,
            ) -> DeadLetterPage:
        """A page of the queue's dead-lettered tasks, oldest first."""
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return _dlq.decode(self._call("GET", f"/admin/queues/{command}/dlq", retry=True,
                                      params=params))

    def requeue(self, command: str, ids: list[str] | None = None) -> int:
        """Requeue dead-lettered tasks (the given ones, or the oldest 500)."""
        body = {"ids": ids} if ids else None
        return _count.decode(self._call("POST", f"/admin/queues/{command}/dlq/requeue",
                                        retry=False, json=body))["requeued"]

    def purge(self, command: str, ids: list[str] | None = None) -> int:
        """Remove dead-lettered tasks for good (the given ones, or the oldest 500)."""
        body = {"ids": ids} if ids else None
        return _count.decode(self._call("POST", f"/admin/queues/{command}/dlq/purge",
                                        retry=False, json=body))["removed"]


class AsyncClient(_Base):
    """The asyncio client: ``Client``'s methods as coroutines."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 70.0,
                 retries: int = 5, backoff: float = 0.2) -> None:
        super().__init__(url, token, retries, backoff)
        self.http = httpx.AsyncClient(base_url=self.base + V1, headers=self.headers,
                                      timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, *, retry: bool, json: Any = None,
                    params: dict[str, Any] | None = None) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                try:
                    reply = await self.http.request(method, path, params=params,
                                                    **_body(json))
                except httpx.TransportError as exc:
                    raise Unavailable(f"no answer from codeQ: {exc}") from exc
                return self._answer(reply)
            except CodeqError as error:
                if not (retry and self._retryable(error)) or attempt == self.retries:
                    raise
                await asyncio.sleep(self._delay(attempt, error))
        raise AssertionError("unreachable")

    async def create(self, command: str, payload: Any, *, priority: int = 0,
                     delay: float | None = None, run_at: datetime | None = None,
                     max_attempts: int | None = None, webhook: str | None = None,
                     idempotency_key: Any = AUTO) -> Task:
        body = _create_body(command, payload, priority, delay, run_at, max_attempts, webhook,
                            idempotency_key)
        return _task.decode(await self._call("POST", "/tasks", json=body,
                                             retry="idempotencyKey" in body))

    async def create_many(self, items: Iterable[Mapping[str, Any]],
                          ) -> list[Task | CodeqError]:
        bodies = [_item(item) for item in items]
        out: list[Task | CodeqError] = []
        for start in range(0, len(bodies), MAX_BATCH):
            chunk = bodies[start:start + MAX_BATCH]
            data = await self._call("POST", "/tasks/batch", json={"tasks": chunk},
                                    retry=all("idempotencyKey" in b for b in chunk))
            out += self._outcomes(data)
        return out

    async def get(self, task_id: str) -> Task:
        return _task.decode(await self._call("GET", f"/tasks/{task_id}", retry=True))

    async def result(self, task_id: str, wait: float = 0) -> TaskResult:
        data = await self._call("GET", f"/tasks/{task_id}/result", retry=True,
                                params={"waitSeconds": wait} if wait else None)
        return _with_result.decode(data)

    async def wait_for(self, task_ids: Iterable[str], timeout: float = 300.0,
                       ) -> dict[str, TaskResult]:
        deadline = time.monotonic() + timeout

        async def one(task_id: str) -> TaskResult | None:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    return await self.result(task_id, wait=min(60.0, left))
                except NotFound as exc:
                    if exc.code != "RESULT_NOT_FOUND":
                        raise
            return None

        ids = list(task_ids)
        found = await asyncio.gather(*(one(i) for i in ids))
        return {i: r for i, r in zip(ids, found, strict=True) if r is not None}


__all__ = ["AUTO", "AsyncClient", "Client", "CodeqError", "Result", "Task", "TaskResult"]
