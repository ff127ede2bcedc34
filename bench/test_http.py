"""One HTTP full-cycle run (create -> claim -> result) against a real codeq serve.

Its tasks/s and per-endpoint p50/p99 go into the benchmark's extra_info, so
they land in the pytest-benchmark JSON (``make bench-ci`` prints it).
"""

from __future__ import annotations

import os

import pytest
import uvloop

from bench.load import drive
from tests.support import CodeqServer, StoreServer


@pytest.fixture(scope="module")
def served():
    store = StoreServer(appendonly=True).start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning").start()
    yield server
    server.stop()
    store.cleanup()


def test_http_full_cycle(benchmark, served, request):
    seconds = request.config.getoption("http_seconds")
    clients = request.config.getoption("http_clients")
    outcome = {}

    def run():
        outcome.update(uvloop.run(drive("127.0.0.1", served.port, clients, 10**9, seconds,
                                        f"bench.http.{os.getpid()}")))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.group = "http"
    benchmark.extra_info.update(clients=clients, tasks_per_s=outcome["tasks_per_s"],
                                seconds=outcome["seconds"], completed=outcome["completed"],
                                latency_ms=outcome["latency_ms"])
    assert outcome["completed"] > 0
