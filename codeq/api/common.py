"""Request plumbing shared by the resources: bodies, identities, responses."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import falcon
import msgspec

from codeq.api.requests import PRINCIPAL_KEY
from codeq.config import rate_limits
from codeq.errors import (
    BadRequest,
    InvalidToken,
    PayloadTooLarge,
    RateLimited,
    UnsupportedMediaType,
)
from codeq.schemas import CreateBatch, ResultBatch, json_encoder, request_decoders

if TYPE_CHECKING:
    from codeq.auth import Authenticator, Identity
    from codeq.config import Settings
    from codeq.engine import Engine
    from codeq.push import Push

T = TypeVar("T")

_FIELD = re.compile(r"(?:at `\$\.|required field `)(\w+)")
_WORKER_ID = re.compile(r"^[\x21-\x7e]{1,256}$(?!\n)")  # no final newline (see keys.py)
BATCHES = (CreateBatch, ResultBatch)


class Context:
    """What every resource needs: the engine, settings, push, the caller's tenant."""

    def __init__(self, engine: Engine, settings: Settings, push: Push,
                 auth: Authenticator) -> None:
        self.engine = engine
        self.settings = settings
        self.push = push
        self.auth = auth
        self.limits = rate_limits(settings.rate_limit)

    async def caller(self, req: falcon.asgi.Request, scope: str,
                     op: str | None = None) -> Identity:
        """Authenticate the request, check it holds ``scope`` (401 / 403) and,
        when ``op`` is rate limited, take a token of the caller's bucket (429)."""
        if self.auth.enabled:
            ident = await self.auth.identify(req.get_header("Authorization"))
            req.scope[PRINCIPAL_KEY] = ident.principal
            ident.require(scope)
        else:
            ident = self.auth.anonymous
        if op is not None and (limit := self.limits.get(op)) is not None:
            wait = await self.engine.take_token(ident.principal, op, *limit)
            if wait > 0:
                raise RateLimited(f"rate limit of {op} reached: {limit[0]:g}/s, burst "
                                  f"{limit[1]}", retry_after=wait)
        return ident

    async def worker(self, req: falcon.asgi.Request, scope: str,
                     op: str | None = None) -> tuple[Identity, str]:
        """The caller and its worker identity: the token's subject, or
        X-Worker-Id with authentication off."""
        ident = await self.caller(req, scope, op)
        if self.auth.enabled:
            if not ident.worker:
                raise InvalidToken("the token names no worker (JWT sub, or the token's name)")
            return ident, ident.worker
        return ident, _worker_header(req.get_header("X-Worker-Id"))


