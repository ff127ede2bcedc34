"""The metrics: counted in memory per process, snapshotted to the shared
directory, summed and rendered by prometheus-client at scrape time (see
codeq/metrics/__init__.py); the engine observer that counts, the HTTP
middleware that times requests, and the ``/metrics`` resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path

import falcon
import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from codeq.engine import Engine
from codeq.engine.admin import QueueStats
from codeq.engine.events import Observer
from codeq.metrics import ENV

log = logging.getLogger("codeq.metrics")

SNAPSHOT_INTERVAL = 1.0  # seconds between writes of this process' counts
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
                 1.0, 5.0)
Q = ("tenant", "command")

# name: (help, label names, histogram buckets or None for a counter)
METRICS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...] | None]] = {
    "codeq_tasks_created": ("Tasks created.", Q, None),
    "codeq_tasks_claimed": ("Deliveries: tasks claimed.", Q, None),
    "codeq_tasks_completed": ("Results submitted, by status.", (*Q, "status"), None),
    "codeq_tasks_dead_lettered": ("Tasks dead-lettered, by reason.", (*Q, "reason"), None),
    "codeq_lease_expirations": ("Leases that ran out.", Q, None),
    "codeq_callback_attempts": ("Result callback POSTs, by outcome.", ("outcome",), None),
    "codeq_availability_webhooks": ("Availability webhook POSTs, by outcome.", ("outcome",),
                                    None),
    "codeq_store_errors": ("Store calls that failed (store unavailable).", (), None),
    "codeq_store_call_duration_seconds": ("Store script round trips.", (), STORE_BUCKETS),
    "codeq_store_redirects": ("Redirects the store cluster answered and the client followed "
                              "(moved, ask, tryagain).", ("kind",), None),
    "codeq_store_map_refreshes": ("Reads of the store cluster's slot map.", (), None),
    "codeq_http_requests": ("HTTP requests, by route, method and status.",
                            ("route", "method", "status"), None),
    "codeq_http_request_duration_seconds": ("HTTP request latency by route (long polls "
                                            "included).", ("route",), LATENCY_BUCKETS),
}

Key = tuple[str, tuple[str, ...]]  # metric name, label values
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, list[str], list[float]]]).decode


class Counts:
    """One process' counts: a counter is [value]; a histogram is its buckets'
    counts (the last for +Inf) and then the sum of what it observed."""

    def __init__(self) -> None:
        self.values: dict[Key, list[float]] = {}

    def inc(self, name: str, labels: tuple[str, ...], n: float = 1) -> None:
        value = self.values.get((name, labels))
        if value is None:
            value = self.values[(name, labels)] = [0.0]
        value[0] += n

    def observe(self, name: str, labels: tuple[str, ...], seconds: float) -> None:
        buckets = METRICS[name][2]
        assert buckets is not None
        value = self.values.get((name, labels))
        if value is None:
            value = self.values[(name, labels)] = [0.0] * (len(buckets) + 2)
        value[bisect_left(buckets, seconds)] += 1
        value[-1] += seconds

    def snapshot(self) -> bytes:
        return _encode([(name, list(labels), value)
                        for (name, labels), value in self.values.items()])

    def add(self, raw: bytes) -> None:
        """Add another process' snapshot to these counts."""
        for name, labels, value in _decode(raw):
            mine = self.values.setdefault((name, tuple(labels)), [0.0] * len(value))
            if len(mine) == len(value):
                for i, v in enumerate(value):
                    mine[i] += v

    def families(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        by_name: dict[str, list[tuple[tuple[str, ...], list[float]]]] = {}
        for (name, labels), value in self.values.items():
            by_name.setdefault(name, []).append((labels, value))
        for name, (doc, label_names, buckets) in METRICS.items():
            rows = by_name.get(name, [])
            if buckets is None:
                counter = CounterMetricFamily(name, doc, labels=label_names)
                for labels, value in rows:
                    counter.add_metric(labels, value[0])
                yield counter
                continue
            histogram = HistogramMetricFamily(name, doc, labels=label_names)
            for labels, value in rows:
                cumulative, total = [], 0.0
                for le, count in zip((*map(str, buckets), "+Inf"), value[:-1], strict=True):
                    total += count
                    cumulative.append((le, total))
                histogram.add_metric(labels, cumulative, sum_value=value[-1])
            yield histogram


class Counting(Observer):
    """The engine observer that counts, and the writer of this process' snapshots."""

    def __init__(self, store: object = None) -> None:
        self.counts = Counts()
        directory = os.environ.get(ENV)
        self.dir = Path(directory) if directory else None
        self.file = (self.dir / f"{os.getpid()}-{time.time_ns()}.counts" if self.dir
                     else None)
        self.writer: asyncio.Task[None] | None = None
        self.store = store  # a cluster client's counts are copied in

    def start(self) -> None:
        if self.file is not None:
            self.writer = asyncio.create_task(self._write_every_second(), name="metrics")

    async def stop(self) -> None:
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer
        self.write()

    async def _write_every_second(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            self.write()

    def _copy_store_counts(self) -> None:
        """The cluster client counts in C as it goes: copy its totals in."""
        refreshes = getattr(self.store, "refreshes", None)
        if refreshes is None:
            return  # one store node: no redirects
        values = self.counts.values
        values[("codeq_store_map_refreshes", ())] = [float(refreshes)]
        for kind, attr in (("moved", "moved"), ("ask", "asks"), ("tryagain", "tryagains")):
            values[("codeq_store_redirects", (kind,))] = [float(getattr(self.store, attr))]

    def write(self) -> None:
        if self.file is None:
            return
        self._copy_store_counts()
        tmp = self.file.with_suffix(".tmp")
        try:
            tmp.write_bytes(self.counts.snapshot())
            os.replace(tmp, self.file)
        except OSError as exc:
            log.warning("metrics snapshot not written: %s", exc)

    def totals(self) -> Counts:
        """This process' live counts plus every other process' last snapshot."""
        out = Counts()
        self._copy_store_counts()
        out.add(self.counts.snapshot())
        if self.dir is not None:
            for path in self.dir.glob("*.counts"):
                if path != self.file:
                    with contextlib.suppress(OSError, msgspec.DecodeError):
                        out.add(path.read_bytes())
        return out

    # -- the engine's events ----------------------------------------------------

    def created(self, tenant: str, command: str, n: int) -> None:
        self.counts.inc("codeq_tasks_created", (tenant, command), n)

    def claimed(self, tenant: str, command: str, n: int) -> None:
        self.counts.inc("codeq_tasks_claimed", (tenant, command), n)

    def finished(self, tenant: str, command: str, status: str, n: int) -> None:
        self.counts.inc("codeq_tasks_completed", (tenant, command, status), n)

    def dead_lettered(self, tenant: str, command: str, reason: str, n: int) -> None:
        self.counts.inc("codeq_tasks_dead_lettered", (tenant, command, reason), n)

    def lease_expired(self, tenant: str, command: str, n: int) -> None:
        self.counts.inc("codeq_lease_expirations", (tenant, command), n)

    def store_call(self, seconds: float, failed: bool) -> None:
        if failed:
            self.counts.inc("codeq_store_errors", ())
        else:
            self.counts.observe("codeq_store_call_duration_seconds", (), seconds)

    def callback_attempt(self, outcome: str) -> None:
        self.counts.inc("codeq_callback_attempts", (outcome,))

    def webhook_sent(self, outcome: str) -> None:
        self.counts.inc("codeq_availability_webhooks", (outcome,))

    def request(self, route: str, method: str, status: str, seconds: float) -> None:
        self.counts.inc("codeq_http_requests", (route, method, status))
        self.counts.observe("codeq_http_request_duration_seconds", (route,), seconds)


class HttpMetrics:
    """Falcon middleware: count and time every request by its route template."""

    def __init__(self, counting: Counting) -> None:
        self.counting = counting

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.started = time.perf_counter()

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: object, req_succeeded: bool) -> None:
        started = getattr(req.context, "started", None)
        if started is not None:
            self.counting.request(req.uri_template or "unmatched", req.method,
                                  str(resp.status)[:3], time.perf_counter() - started)


class Scrape(Collector):
    """What one scrape renders: the summed counts and the queues' depths."""

    def __init__(self, counts: Counts, stats: list[tuple[str, QueueStats]]) -> None:
        self.counts = counts
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily |
                                  GaugeMetricFamily]:
        yield from self.counts.families()
        depth = GaugeMetricFamily("codeq_queue_depth", "Tasks of a queue, by state.",
                                  labels=("tenant", "command", "state"))
        age = GaugeMetricFamily("codeq_queue_oldest_ready_age_seconds",
                                "How long the oldest ready task of a queue has waited.",
                                labels=("tenant", "command"))
        for tenant, s in self.stats:
            for state, n in (("ready", s.ready), ("delayed", s.delayed),
                             ("in_progress", s.in_progress), ("dlq", s.dlq)):
                depth.add_metric((tenant, s.command, state), n)
            age.add_metric((tenant, s.command), s.oldest_ready_age or 0.0)
        yield depth
        yield age


class MetricsResource:
    """GET /metrics: every process' counts summed, and the queues' depths."""

    def __init__(self, engine: Engine, counting: Counting) -> None:
        self.engine = engine
        self.counting = counting

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        stats = []
        for tenant in await self.engine.registry.tenants():
            stats += [(tenant, s) for s in await self.engine.admin.queues(tenant)]
        counts = self.counting.totals()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Scrape(counts, stats))
        resp.data = generate_latest(registry)
        resp.content_type = CONTENT_TYPE_LATEST
