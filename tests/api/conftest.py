"""Fixtures of the API tests: a client of the session's codeq serve."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
def api(codeq_server, command):
    """An HTTP client of the session's codeq serve, with this test's own command."""
    with httpx.Client(base_url=codeq_server.base, timeout=40) as client:
        client.command = command
        yield client
