"""Engine fixtures: engines on the session's direct store, upkeep loops off."""

from __future__ import annotations

import pytest

from codeq._core import connect
from codeq.config import Settings
from codeq.engine import Engine, Notifier

TENANT = "default"
FAST = {"backoff_policy": "fixed", "backoff_base_seconds": 0.2, "backoff_max_seconds": 5.0}


@pytest.fixture
async def make_engine(store_url, store):
    """Return engines (each with its own connections, like separate processes)."""
    engines = []

    async def make(**overrides):
        settings = Settings(**{**FAST, **overrides})
        # connect: a Client, or a ClusterClient for a redis+cluster:// URL.
        engine = Engine(connect(store_url), Notifier(store_url), settings)
        try:
            await engine.open(loops=False)
        except BaseException:
            await engine.close()  # refused (e.g. LayoutMismatch): its connections too
            raise
        assert await engine.notifier.wait_subscribed(5)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()


@pytest.fixture
async def engine(make_engine):
    return await make_engine()
