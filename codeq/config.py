"""Service settings: defaults, CODEQ_* environment variables, a TOML file, flags.

Precedence, lowest first: defaults, config file, environment, command line.
Each setting is declared once, as a field of ``Settings``; ``OPTIONS`` and
``codeq serve --help`` are derived from those fields.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from codeq.keys import TENANT_PATTERN

BACKOFF_POLICIES = ("fixed", "linear", "exponential", "equal_jitter", "full_jitter")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class Settings:
    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(8080, "port to listen on (0: any free port)")
    workers: int = _opt(1, "server processes sharing the port")
    store_url: str = _opt("", "store URL (redis://[:password@]host:port/db, "
                          "unix:///path.sock, or redis+cluster://host:port[,host:port...]/ "
                          "for a Redis Cluster or clustered KVRocks); empty: start an "
                          "embedded kvrocks or redis-server")
    store_wait_replicas: int = _opt(0, "replicas that must confirm each change before it is "
                                    "acknowledged (WAIT; cluster stores), so a failover loses "
                                    "none; 0: asynchronous replication")
    queue_shards: int = _opt(1, "hash tags each queue's tasks are spread over (creates "
                             "round-robin, claims visit them all), so one hot command can use "
                             "several cluster nodes; every process of a store must use the "
                             "same number")
    data_dir: str = _opt("./data", "data directory of the embedded store")
    tenant: str = _opt("default", "tenant of all tasks (until authentication names one)")
    default_lease_seconds: float = _opt(300.0, "lease of a claim that names none")
    max_attempts: int = _opt(5, "deliveries of a task that names no maxAttempts")
    backoff_policy: str = _opt("full_jitter", "retry delay policy after a nack or an expired "
                               "lease", BACKOFF_POLICIES)
    backoff_base_seconds: float = _opt(1.0, "backoff base delay")
    backoff_max_seconds: float = _opt(300.0, "backoff cap; also caps a nack's delaySeconds")
    tick_interval: float = _opt(0.25, "seconds between promotions of due delayed tasks and "
                                "requeues of expired leases")
    retention_seconds: float = _opt(86400.0, "how long finished tasks and results are kept")
    sweep_interval: float = _opt(3600.0, "seconds between sweeps that mark every queue due "
                                 "for upkeep (a safety net; upkeep goes by each queue's due "
                                 "time)")
    max_body_bytes: int = _opt(1 << 20, "largest request body accepted")
    max_header_bytes: int = _opt(16384, "largest request line and headers accepted (431 "
                                 "beyond)")
    header_timeout: float = _opt(10.0, "seconds a client may take to send a request's "
                                 "line and headers")
    body_timeout: float = _opt(30.0, "seconds a client may take to send a request's body")
    keepalive_timeout: float = _opt(75.0, "seconds an idle connection is kept open, before "
                                    "its first request and between requests")
    shutdown_timeout: float = _opt(10.0, "seconds a stopping process lets requests in flight "
                                   "finish before closing their connections")
    store_timeout: float = _opt(5.0, "seconds a store reply may take before its connection "
                                "is declared dead and reopened; idle connections are pinged "
                                "this often")
    log_level: str = _opt("info", "log level", ("debug", "info", "warning", "error"))
    auth: str = _opt("off", "require a bearer token on every /v1/codeq request (on), or "
                     "trust every caller as the configured tenant (off: local development "
                     "only)", ("off", "on"))
    jwks_url: str = _opt("", "JWKS URL of the RS256/ES256 keys JWTs are checked against")
    jwt_secret: str = _opt("", "shared secret of HS256 JWTs")
    jwt_issuer: str = _opt("", "required iss claim of JWTs; empty: not checked")
    jwt_audience: str = _opt("", "required aud claim of JWTs; empty: not checked")
    tokens_file: str = _opt("", "TOML file of static API tokens ([[tokens]] tables); "
                            "reread on SIGHUP")
    rate_limit: tuple[str, ...] = _opt((), "rate limits per token: OP=RATE/BURST with OP one of "
                                       "create, claim, result, admin and RATE per second "
                                       "(e.g. create=5/10; repeat the flag, or separate with "
                                       "commas); none by default")
    ui: str = _opt("on", "serve the web dashboard at /ui/ (on; with auth on it asks for a "
                   "token with codeq:admin), or not (off: /ui/ is 404)", ("on", "off"))
    public_url: str = _opt("", "base URL clients reach this service at, for the claimUrl of "
                           "availability webhooks; empty: http://<host>:<port>")
    webhook_secret: str = _opt("", "key of the HMAC-SHA256 signature on every outbound POST "
                               "(X-CodeQ-Signature); empty: unsigned")
    webhook_allow: tuple[str, ...] = _opt((), "destinations opened to webhooks despite the "
                                          "outbound policy: CIDRs or host names (repeat the "
                                          "flag, or separate with commas)")
    callback_max_attempts: int = _opt(8, "delivery attempts of a result callback before it "
                                      "is kept as failed")
    callback_timeout: float = _opt(10.0, "seconds one callback POST may take, connect "
                                   "included")
    callback_backoff_base_seconds: float = _opt(2.0, "delay before a callback's first retry; "
                                                "each next one is 4 times longer, jittered")
    callback_backoff_max_seconds: float = _opt(900.0, "longest delay between two attempts of "
                                               "a callback")
    callback_concurrency: int = _opt(64, "callback POSTs in flight at once, per server process")
    callback_host_concurrency: int = _opt(32, "callback POSTs in flight at once to one "
                                          "receiver (host and port), per server process; the "
                                          "rest wait, so a slow receiver cannot hold every "
                                          "slot")

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise ValueError("; ".join(problems))

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Option:
    """One setting as the command line and the environment see it."""

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None

    @property
    def env(self) -> str:
        return "CODEQ_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _names(raw: Any) -> tuple[str, ...]:
    """A list setting: a TOML list, a comma-separated string, or repeated flags."""
    items = raw if isinstance(raw, list | tuple) else [raw]
    return tuple(part.strip() for item in items for part in str(item).split(",")
                 if part.strip())


_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "tuple[str, ...]": _names}
OPTIONS: tuple[Option, ...] = tuple(
    Option(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"], f.metadata["choices"])
    for f in fields(Settings)
)


def validate(s: Settings) -> list[str]:
    """Return what is wrong with the settings, if anything."""
    problems = []
    if not 0 <= s.port < 65536:
        problems.append(f"port must be 0..65535 (0: any free port), got {s.port}")
    if s.workers < 1:
        problems.append("workers must be at least 1")
    if s.store_wait_replicas < 0:
        problems.append("store_wait_replicas must not be negative")
    if not 1 <= s.queue_shards <= 64:
        problems.append("queue_shards must be 1..64")
    if s.store_url:
        from codeq._core import parse_url  # the compiled core imports codeq.errors only

        try:
            parse_url(s.store_url)
        except ValueError as exc:
            problems.append(str(exc))
    if s.store_wait_replicas and not s.store_url.startswith("redis+cluster://"):
        problems.append("store_wait_replicas needs a redis+cluster:// store_url")
    if s.backoff_policy not in BACKOFF_POLICIES:
        problems.append(f"backoff_policy must be one of {', '.join(BACKOFF_POLICIES)}")
    for name in ("default_lease_seconds", "backoff_max_seconds", "tick_interval",
                 "retention_seconds", "sweep_interval", "header_timeout", "body_timeout",
                 "keepalive_timeout", "shutdown_timeout", "store_timeout"):
        if getattr(s, name) <= 0:
            problems.append(f"{name} must be positive")
    if s.backoff_base_seconds < 0:
        problems.append("backoff_base_seconds must not be negative")
    if not re.match(TENANT_PATTERN, s.tenant):
        problems.append("tenant must be 1 to 64 of A-Z a-z 0-9 . _ - (starting with a "
                        "letter or digit)")
    if s.max_attempts < 1:
        problems.append("max_attempts must be at least 1")
    if s.max_body_bytes < 1024:
        problems.append("max_body_bytes must be at least 1024")
    if s.max_header_bytes < 1024:
        problems.append("max_header_bytes must be at least 1024")
    if s.callback_max_attempts < 1:
        problems.append("callback_max_attempts must be at least 1")
    if s.callback_concurrency < 1:
        problems.append("callback_concurrency must be at least 1")
    if s.callback_host_concurrency < 1:
        problems.append("callback_host_concurrency must be at least 1")
    for name in ("callback_timeout", "callback_backoff_max_seconds"):
        if getattr(s, name) <= 0:
            problems.append(f"{name} must be positive")
    if s.callback_backoff_base_seconds < 0:
        problems.append("callback_backoff_base_seconds must not be negative")
    if s.auth == "on" and not (s.jwks_url or s.jwt_secret or s.tokens_file):
        problems.append("auth on needs jwks_url, jwt_secret or tokens_file")
    if s.jwt_secret and len(s.jwt_secret) < 32:
        problems.append("jwt_secret must be at least 32 characters (HS256 keys of 256 bits)")
    try:
        rate_limits(s.rate_limit)
    except ValueError as exc:
        problems.append(str(exc))
    if s.tokens_file:
        from codeq.auth.tokens import load_tokens  # codeq.auth imports this module

        try:
            load_tokens(s.tokens_file)
        except ValueError as exc:
            problems.append(str(exc))
    # Imported here: codeq.push imports this module.
    from codeq.push.destinations import allow_problems

    problems += allow_problems(s.webhook_allow)
    return problems


RATE_LIMITED_OPS = ("create", "claim", "result", "admin")


def rate_limits(entries: tuple[str, ...]) -> dict[str, tuple[float, int]]:
    """Parse ``OP=RATE/BURST`` entries into {op: (rate per second, burst)}."""
    out = {}
    for entry in entries:
        op, _, spec = entry.partition("=")
        rate, _, burst = spec.partition("/")
        try:
            parsed = (float(rate), int(burst))
        except ValueError:
            parsed = (0.0, 0)
        if op not in RATE_LIMITED_OPS or parsed[0] <= 0 or parsed[1] < 1:
            raise ValueError(f"rate_limit: {entry!r} is not OP=RATE/BURST with OP one of "
                             f"{', '.join(RATE_LIMITED_OPS)}, RATE > 0 and BURST >= 1")
        out[op] = parsed
    return out


def redact(url: str) -> str:
    """Return a store URL fit for logs: the password replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _convert(option: Option, raw: Any, source: str) -> Any:
    try:
        value = option.type(raw)
    except (TypeError, ValueError):
        kind = getattr(option.type, "__name__", "list")
        raise ValueError(f"{source}: {option.name} must be a {kind}, got {raw!r}") from None
    if option.choices and value not in option.choices:
        raise ValueError(f"{source}: {option.name} must be one of {', '.join(option.choices)}")
    return value


def load(config_file: str | None = None, flags: dict[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from a config file, the environment and flags."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    by_name = {o.name: o for o in OPTIONS}
    if config_file:
        with open(config_file, "rb") as fh:
            table = tomllib.load(fh)
        for key, raw in table.items():
            name = key.replace("-", "_")
            if name not in by_name:
                raise ValueError(f"{config_file}: unknown setting {key!r}")
            values[name] = _convert(by_name[name], raw, config_file)
    for option in OPTIONS:
        if option.env in env:
            values[option.name] = _convert(option, env[option.env], option.env)
    for name, raw in (flags or {}).items():
        if raw is not None:
            values[name] = _convert(by_name[name], raw, by_name[name].flag)
    return Settings(**values)
