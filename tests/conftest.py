"""Session fixtures: one real redis-server, one real codeq serve, flushed per test."""

from __future__ import annotations

import pytest

from tests.support import CodeqServer, RedisServer, stop_all

# Fast upkeep and short backoff keep the lease and retry tests quick.
SERVE_ARGS = ("--tick-interval", "0.05", "--backoff-policy", "fixed",
              "--backoff-base-seconds", "0.2", "--backoff-max-seconds", "5",
              "--log-level", "warning")


@pytest.fixture(scope="session", autouse=True)
def _stop_leftovers():
    yield
    stop_all()


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.cleanup()


# Tests that drive the engine or the core directly use a database of their
# own: the session's codeq serve works on database 0, and its upkeep loop
# must not touch their tasks.
DIRECT_DB = 1


@pytest.fixture
def store_url(redis_server):
    return redis_server.url_for(DIRECT_DB)


@pytest.fixture
def store(redis_server):
    """A redis-py client on an empty database (for tests without a server process)."""
    client = redis_server.client(db=DIRECT_DB)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def store_view(redis_server):
    """A redis-py client that leaves the store as it is (a server process shares it)."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def command(request):
    """A command name of this test's own, so tests sharing a server never meet."""
    return "t." + request.node.name.replace("[", ".").replace("]", "")[:100].replace("-", "_")


@pytest.fixture(scope="session")
def codeq_server(redis_server):
    server = CodeqServer("--store-url", redis_server.url, *SERVE_ARGS).start()
    yield server
    server.stop()
