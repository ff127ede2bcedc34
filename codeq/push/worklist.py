"""The queues a push loop has work for, and the wake-up of that loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Worklist:
    """Queues (tenant, command) marked from anywhere in the process, taken in rounds."""

    def __init__(self) -> None:
        self.due: set[tuple[str, str]] = set()
        self.wake = asyncio.Event()

    def add(self, tenant: str, command: str) -> None:
        self.due.add((tenant, command))
        self.wake.set()

    async def take(self) -> set[tuple[str, str]]:
        """Wait until a queue is marked; return (and forget) all marked so far."""
        await self.wake.wait()
        self.wake.clear()
        due, self.due = self.due, set()
        return due


async def cancel(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel tasks and wait until they have ended."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
