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

from yarl import URL

MAX_URL_LENGTH = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Names of the host itself and of cloud metadata services.
INTERNAL_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
# Hosts that the C resolver reads as an address though they are not in
# dotted-quad form (2130706433, 0x7f000001, 127.1, 0x7f.1).
NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*$", re.IGNORECASE)
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64).
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _is_network(entry: str) -> bool:
    """Whether an allowlist entry names addresses (a CIDR or an address), not a host."""
    return "/" in entry or ":" in entry or bool(NUMERIC_HOST.match(entry))


def allow_problems(entries: Iterable[str]) -> list[str]:
    """Return what is wrong with ``--webhook-allow`` entries, if anything."""
    problems = []
    for entry in entries:
        if _is_network(entry):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                problems.append(f"webhook_allow: {entry!r} is not a CIDR or an address")
        elif not re.match(r"^[A-Za-z0-9.-]+$", entry):
            problems.append(f"webhook_allow: {entry!r} is not a host name")
    return problems


def refused_address(address: Address) -> bool:
    """Whether an address is internal: loopback, private, link-local (cloud
    metadata), multicast, unspecified, reserved or otherwise not global; an
    IPv6 address that carries an IPv4 one (mapped, NAT64, 6to4, Teredo) is
    judged by that one too."""
    if address.is_multicast or not address.is_global:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address.teredo is not None:
            inner = address.teredo[1]
        if inner is None and any(address in net for net in NAT64):
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return refused_address(inner)
    return False


class Destinations:
    """The outbound policy: which webhook URLs are accepted and called."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        # PERF: producers reuse a few URLs; parsing one costs 4 % of a create.
        self.problem = functools.lru_cache(maxsize=4096)(self._problem)
        self.networks: list[Network] = []
        self.names: set[str] = set()
        for entry in allow:
            if _is_network(entry):
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
            parts = URL(url)
            # The host as the client will connect to it: yarl folds full-width
            # digits and dots, and encodes international names (IDNA).
            host = parts.raw_host
            parts.port  # noqa: B018 (raises on a bad port)
        except (ValueError, UnicodeError) as exc:
            return f"is not a valid URL: {exc}"
        if parts.scheme not in ("http", "https"):
            return "must be an http or https URL"
        if not host:
            return "must name a host"
        if parts.raw_user is not None or parts.raw_password is not None:
            return "must not carry credentials"
        if not host.isascii() or len(host) > 253 or any(
                not 0 < len(label) <= 63 for label in host.rstrip(".").split(".")
                if ":" not in host):
            return f"must name a valid host ({host[:80]})"
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
