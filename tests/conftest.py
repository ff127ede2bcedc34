"""Session fixtures: real store servers and one real codeq serve.

Two stores per session: one behind the session's codeq serve, and one for
the tests that drive the engine or the core directly, flushed before each of
them. Their data never meets, on any store (KVRocks has one keyspace for
every database number, so database numbers cannot separate tests there).
On the cluster leg (CODEQ_TEST_STORE=cluster) each is a Redis Cluster of
three masters and three replicas, and codeq serve and the engines reach it
by a redis+cluster:// URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import codeq
from tests.support import ROOT, STORE_KIND, CodeqServer, find_kvrocks, new_store, stop_all

# Fast upkeep and short backoff keep the lease and retry tests quick.
SERVE_ARGS = ("--tick-interval", "0.05", "--backoff-policy", "fixed",
              "--backoff-base-seconds", "0.2", "--backoff-max-seconds", "5",
              "--log-level", "warning")


def pytest_report_header(config):
    return [f"store: {STORE_KIND}", f"codeq: {Path(codeq.__file__).parent}"]


def pytest_collection_modifyitems(config, items):
    if STORE_KIND == "kvrocks" and find_kvrocks() is None:
        skip = pytest.mark.skip(reason="KVRocks leg: no kvrocks binary (set CODEQ_KVROCKS, "
                                "put kvrocks on PATH, or ../shared/bin/kvrocks)")
        for item in items:
            item.add_marker(skip)


def pytest_sessionstart(session):
    # `make test` runs the suite against the wheel installed in a fresh venv:
    # a source tree shadowing it would hide packaging defects.
    if os.environ.get("CODEQ_TEST_INSTALLED") == "1":
        where = Path(codeq.__file__).resolve()
        if (ROOT / "codeq") in where.parents:
            raise pytest.UsageError(f"codeq imported from the source tree ({where}), "
                                    "not from the installed wheel")


@pytest.fixture(scope="session", autouse=True)
def _stop_leftovers():
    yield
    stop_all()


@pytest.fixture(scope="session")
def store_server():
    """The store behind the session's codeq serve."""
    server = new_store().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def direct_server():
    """The store of the tests that drive the engine or the core directly."""
    server = new_store().start()
    yield server
    server.cleanup()


@pytest.fixture
def store_url(direct_server):
    return direct_server.url


@pytest.fixture
def store(direct_server):
    """A redis-py client on an emptied direct store (every master of a cluster)."""
    client = direct_server.client()
    client.flushall()  # redis-py sends it to every master of a cluster
    yield client
    client.close()


@pytest.fixture
def store_view(store_server):
    """A redis-py client that leaves the store as it is (a server process shares it)."""
    client = store_server.client()
    yield client
    client.close()


@pytest.fixture
def command(request):
    """A command name of this test's own, so tests sharing a server never meet."""
    name = request.node.name.replace("[", ".").replace("]", "")
    return "t." + re.sub(r"[^A-Za-z0-9._:]", "_", name)[:100]


@pytest.fixture(scope="session")
def codeq_server(store_server):
    server = CodeqServer("--store-url", store_server.url, *SERVE_ARGS).start()
    yield server
    server.stop()
