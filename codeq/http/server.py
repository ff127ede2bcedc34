"""Serve an ASGI app over HTTP/1.1 on a listening socket, with a bounded graceful stop."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from codeq.config import Settings
from codeq.http.connection import ASGI, Connection

log = logging.getLogger("codeq.http")


class HttpServer:
    """Accept connections on ``sock`` and hand their requests to ``app``.

    ``serve`` returns once ``stop`` is set and the drain is over: new
    connections are refused at once (the listening socket is closed), idle
    ones are closed, requests in flight get up to ``shutdown_timeout`` to be
    answered; then a client still sending its body gets 408 and the rest are
    cut. The app's lifespan runs around all of it.
    """

    def __init__(self, app: Any, settings: Settings,
                 on_response: Callable[[dict[str, Any], int, float], None] | None = None,
                 ) -> None:
        self.app = app
        self.settings = settings
        # Called with (scope, status, seconds) as each response is complete.
        self.on_response = on_response
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.all_closed = asyncio.Event()  # set once stopping and the last one is gone
        self.stopping = False
        self._date_at = 0
        self._date = b""

    @property
    def date_header(self) -> bytes:
        """The ``date`` header line, rendered once a second."""
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = b"date: %s\r\n" % formatdate(now, usegmt=True).encode()
        return self._date

    async def serve(self, sock: socket.socket, stop: asyncio.Event) -> None:
        lifespan = Lifespan(self.app)
        await lifespan.startup()
        try:
            server = await self.loop.create_server(lambda: Connection(self), sock=sock,
                                                   backlog=2048)
            await stop.wait()
            server.close()  # refuse new connections at once
            await self._drain()
        finally:
            await lifespan.shutdown()

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self.all_closed.set()

    async def _drain(self) -> None:
        limit = self.settings.shutdown_timeout
        self.stopping = True
        for conn in list(self.connections):
            conn.shutdown()
        if not self.connections:
            return
        try:
            await asyncio.wait_for(self.all_closed.wait(), limit)
            return
        except TimeoutError:
            pass
        log.warning("%d connection(s) still busy %g s after the shutdown began; closing them",
                    len(self.connections), limit)
        tasks = [c.active.task for c in self.connections if c.active and c.active.task]
        for conn in list(self.connections):
            conn.force_close(limit)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Lifespan:
    """Drive the app's ASGI lifespan: startup before serving, shutdown after."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self._step("startup")

    async def shutdown(self) -> None:
        await self._step("shutdown")
        assert self.task is not None
        await self.task

    async def _step(self, name: str) -> None:
        assert self.task is not None
        await self.inbox.put({"type": f"lifespan.{name}"})
        reply = asyncio.ensure_future(self.outbox.get())
        await asyncio.wait({reply, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if not reply.done():
            reply.cancel()
            self.task.result()  # the app's own error, if it raised one
            raise RuntimeError(f"the app ended its lifespan before {name} completed")
        message = reply.result()
        if message["type"] != f"lifespan.{name}.complete":
            raise RuntimeError(f"lifespan {name} failed: {message.get('message', '')}")
