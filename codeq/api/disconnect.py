"""Notice clients that go away during a long poll.

ASGI servers report a client's disconnect only through ``receive()``, which
nobody calls once the body has been read. A long poll that does not notice
would go on to lease a task to a client that is gone, and the task would sit
out the whole lease. ``Receiver`` keeps each request's ``receive`` in its
scope, so a responder about to wait can watch for the disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import falcon.asgi

SCOPE_KEY = "codeq.receive"

Receive = Callable[[], Awaitable[dict[str, Any]]]


class Receiver:
    """ASGI 3 wrapper that stores ``receive`` in the scope.

    PERF: every request passes through here, so it is one dict store and the
    app's own coroutine; the watcher task is started only by a responder
    that is about to wait.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: dict, receive: Receive, send: Any) -> Awaitable[None]:
        scope[SCOPE_KEY] = receive
        return self.app(scope, receive, send)


async def _until_disconnect(receive: Receive) -> None:
    # Only called after the body was read in full, so nothing else reads.
    while (await receive())["type"] != "http.disconnect":
        pass


@contextlib.contextmanager
def watch_disconnect(req: falcon.asgi.Request,
                     active: bool = True) -> Iterator[asyncio.Future[None] | None]:
    """Yield a future done when the client of ``req`` disconnects (None when
    not ``active``, or not served through ``Receiver``)."""
    receive = req.scope.get(SCOPE_KEY) if active else None
    if receive is None:
        yield None
        return
    watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive))
    try:
        yield watcher
    finally:
        watcher.cancel()
