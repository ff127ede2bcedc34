"""Who is calling: bearer tokens (JWT or static), their tenant, identity and scopes.

With ``--auth off`` (local development) every caller is the configured
tenant with every scope, and a worker names itself with ``X-Worker-Id``.
With it on, every ``/v1/codeq`` request carries ``Authorization: Bearer
<token>``: a static token from ``--tokens-file``, or a JWT checked against
``--jwks-url`` (RS256/ES256) or ``--jwt-secret`` (HS256).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from codeq.auth.jwt import JwtVerifier
from codeq.auth.tokens import StaticTokens
from codeq.config import Settings
from codeq.errors import CommandNotAllowed, InvalidToken, MissingScope, Unauthorized
from codeq.keys import TENANT_PATTERN

WORKER_SCOPES = ("codeq:claim", "codeq:heartbeat", "codeq:abandon", "codeq:nack",
                 "codeq:result")
SCOPES = ("codeq:produce", *WORKER_SCOPES, "codeq:subscribe", "codeq:admin")
WORKER = "codeq:worker"  # grants the five worker scopes
_TENANT = re.compile(TENANT_PATTERN)


def expand(scopes: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Return the scopes a list grants, ``codeq:worker`` spelled out."""
    out = set(scopes)
    if WORKER in out:
        out.update(WORKER_SCOPES)
    return frozenset(out & set(SCOPES))


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller of one request."""

    tenant: str
    worker: str | None  # the token's subject; X-Worker-Id with auth off
    scopes: frozenset[str]
    event_types: frozenset[str] | None  # commands it may claim or subscribe to; None: any
    principal: str  # who, for logs and rate limits

    def require(self, scope: str) -> Identity:
        if scope not in self.scopes:
            raise MissingScope(f"the token lacks the scope {scope}", scope=scope)
        return self

    def allow(self, commands: list[str]) -> None:
        """Refuse commands outside the token's eventTypes."""
        if self.event_types is None:
            return
        for command in commands:
            if command not in self.event_types:
                raise CommandNotAllowed(f"the token may not take command {command!r}",
                                        field="commands")


def identity(tenant: str, worker: str | None, scopes: list[str] | tuple[str, ...],
             event_types: list[str] | None, principal: str) -> Identity:
    """Build an identity from a token's claims or entry; InvalidToken if malformed."""
    if not _TENANT.match(tenant):
        raise InvalidToken("the token's tenant is not a valid tenant name")
    kinds = None if event_types is None or "*" in event_types else frozenset(event_types)
    return Identity(tenant, worker, expand(scopes), kinds, principal)


class Authenticator:
    """Turn a request's credentials into an Identity (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = settings.auth == "on"
        self.tokens = StaticTokens(settings.tokens_file) if settings.tokens_file else None
        self.jwt = (JwtVerifier(settings) if settings.jwks_url or settings.jwt_secret
                    else None)
        # Every caller while authentication is off (X-Worker-Id names workers).
        self.anonymous = Identity(settings.tenant, None, frozenset(SCOPES), None, "anonymous")

    async def start(self) -> None:
        if self.enabled and self.jwt is not None:
            await self.jwt.start()

    async def close(self) -> None:
        if self.jwt is not None:
            await self.jwt.close()

    def reload(self) -> None:
        """Read the tokens file again (SIGHUP); keep the old tokens if it is bad."""
        if self.tokens is not None:
            self.tokens.reload()

    async def identify(self, authorization: str | None) -> Identity:
        """The caller a bearer token names (authentication on)."""
        if not authorization:
            raise Unauthorized("Authorization: Bearer <token> is required")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization must be Bearer <token>")
        if self.tokens is not None:
            found = self.tokens.find(token)
            if found is not None:
                return found
        if self.jwt is not None and token.count(".") == 2:
            return await self.jwt.verify(token)
        raise InvalidToken("unknown token")


__all__ = ["SCOPES", "Authenticator", "Identity", "identity"]
