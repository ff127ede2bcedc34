"""Notice clients that go away during a long poll.

A long poll that does not notice its client left would go on to lease a
task to a client that is gone, and the task would sit out the whole lease.
codeQ's HTTP server puts ``codeq.gone`` in each request's scope: a callable
returning a future done once the client disconnects (codeq/http/exchange.py).
PERF: that costs no task per long poll, unlike watching ASGI ``receive``
(1.7 % of a server process' CPU under bench/mixed.py).
"""

from __future__ import annotations

import asyncio

import falcon.asgi

from codeq.http.exchange import GONE


def client_gone(req: falcon.asgi.Request, active: bool = True) -> asyncio.Future[None] | None:
    """Return a future done when the client of ``req`` disconnects (None when
    not ``active``, or when the server offers no ``codeq.gone``)."""
    gone = req.scope.get(GONE) if active else None
    return gone() if gone is not None else None
