"""Notice clients that go away during a long poll.

ASGI servers report a client's disconnect only through ``receive()``, which
nobody calls once the body has been read. A long poll that does not notice
would go on to lease a task to a client that is gone, and the task would sit
out the whole lease. This ASGI wrapper lets a responder ask, only when it is
about to wait, for a future that completes when the client disconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import falcon.asgi

SCOPE_KEY = "codeq.watch_disconnect"

Receive = Callable[[], Awaitable[dict[str, Any]]]


class DisconnectWatch:
    """Wrap an ASGI app; ``scope[SCOPE_KEY]()`` starts watching one request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watcher: asyncio.Task[None] | None = None

        def watch() -> asyncio.Future[None]:
            nonlocal watcher
            if watcher is None:
                watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive))
            return watcher

        scope[SCOPE_KEY] = watch
        try:
            await self.app(scope, receive, send)
        finally:
            if watcher is not None:
                watcher.cancel()


async def _until_disconnect(receive: Receive) -> None:
    # Only called after the body was read in full, so nothing else reads.
    while (await receive())["type"] != "http.disconnect":
        pass


def disconnected(req: falcon.asgi.Request) -> asyncio.Future[None] | None:
    """Return a future done when the client of ``req`` disconnects."""
    watch = req.scope.get(SCOPE_KEY)
    return watch() if watch is not None else None
