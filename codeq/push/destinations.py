"""Where codeQ may send webhooks: http(s) URLs to public addresses, plus what
the operator opens with ``--webhook-allow``.

A URL is checked twice: when it is accepted (its scheme, its form, a literal
address or a well-known internal name in it: 400 naming the field), and on
the addresses its host resolves to when it is called (``sender.SafeResolver``), so
a name that resolves to an internal address later is not called either.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Names of the host itself and of cloud metadata services.
INTERNAL_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
# Hosts that the C resolver reads as an address though they are not in
# dotted-quad form (2130706433, 0x7f000001, 127.1).
NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]+|[0-9.]+)$", re.IGNORECASE)


def allow_problems(entries: Iterable[str]) -> list[str]:
    """Return what is wrong with ``--webhook-allow`` entries, if anything."""
    problems = []
    for entry in entries:
        if "/" in entry or NUMERIC_HOST.match(entry) or ":" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                problems.append(f"webhook_allow: {entry!r} is not a CIDR or an address")
        elif not re.match(r"^[A-Za-z0-9.-]+$", entry):
            problems.append(f"webhook_allow: {entry!r} is not a host name")
    return problems


def refused_address(address: Address) -> bool:
    """Whether an address is internal: loopback, private, link-local (cloud
    metadata), multicast, unspecified, reserved or otherwise not global."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_multicast or not address.is_global


class Destinations:
    """The outbound policy: which webhook URLs are accepted and called."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        # PERF: producers reuse a few URLs; parsing one costs 4 % of a create.
        self.problem = functools.lru_cache(maxsize=4096)(self._problem)
        self.networks: list[Network] = []
        self.names: set[str] = set()
        for entry in allow:
            if "/" in entry or NUMERIC_HOST.match(entry) or ":" in entry:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                self.names.add(entry.lower().rstrip("."))

    def address_allowed(self, address: Address) -> bool:
        return not refused_address(address) or any(address in n for n in self.networks)

    def name_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def _problem(self, url: str) -> str | None:
        """Return why ``url`` may not be a webhook, or None when it may."""
        if len(url) > MAX_URL_LENGTH:
            return f"must be at most {MAX_URL_LENGTH} characters"
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            return f"is not a valid URL: {exc}"
        if parts.scheme not in ("http", "https"):
            return "must be an http or https URL"
        if not host:
            return "must name a host"
        if parts.username is not None or parts.password is not None:
            return "must not carry credentials"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None:
            if not self.address_allowed(address):
                return f"must not point to an internal address ({host})"
            return None
        if self.name_allowed(host):
            return None
        name = host.lower().rstrip(".")
        if NUMERIC_HOST.match(name):
            return "must give an IPv4 address in dotted-quad form"
        if name in INTERNAL_NAMES or name.endswith((".localhost", ".internal")):
            return f"must not point to an internal host ({host})"
        return None
