"""Benchmark fixtures, and the O(1) guard over the depth suites.

The guard runs when the session ends: for each operation, the median at the
deepest queue must stay within ``O1_RATIO`` of the median at the shallowest,
or the run fails.
"""

from __future__ import annotations

import pytest
import uvloop

from codeq._core import Client
from codeq.config import Settings
from codeq.engine import Engine, Notifier
from tests.support import StoreServer

O1_RATIO = 1.3


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
    bench_session = getattr(session.config, "_benchmarksession", None)
    if bench_session is None:
        return
    by_op: dict[str, dict[int, float]] = {}
    for bench in bench_session.benchmarks:
        info = bench.extra_info
        if "depth" in info and bench.stats is not None:
            by_op.setdefault(info["op"], {})[info["depth"]] = bench.stats.median
    lines, failed = [], False
    for op, medians in sorted(by_op.items()):
        if len(medians) < 2:
            continue
        low, high = min(medians), max(medians)
        ratio = medians[high] / medians[low]
        ok = ratio <= O1_RATIO
        failed |= not ok
        lines.append(f"{op}: median at depth {high:,} is {ratio:.2f}x the median at depth "
                     f"{low:,} ({'ok' if ok else 'FAIL'}, limit {O1_RATIO}x)")
    if lines:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_sep("-", "O(1) guard")
        for line in lines:
            reporter.write_line(line)
    if failed:
        session.exitstatus = 1
