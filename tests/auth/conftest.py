"""Auth fixtures: a JWKS served on loopback, keys, tokens, and a codeq serve with auth on."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support import CodeqServer, new_store

ISSUER, AUDIENCE = "codeq-tests", "codeq"
SECRET = "an-hs256-secret-of-at-least-32-characters"
TOKENS = {
    # name: (scopes, eventTypes, tenant)
    "producer": (["codeq:produce"], None, "acme"),
    "worker": (["codeq:worker"], None, "acme"),
    "claimer": (["codeq:claim"], None, "acme"),
    "mailer": (["codeq:worker", "codeq:subscribe"], ["email.send"], "acme"),
    "admin": (["codeq:admin"], None, "acme"),
    "everything": (["codeq:produce", "codeq:worker", "codeq:subscribe", "codeq:admin"], None,
                   "acme"),
    "other": (["codeq:produce", "codeq:worker", "codeq:subscribe", "codeq:admin"], None,
              "globex"),
}


def static_token(name: str) -> str:
    return f"static-token-{name}-0123456789"


def tokens_toml(names: dict[str, tuple]) -> str:
    out = []
    for name, (scopes, kinds, tenant) in names.items():
        out.append(f'[[tokens]]\ntoken = "{static_token(name)}"\nname = "{name}"\n'
                   f'tenant = "{tenant}"\nscopes = {json.dumps(scopes)}\n'
                   + (f"eventTypes = {json.dumps(kinds)}\n" if kinds else ""))
    return "\n".join(out)


class Keys:
    """Signing keys whose public halves the JWKS serves."""

    def __init__(self) -> None:
        self.private: dict[str, Any] = {}
        self.public: list[dict[str, Any]] = []

    def add_rsa(self, kid: str) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._add(kid, key, RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "RS256")

    def add_ec(self, kid: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        self._add(kid, key, ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "ES256")

    def _add(self, kid: str, key: Any, jwk: dict[str, Any], alg: str) -> None:
        self.private[kid] = (key, alg)
        self.public.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})

    def mint(self, kid: str, **claims: Any) -> str:
        key, alg = self.private[kid]
        return jwt.encode(claims_with(claims), key, algorithm=alg, headers={"kid": kid})


def claims_with(claims: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "w-1", "tid": "acme", "iat": now,
            "exp": now + 300, "scope": "codeq:produce codeq:worker"}
    return {**base, **claims}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()),
                     b64(signature)))


class Jwks:
    """A JWKS endpoint on loopback that counts fetches and can go down."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.down = False
        self.fetches = 0
        jwks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                if jwks.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"keys": jwks.keys.public}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def keys():
    k = Keys()
    k.add_rsa("rsa-1")
    k.add_ec("ec-1")
    return k


@pytest.fixture(scope="module")
def jwks(keys):
    server = Jwks(keys)
    yield server
    server.close()


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "tokens.toml"
    path.write_text(tokens_toml(TOKENS))
    return path


@pytest.fixture(scope="module")
def auth_server(jwks, tokens_file: Path):
    store = new_store().start()
    server = CodeqServer(
        "--store-url", store.url, "--log-level", "warning", "--tick-interval", "0.05",
        "--auth", "on", "--jwks-url", jwks.url, "--jwt-secret", SECRET,
        "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
        "--tokens-file", str(tokens_file)).start()
    yield server
    server.stop()
    store.cleanup()


@pytest.fixture
def as_(auth_server):
    """Clients of the auth server, one per static token name (or a raw token)."""
    clients = []

    def make(name: str | None = None, token: str | None = None) -> httpx.Client:
        headers = {}
        if name or token:
            headers["Authorization"] = f"Bearer {token or static_token(name)}"
        client = httpx.Client(base_url=auth_server.base, headers=headers, timeout=20)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
