"""The dashboard's throughput series: tasks created, completed and failed per
second, recorded into the store by every server process.

Nothing is added on the hot path: the metrics already count every
task event in memory (codeq/metrics); once a second, just after the second
turns, this process adds what those counters grew by since its last flush to
the tenant's series (one script call per tenant that had any, none when
idle), under the second that just ended. Every process does the same, so
the store holds the sums across processes; each minute of the series
expires 15 minutes after its last write (engine/admin.py).

"Failed" is both a FAILED result and a dead-lettering. A flush the store
refuses is kept and added at the next one, a second late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from codeq.engine import Engine
from codeq.engine.admin import THROUGHPUT
from codeq.errors import StoreUnavailable
from codeq.metrics.prom import Counting, Counts

log = logging.getLogger("codeq.ui")
SHUTDOWN_FLUSH_SECONDS = 1.0


def totals(counts: Counts) -> dict[str, list[float]]:
    """Each tenant's tasks created, completed and failed so far (in this process)."""
    out: dict[str, list[float]] = {}
    for (name, labels), value in counts.values.items():
        series = _series(name, labels)
        if series is not None:
            out.setdefault(labels[0], [0.0] * len(THROUGHPUT))[series] += value[0]
    return out


def _series(name: str, labels: tuple[str, ...]) -> int | None:
    """The series (index in THROUGHPUT) a metric counter adds to, if any."""
    if name == "codeq_tasks_created":
        return 0
    if name == "codeq_tasks_completed":  # labels: tenant, command, status
        return 1 if labels[2] == "COMPLETED" else 2
    if name == "codeq_tasks_dead_lettered":
        return 2
    return None


class Recorder:
    """Flush this process' counts into the series once a second (see the module
    docstring); a Falcon middleware for its startup and shutdown."""

    def __init__(self, engine: Engine, counting: Counting) -> None:
        self.engine = engine
        self.counting = counting
        self.sent: dict[str, list[float]] = {}  # each tenant's totals at its last flush
        self.loop: asyncio.Task[None] | None = None

    async def process_startup(self, scope: Mapping[str, Any], event: Mapping[str, Any],
                              ) -> None:
        self.loop = asyncio.create_task(self._every_second(), name="ui-throughput")

    async def process_shutdown(self, scope: Mapping[str, Any], event: Mapping[str, Any],
                               ) -> None:
        # Falcon runs shutdowns in reverse: the engine is still open here.
        if self.loop is not None:
            self.loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop
        # The last counts, unless the store is slow to take them: that must
        # not hold up the shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(int(time.time())), SHUTDOWN_FLUSH_SECONDS)

    async def _every_second(self) -> None:
        while True:
            # Just past the turn of the second, so the one that ended is whole.
            await asyncio.sleep(1.01 - time.time() % 1)
            await self.flush(int(time.time()) - 1)

    async def flush(self, second: int) -> None:
        """Add what was counted since the last flush to the series under ``second``."""
        grown = []
        for tenant, now in totals(self.counting.counts).items():
            before = self.sent.get(tenant, [0.0] * len(THROUGHPUT))
            delta = [int(n - b) for n, b in zip(now, before, strict=True)]
            if any(delta):
                grown.append((tenant, now, delta))
        done = await asyncio.gather(*(self.engine.admin.add_throughput(tenant, second, delta)
                                      for tenant, _, delta in grown), return_exceptions=True)
        for (tenant, now, _), outcome in zip(grown, done, strict=True):
            if not isinstance(outcome, BaseException):
                self.sent[tenant] = now
            elif not isinstance(outcome, StoreUnavailable):
                log.error("throughput of tenant %s not recorded: %r", tenant, outcome)
