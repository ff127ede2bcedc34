"""Enqueue and claim, one task or a batch of 100, at queue depths of 1,000,
100,000 and 1,000,000 (``--depths`` and ``--rounds`` choose; ``make bench-ci``
runs a reduced set), and the O(1) guard: the deepest queue within 1.3x of
the shallowest.

Each depth has a queue of its own, filled once; every benchmark keeps its
queue's depth constant by undoing its operation, untimed, before each round.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from codeq.schemas import CreateTask, request_decoders
from tests.support import STORE_KIND

TENANT = "default"
FILL_BATCH = 5000
PAYLOAD = b'{"to": "ada@example.com", "template": "welcome", "n": 1}'
O1_RATIO = 1.3
OPS = ("enqueue", "claim", "enqueue_batch", "claim_batch")
BATCH = 100


def depths_of(config) -> list[int]:
    return sorted(int(d) for d in config.getoption("depths").split(","))


def command_of(depth: int) -> str:
    return f"bench.depth.{depth}"


def depth_of(engine, loop, depth: int) -> int:
    q = engine.queue(TENANT, command_of(depth))
    return loop.run_until_complete(engine.store.call(b"LLEN", q.ready_tier(0)))


@pytest.fixture(scope="module")
def filled(engine, loop, request):
    """Fill one queue per depth."""
    loop.run_until_complete(engine.store.call(b"FLUSHALL"))
    if STORE_KIND == "redis":
        # Every write still goes to the AOF, but no rewrite may fork mid-case:
        # a fork of a 500 MB store costs the two cores, and copy-on-write page
        # faults after it, which are not the operation being measured.
        loop.run_until_complete(
            engine.store.call(b"CONFIG", b"SET", b"auto-aof-rewrite-percentage", b"0"))

    async def fill(command: str, n: int) -> None:
        # Batches of 100, 50 in flight: a million tasks in a minute, even on KVRocks.
        item = request_decoders[CreateTask].decode(
            b'{"command": "%s", "payload": %s}' % (command.encode(), PAYLOAD))
        await asyncio.gather(*(engine.create_many(TENANT, [item] * min(BATCH, n - start))
                               for start in range(0, n, BATCH)))

    for depth in depths_of(request.config):
        for start in range(0, depth, FILL_BATCH):
            loop.run_until_complete(fill(command_of(depth), min(FILL_BATCH, depth - start)))
        assert depth_of(engine, loop, depth) == depth


def ops(engine, loop, depth: int):
    """Each operation on the queue of ``depth``, with the one that undoes it."""
    command = command_of(depth)

    def create():
        loop.run_until_complete(engine.create(TENANT, command, PAYLOAD))

    def claim():
        assert len(loop.run_until_complete(engine.claim(TENANT, [command], "bench"))) == 1

    batch = [request_decoders[CreateTask].decode(
        b'{"command": "%s", "payload": %s}' % (command.encode(), PAYLOAD))] * BATCH

    def create_batch():
        loop.run_until_complete(engine.create_many(TENANT, batch))

    def claim_batch():
        tasks = loop.run_until_complete(engine.claim(TENANT, [command], "bench", count=BATCH))
        assert len(tasks) == BATCH

    return {"enqueue": (create, claim), "claim": (claim, create),
            "enqueue_batch": (create_batch, claim_batch),
            "claim_batch": (claim_batch, create_batch)}


def pytest_generate_tests(metafunc):
    if "depth" in metafunc.fixturenames:
        metafunc.parametrize(("depth", "op"),
                             [(d, op) for d in depths_of(metafunc.config) for op in OPS])


def rounds_of(config, op: str) -> int:
    """Rounds of a case: a batch moves 100 tasks a round, so it gets a tenth."""
    rounds = config.getoption("rounds")
    return rounds // 10 if op.endswith("_batch") else rounds


def test_depth(benchmark, engine, loop, filled, depth, op, request):
    timed, undo = ops(engine, loop, depth)[op]
    benchmark.group = op
    benchmark.extra_info.update(op=op, depth=depth)
    benchmark.pedantic(timed, setup=undo, rounds=rounds_of(request.config, op),
                       warmup_rounds=5)
    assert depth_of(engine, loop, depth) == depth


@pytest.mark.parametrize("op", OPS)
def test_o1_guard(benchmark, engine, loop, filled, op, request):
    """The median at the deepest queue within 1.3x of the median at the shallowest.

    Rounds alternate between the two queues, so a burst of load from the
    rest of a shared machine slows both alike instead of one case.
    """
    shallow, deep = depths_of(request.config)[0], depths_of(request.config)[-1]
    cases = {d: ops(engine, loop, d)[op] for d in (shallow, deep)}
    times: dict[int, list[float]] = {shallow: [], deep: []}

    def rounds():
        for n in range(rounds_of(request.config, op)):
            for d in (shallow, deep) if n % 2 else (deep, shallow):
                timed, undo = cases[d]
                undo()
                started = time.perf_counter()
                timed()
                times[d].append(time.perf_counter() - started)

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    medians = {d: statistics.median(t) for d, t in times.items()}
    ratio = medians[deep] / medians[shallow]
    benchmark.group = "o1"
    benchmark.extra_info.update(op=op, ratio=round(ratio, 3), limit=O1_RATIO,
                                median_us={str(d): round(m * 1e6, 1) for d, m in medians.items()})
    assert ratio <= O1_RATIO, (
        f"{op}: median at depth {deep:,} is {ratio:.2f}x the median at depth {shallow:,}")