class Resource:
    """Base of the resources: each holds the shared context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx


async def read_body(req: falcon.asgi.Request, ctx: Context, kind: type[T], *,
                    optional: bool = False) -> T:
    """Decode the JSON body into ``kind``; refuse anything malformed."""
    limit = ctx.settings.max_body_bytes
    # A declared oversize is refused unread; a chunked one once past the limit.
    declared = req.content_length
    data = b"" if declared is not None and declared > limit else await req.stream.read(limit + 1)
    if len(data) > limit or (declared or 0) > limit:
        raise PayloadTooLarge(f"request body too large (limit {limit} bytes)")
    if not data or data.isspace():
        if optional:
            return kind()
        raise BadRequest("request body is required")
    media = (req.content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(
            f"request body must be application/json, got {media or 'no content type'}")
    return decode(data, kind, check=kind not in BATCHES)


def decode(data: bytes, kind: type[T], check: bool = True) -> T:
    """Decode JSON into ``kind``; BadRequest naming what is wrong.

    A batch body is decoded without the UTF-8 check: its items are checked
    one by one (``decode_items``), so that a bad item fails alone.
    """
    # PERF: isascii() is a word-at-a-time scan; most bodies never decode.
    if check and not data.isascii():
        check_utf8(data)
    try:
        return request_decoders[kind].decode(data)
    except msgspec.ValidationError as exc:
        found = _FIELD.search(str(exc))
        detail = {"field": found.group(1)} if found else {}
        raise BadRequest(f"invalid request body: {exc}", **detail) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except (RecursionError, UnicodeDecodeError):
        # An unchecked batch body with bad bytes in a key, or one nested too deep.
        raise BadRequest("malformed JSON: invalid UTF-8 or nested too deeply") from None


def decode_items(items: list[msgspec.Raw], kind: type[T]) -> list[T | BadRequest]:
    """Decode each item of a batch on its own: a BadRequest in place of a bad one."""
    out: list[T | BadRequest] = []
    for item in items:
        try:
            out.append(decode(bytes(item), kind))
        except BadRequest as exc:
            out.append(exc)
    return out


def check_utf8(data: bytes) -> None:
    """Refuse a body that is not valid UTF-8, naming the field that holds the bad bytes.

    msgspec keeps raw JSON values (payload, result, artifacts) as bytes
    unchecked, and they would be stored; nothing unreadable may get that far.
    """
    try:
        data.decode()
    except UnicodeDecodeError:
        path = _bad_utf8_path(data)
        detail = {"field": path} if path else {}
        where = f" (in {path})" if path else ""
        raise BadRequest(f"request body is not valid UTF-8{where}", **detail) from None


_containers = msgspec.json.Decoder(dict[str, msgspec.Raw] | list[msgspec.Raw])
# How deep the search for the bad bytes goes: each level rescans what is
# below it, so this bounds the work to a few passes over the body.
_PATH_DEPTH = 8


def _bad_utf8_path(data: bytes, depth: int = _PATH_DEPTH) -> str | None:
    """Return the path (``payload``, ``tasks[2].result.x``) of the first value
    holding invalid UTF-8 in a JSON object or array; None when it is in a key
    (or the path is deeper than the search goes)."""
    try:
        container = _containers.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    pairs = container.items() if isinstance(container, dict) else enumerate(container)
    for key, raw in pairs:
        value = bytes(raw)
        try:
            value.decode()
        except UnicodeDecodeError:
            name = f"[{key}]" if isinstance(key, int) else key
            nested = depth > 1 and value[:1] in (b"{", b"[")
            inner = _bad_utf8_path(value, depth - 1) if nested else None
            if inner is None:
                return name
            return f"{name}{inner}" if inner.startswith("[") else f"{name}.{inner}"
    return None


def check_url(ctx: Context, url: str | None, name: str) -> None:
    """Refuse a webhook URL the outbound policy would never call."""
    if url is not None:
        problem = ctx.push.url_problem(url)
        if problem is not None:
            raise BadRequest(f"{name} {problem}", field=name)


def task_id(raw: str) -> str:
    """Return a task id in canonical form; 400 unless it is a UUID."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest("task id must be a UUID", field="id") from None


def _worker_header(worker: str | None) -> str:
    """Check a worker's self-given name (X-Worker-Id, authentication off)."""
    if not worker:
        raise BadRequest("X-Worker-Id header is required", field="X-Worker-Id")
    if not _WORKER_ID.match(worker):
        raise BadRequest("X-Worker-Id must be 1 to 256 visible ASCII characters",
                         field="X-Worker-Id")
    return worker


def lease_id(req: falcon.asgi.Request, body_value: str | None) -> str | None:
    """Return the fencing token from the body or the X-Lease-Id header."""
    header = req.get_header("X-Lease-Id")
    if body_value and header and body_value != header:
        raise BadRequest("leaseId in the body and X-Lease-Id differ", field="leaseId")
    value = body_value or header
    if value is not None and not 0 < len(value) <= 128:
        raise BadRequest("leaseId must be 1 to 128 characters", field="leaseId")
    return value


def send(resp: falcon.asgi.Response, body: Any, status: int = 200) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json_encoder.encode(body)


def query_seconds(req: falcon.asgi.Request, name: str, maximum: float) -> float:
    """Parse a non-negative seconds query parameter bounded by ``maximum``."""
    raw = req.get_param(name)
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number", field=name) from None
    if not 0 <= value <= maximum:
        raise BadRequest(f"{name} must be between 0 and {maximum:g}", field=name)
    return value
