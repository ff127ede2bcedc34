"""JWT bearer tokens: HS256 with a shared secret, or RS256/ES256 keys from a JWKS URL.

PyJWT does the JOSE work (signature, ``exp``/``nbf`` with leeway, ``iss``,
``aud``); the algorithms accepted are pinned per key, so ``alg: none`` and an
HS256 token signed with a public RSA key are refused. The JWKS is fetched at
start and again when a token names an unknown ``kid`` (at most once a
minute); while the endpoint is down, the keys already fetched keep working.

Claims: ``tid`` the tenant (the configured one when absent), ``sub`` the
worker identity, ``scope`` (space-separated) or ``scp`` (list) the scopes,
``eventTypes`` the commands it may claim or subscribe to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt

from codeq.errors import InvalidToken

if TYPE_CHECKING:
    from codeq.auth import Identity
    from codeq.config import Settings

log = logging.getLogger("codeq.auth")

LEEWAY = 30  # seconds of clock skew allowed on exp and nbf
REFRESH_INTERVAL = 60.0  # at most one JWKS fetch a minute for unknown kids
RETRY_WHEN_EMPTY = 5.0  # ... or every 5 s while no key could be fetched yet
FETCH_TIMEOUT = 5.0
ASYMMETRIC = ("RS256", "ES256")
CACHE_SIZE = 4096  # verified tokens remembered until they expire


class JwtVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.secret = settings.jwt_secret
        self.jwks_url = settings.jwks_url
        self.keys: dict[str, jwt.PyJWK] = {}
        # Monotonic time of the last fetch an unknown kid asked for (the one at
        # start does not count: a key rotated in just after start is found).
        self.refreshed_at = float("-inf")
        self.lock = asyncio.Lock()
        self.session: aiohttp.ClientSession | None = None
        # PERF: a signature check costs tens of microseconds (RSA more);
        # a token seen before is looked up until it expires.
        self.verified: OrderedDict[str, tuple[float, Identity]] = OrderedDict()

    async def start(self) -> None:
        if self.jwks_url:
            await self.refresh(force=True)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def verify(self, token: str) -> Identity:
        cached = self.verified.get(token)
        now = time.time()
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        key, algorithms = await self._key_for(header)
        s = self.settings
        try:
            claims = jwt.decode(
                token, key, algorithms=algorithms, leeway=LEEWAY,
                issuer=s.jwt_issuer or None, audience=s.jwt_audience or None,
                options={"require": ["exp"], "verify_aud": bool(s.jwt_audience),
                         "verify_iss": bool(s.jwt_issuer)})
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        ident = self._identity(claims)
        self._remember(token, float(claims["exp"]) + LEEWAY, ident)
        return ident

    def _identity(self, claims: dict[str, Any]) -> Identity:
        from codeq.auth import identity

        scopes = claims.get("scope", claims.get("scp", ""))
        if isinstance(scopes, str):
            scopes = scopes.split()
        kinds = claims.get("eventTypes")
        if not isinstance(scopes, list) or (kinds is not None and not isinstance(kinds, list)):
            raise InvalidToken("the token's scope or eventTypes claim is malformed")
        subject = claims.get("sub")
        tenant = str(claims.get("tid") or self.settings.tenant)
        return identity(tenant, str(subject) if subject else None,
                        [str(s) for s in scopes], None if kinds is None else
                        [str(k) for k in kinds], f"jwt:{tenant}:{subject}")

    def _remember(self, token: str, until: float, ident: Identity) -> None:
        self.verified[token] = (until, ident)
        if len(self.verified) > CACHE_SIZE:
            self.verified.popitem(last=False)

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, list[str]]:
        alg = header.get("alg")
        if self.jwks_url and alg in ASYMMETRIC:
            kid = header.get("kid")
            key = self.keys.get(kid) if kid else None
            if key is None:
                await self.refresh()
                key = self.keys.get(kid) if kid else None
            if key is None:
                raise InvalidToken("the token's key (kid) is not in the JWKS")
            # Only the key's own algorithm: no confusion between key types.
            return key.key, [key.algorithm_name]
        if self.secret and alg == "HS256":
            return self.secret, ["HS256"]
        raise InvalidToken(f"tokens signed with {alg!r} are not accepted")

    async def refresh(self, force: bool = False) -> None:
        """Fetch the JWKS, unless an unknown kid had it fetched (or tried) too
        recently."""
        async with self.lock:
            if not force:
                wait = REFRESH_INTERVAL if self.keys else RETRY_WHEN_EMPTY
                if time.monotonic() - self.refreshed_at < wait:
                    return
                self.refreshed_at = time.monotonic()
            try:
                if self.session is None:
                    self.session = aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT))
                async with self.session.get(self.jwks_url) as reply:
                    reply.raise_for_status()
                    document = await reply.json(content_type=None)
                found = jwt.PyJWKSet.from_dict(document)
            except Exception as exc:
                log.warning("JWKS %s could not be fetched (%s); keeping %d cached key(s)",
                            self.jwks_url, exc, len(self.keys))
                return
            self.keys = {k.key_id: k for k in found.keys
                         if k.key_id and k.algorithm_name in ASYMMETRIC}
            log.info("JWKS %s: %d key(s)", self.jwks_url, len(self.keys))
