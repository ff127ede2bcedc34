"""Benchmark fixtures and options; a summary of the guard and HTTP figures."""

from __future__ import annotations

import pytest
import uvloop

from codeq._core import Client
from codeq.config import Settings
from codeq.engine import Engine, Notifier
from tests.support import StoreServer


def pytest_collection_modifyitems(config, items):
    # Filling queues to a million tasks outlasts the tests' own time limit.
    for item in items:
        item.add_marker(pytest.mark.timeout(1800))


def pytest_addoption(parser):
    group = parser.getgroup("codeq bench")
    group.addoption("--depths", default="1000,100000,1000000",
                    help="queue depths of the depth suites, comma-separated")
    group.addoption("--rounds", type=int, default=3000, help="rounds of each depth case")
    group.addoption("--http-seconds", type=float, default=10.0,
                    help="length of the HTTP full-cycle run")
    group.addoption("--http-clients", type=int, default=64,
                    help="concurrent clients of the HTTP full-cycle run")


@pytest.fixture(scope="session")
def loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def store_server():
    server = StoreServer(appendonly=True).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def engine(loop, store_server):
    engine = Engine(Client(store_server.url), Notifier(store_server.url), Settings())
    loop.run_until_complete(engine.open(loops=False))
    yield engine
    loop.run_until_complete(engine.close())


def pytest_sessionfinish(session, exitstatus):
    """Print the O(1) guard's ratios and the HTTP run's figures after the tables."""
    bench_session = getattr(session.config, "_benchmarksession", None)
    if bench_session is None:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for bench in bench_session.benchmarks:
        info = bench.extra_info
        if "ratio" in info:
            reporter.write_sep("-", f"O(1) guard: {info['op']}")
            reporter.write_line(f"median by depth (us): {info['median_us']}; deepest / "
                                f"shallowest = {info['ratio']:.2f}x (limit {info['limit']}x)")
        if "tasks_per_s" in info:
            reporter.write_sep("-", "HTTP full cycle")
            reporter.write_line(f"{info['tasks_per_s']:,.0f} tasks/s with {info['clients']} "
                                f"clients over {info['seconds']:.1f} s")
            for name, cut in info["latency_ms"].items():
                reporter.write_line(f"{name:<8} p50 {cut['p50']:.2f} ms  p99 {cut['p99']:.2f} ms")
