"""Wake long polls from the store's pub/sub, one subscription per process.

Scripts publish ``ready|<tenant>|<command>|<n>`` when tasks become ready
while a claim long-polls, and ``result|<tenant>|<id>`` when a long-polled
result is written. Each process keeps one subscriber connection and fans the
messages out to its waiting requests (saq's way, not arq's polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable

from codeq._core import Client, ClusterClient, ClusterSubscriber, Store
from codeq.keys import EVENTS_CHANNEL

log = logging.getLogger("codeq.notify")

QUIET_LIMIT = 10_000  # queues remembered as empty, at most


class Notifier:
    """Fan store notifications out to the coroutines waiting in this process."""

    def __init__(self, url: str, timeout: float = 5.0, store: Store | None = None) -> None:
        self._ready: dict[tuple[str, str], deque[asyncio.Future[None]]] = {}
        self._results: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        # Queues known to hold no task that no waiter here will take, and
        # until when (monotonic): see known_empty.
        self._quiet: dict[tuple[str, str], float] = {}
        # Pinged when idle for ``timeout`` and reopened when the PING goes
        # unanswered as long: a subscription that died silently would leave
        # every long poll to wait out its time.
        self.client: Client | ClusterSubscriber
        if isinstance(store, ClusterClient):
            # On a cluster, whichever nodes must be listened to for every PUBLISH.
            self.client = store.subscriber(EVENTS_CHANNEL, self._on_push, self.wake_all, timeout)
        else:
            self.client = Client(
                url,
                name="codeq-events",
                channel=EVENTS_CHANNEL,
                on_push=self._on_push,
                on_connect=self.wake_all,
                command_timeout=timeout,
            )

    def start(self) -> None:
        self.client.start()

    async def close(self) -> None:
        await self.client.close()
        self.wake_all()

    async def wait_subscribed(self, timeout: float) -> bool:
        return await self.client.wait_connected(timeout)

    @property
    def subscribed(self) -> bool:
        """Whether wake-ups can arrive now (the subscriber connection is up)."""
        return self.client.is_connected

    # -- registration ---------------------------------------------------------

    def ready_waiter(self, tenant: str, commands: Iterable[str]) -> asyncio.Future[None]:
        """Return a future resolved when one of the commands may have work.

        Register before looking at the queue, so a task that becomes ready
        between the look and the wait still wakes the caller.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for command in commands:
            self._ready.setdefault((tenant, command), deque()).append(fut)
        return fut

    def drop_ready_waiter(self, tenant: str, commands: Iterable[str],
                          fut: asyncio.Future[None]) -> None:
        for command in commands:
            queue = self._ready.get((tenant, command))
            if queue is None:
                continue
            with contextlib.suppress(ValueError):
                queue.remove(fut)
            if not queue:
                del self._ready[(tenant, command)]
        if not fut.done():
            fut.cancel()

    def mark_empty(self, tenant: str, command: str, until: float) -> None:
        """Note that a claim found the queue empty and left it long-polled
        (its waiting key alive) until ``until``."""
        if len(self._quiet) >= QUIET_LIMIT:
            self._quiet.clear()
        self._quiet[(tenant, command)] = until

    def known_empty(self, tenant: str, command: str, until: float) -> bool:
        """Whether a claim on the queue would find nothing for a waiter here
        to take, as long as a poll waiting until ``until`` lasts.

        True from an empty claim on, while its waiting key makes every new
        ready task announced, and every announced task had a waiter here to
        wake; so a long poll can wait at once instead of claiming twice.
        """
        quiet = self._quiet.get((tenant, command))
        return quiet is not None and quiet >= until and self.client.is_connected

    def result_waiter(self, tenant: str, task_id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._results.setdefault((tenant, task_id), set()).add(fut)
        return fut

    def drop_result_waiter(self, tenant: str, task_id: str, fut: asyncio.Future[None]) -> None:
        waiters = self._results.get((tenant, task_id))
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._results[(tenant, task_id)]
        if not fut.done():
            fut.cancel()

    # -- delivery -------------------------------------------------------------

    def _on_push(self, reply: object) -> None:
        if not isinstance(reply, list) or len(reply) != 3 or reply[0] != b"message":
            return
        parts = bytes(reply[2]).decode(errors="replace").split("|")
        if parts[0] == "ready" and len(parts) == 4 and parts[3].isdigit():
            self._wake_ready((parts[1], parts[2]), int(parts[3]))
        elif parts[0] == "result" and len(parts) == 3:
            for fut in self._results.pop((parts[1], parts[2]), ()):
                if not fut.done():
                    fut.set_result(None)
        # Anything else on the channel is not ours to act on.

    def wake_ready(self, tenant: str, commands: Iterable[str]) -> None:
        """Wake one waiter of each command (a wake-up its taker could not use)."""
        for command in commands:
            self._wake_ready((tenant, command), 1)

    def _wake_ready(self, key: tuple[str, str], n: int) -> None:
        # Wake one waiter per ready task, not all: the rest keep waiting
        # instead of stampeding the store with claims that find nothing.
        queue = self._ready.get(key)
        while queue and n > 0:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1
        if queue is not None and not queue:
            del self._ready[key]
        if n > 0:
            self._quiet.pop(key, None)  # ready tasks no waiter here will take

    def wake_all(self) -> None:
        """Let every waiter look again: after a (re)subscribe, when messages
        may have been missed, and at shutdown."""
        for queue in self._ready.values():
            for fut in queue:
                if not fut.done():
                    fut.set_result(None)
        self._ready.clear()
        for waiters in self._results.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._results.clear()
        self._quiet.clear()
