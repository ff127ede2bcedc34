"""The metrics themselves, the engine observer that counts, the HTTP middleware
that times requests, and the ``/metrics`` resource. Import after
``codeq.metrics.prepare()`` (prometheus-client picks its storage at import)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from codeq.engine import Engine
from codeq.engine.admin import QueueStats
from codeq.engine.events import Observer

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
                 1.0, 5.0)
Q = ("tenant", "command")

CREATED = Counter("codeq_tasks_created", "Tasks created.", Q)
CLAIMED = Counter("codeq_tasks_claimed", "Deliveries: tasks claimed.", Q)
COMPLETED = Counter("codeq_tasks_completed", "Results submitted, by status.", (*Q, "status"))
DEAD = Counter("codeq_tasks_dead_lettered", "Tasks dead-lettered, by reason.", (*Q, "reason"))
EXPIRED = Counter("codeq_lease_expirations", "Leases that ran out.", Q)
CALLBACKS = Counter("codeq_callback_attempts", "Result callback POSTs, by outcome.",
                    ("outcome",))
WEBHOOKS = Counter("codeq_availability_webhooks", "Availability webhook POSTs, by outcome.",
                   ("outcome",))
STORE = Histogram("codeq_store_call_duration_seconds", "Store script round trips.",
                  buckets=STORE_BUCKETS)
STORE_ERRORS = Counter("codeq_store_errors", "Store calls that failed (store unavailable).")
REQUESTS = Counter("codeq_http_requests", "HTTP requests, by route, method and status.",
                   ("route", "method", "status"))
DURATION = Histogram("codeq_http_request_duration_seconds", "HTTP request latency by route "
                     "(long polls included).", ("route",), buckets=LATENCY_BUCKETS)


class Counting(Observer):
    """The engine observer that feeds the counters."""

    def __init__(self) -> None:
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        # PERF: .labels() builds and checks a tuple each call; cache the children.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def created(self, tenant: str, command: str, n: int) -> None:
        self._child(CREATED, tenant, command).inc(n)

    def claimed(self, tenant: str, command: str, n: int) -> None:
        self._child(CLAIMED, tenant, command).inc(n)

    def finished(self, tenant: str, command: str, status: str, n: int) -> None:
        self._child(COMPLETED, tenant, command, status).inc(n)

    def dead_lettered(self, tenant: str, command: str, reason: str, n: int) -> None:
        self._child(DEAD, tenant, command, reason).inc(n)

    def lease_expired(self, tenant: str, command: str, n: int) -> None:
        self._child(EXPIRED, tenant, command).inc(n)

    def store_call(self, seconds: float, failed: bool) -> None:
        if failed:
            STORE_ERRORS.inc()
        else:
            STORE.observe(seconds)

    def callback_attempt(self, outcome: str) -> None:
        self._child(CALLBACKS, outcome).inc()

    def webhook_sent(self, outcome: str) -> None:
        self._child(WEBHOOKS, outcome).inc()

    def request(self, route: str, method: str, status: str, seconds: float) -> None:
        self._child(REQUESTS, route, method, status).inc()
        self._child(DURATION, route).observe(seconds)


class HttpMetrics:
    """Falcon middleware: count and time every request by its route template."""

    def __init__(self, counting: Counting) -> None:
        self.counting = counting

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.started = time.perf_counter()

    async def process_response(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                               resource: object, req_succeeded: bool) -> None:
        started = getattr(req.context, "started", None)
        if started is None:
            return
        route = req.uri_template or "unmatched"
        self.counting.request(route, req.method, str(resp.status)[:3],
                              time.perf_counter() - started)


class Depths(Collector):
    """Queue depths read from the store for this scrape."""

    def __init__(self, stats: list[tuple[str, QueueStats]]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
    """GET /metrics: every process' counters summed, and the queues' depths."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        stats = []
        for tenant in await self.engine.registry.tenants():
            stats += [(tenant, s) for s in await self.engine.admin.queues(tenant)]
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(Depths(stats))
        # Reading every process' files is file I/O: off the event loop.
        resp.data = await asyncio.to_thread(generate_latest, registry)
        resp.content_type = CONTENT_TYPE_LATEST
