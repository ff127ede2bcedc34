"""Static API tokens from a TOML file: one ``[[tokens]]`` table per token.

    [[tokens]]
    token = "s3cr3t-worker-token"
    name = "mailer-1"          # the worker identity
    tenant = "acme"
    scopes = ["codeq:worker"]
    eventTypes = ["email.send"]  # optional: the commands it may claim

Every token is compared in constant time with what the caller sent.
"""

from __future__ import annotations

import hmac
import logging
import tomllib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codeq.auth import Identity

log = logging.getLogger("codeq.auth")


def load_tokens(path: str) -> list[tuple[bytes, Identity]]:
    """Read the tokens file; ValueError naming what is wrong with it."""
    from codeq.auth import identity

    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"tokens file {path}: {exc}") from None
    out = []
    for n, entry in enumerate(table.get("tokens", []), 1):
        where = f"tokens file {path}, token {n}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: not a table")
        missing = [k for k in ("token", "name", "tenant", "scopes") if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        token, scopes = entry["token"], entry["scopes"]
        kinds = entry.get("eventTypes")
        if not isinstance(token, str) or len(token) < 16:
            raise ValueError(f"{where}: token must be a string of 16 characters or more")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ValueError(f"{where}: scopes must be a list of strings")
        if kinds is not None and (not isinstance(kinds, list)
                                  or not all(isinstance(k, str) for k in kinds)):
            raise ValueError(f"{where}: eventTypes must be a list of strings")
        try:
            ident = identity(str(entry["tenant"]), str(entry["name"]), scopes, kinds,
                             f"token:{entry['name']}")
        except Exception as exc:
            raise ValueError(f"{where}: {exc}") from None
        out.append((token.encode(), ident))
    return out


class StaticTokens:
    def __init__(self, path: str) -> None:
        self.path = path
        self.entries = load_tokens(path)

    def reload(self) -> None:
        try:
            self.entries = load_tokens(self.path)
        except ValueError as exc:
            log.error("%s; keeping the tokens read before", exc)
            return
        log.info("tokens file %s reloaded: %d token(s)", self.path, len(self.entries))

    def find(self, token: str) -> Identity | None:
        sent = token.encode()
        found = None
        for secret, ident in self.entries:
            # Every entry is compared, whatever matched: no timing hint either way.
            if hmac.compare_digest(secret, sent):
                found = ident
        return found
