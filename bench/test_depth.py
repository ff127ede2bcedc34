"""Enqueue and claim at queue depths of 1,000, 100,000 and 1,000,000.

One queue is filled step by step; each benchmark keeps the depth constant by
undoing its operation in the (untimed) setup of every round.
"""

from __future__ import annotations

import asyncio

import pytest

TENANT = "default"
COMMAND = "bench.depth"
DEPTHS = [1_000, 100_000, 1_000_000]
ROUNDS = 3000
FILL_BATCH = 5000
PAYLOAD = b'{"to": "ada@example.com", "template": "welcome", "n": 1}'


def depth_of(engine, loop) -> int:
    q = engine.queue(TENANT, COMMAND)
    return loop.run_until_complete(engine.store.call(b"LLEN", q.ready_tier(0)))


def fill_to(engine, loop, depth: int) -> None:
    async def fill(n: int) -> None:
        await asyncio.gather(*(engine.create(TENANT, COMMAND, PAYLOAD) for _ in range(n)))

    missing = depth - depth_of(engine, loop)
    while missing > 0:
        loop.run_until_complete(fill(min(missing, FILL_BATCH)))
        missing -= FILL_BATCH
    assert depth_of(engine, loop) >= depth


@pytest.fixture(scope="module")
def filled(engine, loop):
    loop.run_until_complete(engine.store.call(b"FLUSHALL"))
    # Every write still goes to the AOF, but no rewrite may fork mid-case: a
    # fork of a 500 MB store costs the two cores, and copy-on-write page
    # faults after it, which are not the operation being measured.
    loop.run_until_complete(
        engine.store.call(b"CONFIG", b"SET", b"auto-aof-rewrite-percentage", b"0"))
    return lambda depth: fill_to(engine, loop, depth)


def _ops(engine, loop):
    def create():
        loop.run_until_complete(engine.create(TENANT, COMMAND, PAYLOAD))

    def claim():
        assert len(loop.run_until_complete(engine.claim(TENANT, [COMMAND], "bench"))) == 1

    # Each operation, with the one that undoes it run untimed before each round.
    return {"enqueue": (create, claim), "claim": (claim, create)}


# Depth ascending: the one queue only ever grows between cases.
@pytest.mark.parametrize(("depth", "op"), [(d, op) for d in DEPTHS for op in ("enqueue", "claim")])
def test_depth(benchmark, engine, loop, filled, depth, op):
    filled(depth)
    timed, undo = _ops(engine, loop)[op]
    benchmark.group = op
    benchmark.extra_info.update(op=op, depth=depth)
    benchmark.pedantic(timed, setup=undo, rounds=ROUNDS, warmup_rounds=50)
    assert abs(depth_of(engine, loop) - depth) <= 1
