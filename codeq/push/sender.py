"""Outbound POSTs of webhooks: one pooled aiohttp session per process, signed,
bounded in time, no redirects, only to destinations the policy allows.

aiohttp rather than httpx: its client is the faster of the two on asyncio
and takes a custom resolver, which is where the policy checks the addresses
actually connected to.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import socket
import time
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from codeq import __version__
from codeq.push.destinations import Destinations

USER_AGENT = f"codeq/{__version__}"
# A receiver's reply is read only to free the connection: at most this much.
MAX_REPLY_BYTES = 64 * 1024


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of ``timestamp + "." + body``."""
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class SafeResolver(AbstractResolver):
    """Resolve as usual, then keep only the addresses the policy allows, so
    the connection is made to an address that was checked."""

    def __init__(self, destinations: Destinations) -> None:
        self.destinations = destinations
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if self.destinations.name_allowed(host):
            return found
        kept = [r for r in found if self.destinations.address_allowed(
            ipaddress.ip_address(r["host"].split("%", 1)[0]))]
        if not kept:
            # errno and strerror, so aiohttp's connection error quotes the reason.
            raise OSError(errno.EPERM, f"{host} resolves only to internal addresses, which "
                          "webhooks may not call (see --webhook-allow)")
        return kept

    async def close(self) -> None:
        await self.inner.close()


class Sender:
    """POST JSON bodies to webhook URLs; never raises for the receiver's faults."""

    def __init__(self, destinations: Destinations, secret: str, timeout: float,
                 connections: int) -> None:
        self.destinations = destinations
        self.secret = secret.encode()
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=timeout)
        self.connections = connections
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            connector = aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=10,
                                             resolver=SafeResolver(self.destinations))
            self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                                 headers={"User-Agent": USER_AGENT},
                                                 skip_auto_headers=("Accept-Encoding",))
        return self.session

    def headers(self, body: bytes, delivery_id: str) -> dict[str, str]:
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-CodeQ-Timestamp": timestamp,
                   "X-CodeQ-Delivery-Id": delivery_id}
        if self.secret:
            headers["X-CodeQ-Signature"] = signature(self.secret, timestamp, body)
        return headers

    async def post(self, url: str, body: bytes, delivery_id: str) -> str | None:
        """POST ``body``; return None on a 2xx answer, else what went wrong."""
        problem = self.destinations.problem(url)
        if problem is not None:  # the policy may have changed since it was accepted
            return f"refused: the URL {problem}"
        try:
            async with self._session().post(url, data=body, allow_redirects=False,
                                            headers=self.headers(body, delivery_id)) as reply:
                await reply.content.read(MAX_REPLY_BYTES)
                if 200 <= reply.status < 300:
                    return None
                return f"HTTP {reply.status} from {urlsplit(url).netloc}"
        except TimeoutError:
            return f"no answer within {self.timeout.total:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
