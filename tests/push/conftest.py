"""Push fixtures: a store of their own, and codeq serve processes with push settings.

The processes sharing a store share its outboxes: every one here has the same
outbound policy, so that whichever delivers a callback, it is allowed to.
"""

from __future__ import annotations

import pytest

from tests.support import CodeqServer, new_store

SECRET = "test-webhook-secret"
# Quick retries and timeouts; loopback opened for the receivers.
PUSH_ARGS = ("--tick-interval", "0.05", "--log-level", "warning",
             "--webhook-allow", "127.0.0.1/32", "--webhook-secret", SECRET,
             "--callback-backoff-base-seconds", "0.05", "--callback-timeout", "1",
             "--callback-max-attempts", "3")


@pytest.fixture(scope="module")
def push_store():
    server = new_store().start()
    yield server
    server.cleanup()


@pytest.fixture
def store_of_push(push_store):
    client = push_store.client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def push_server(push_store):
    server = CodeqServer("--store-url", push_store.url, *PUSH_ARGS).start()
    yield server
    server.stop()


@pytest.fixture
def serve():
    """Start codeq serve processes on a store of this test's own (no other
    process takes its callbacks); stopped after the test."""
    store = new_store().start()
    started = []

    def start(*args: str) -> CodeqServer:
        server = CodeqServer("--store-url", store.url, *PUSH_ARGS, *args).start()
        started.append(server)
        return server

    start.store = store  # type: ignore[attr-defined]
    yield start
    for server in started:
        server.stop()
    store.cleanup()


@pytest.fixture(scope="module")
def strict_server():
    """A codeq serve with the default outbound policy, on a store of its own."""
    store = new_store().start()
    server = CodeqServer("--store-url", store.url, "--tick-interval", "0.05",
                         "--log-level", "warning", "--callback-max-attempts", "1").start()
    yield server
    server.stop()
    store.cleanup()
