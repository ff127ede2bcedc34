"""Every request and response body, and the stored records, as msgspec Structs.

Decoders and encoders are built once at import (msgspec's performance advice):
request bodies decode straight from the raw bytes into their Struct, stored
msgpack records straight into ``Task`` / ``ResultRecord``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Raw, Struct, field

from codeq.errors import BadRequest
from codeq.keys import NAME_PATTERN

# Bounds on client-supplied numbers and strings: generous for real use, small
# enough that nothing a client sends can overflow a score or bloat the store.
MAX_DELAY_SECONDS = 366 * 24 * 3600
MAX_LEASE_SECONDS = 24 * 3600
MAX_CLAIM_WAIT_SECONDS = 30
MAX_RESULT_WAIT_SECONDS = 60
MAX_ATTEMPTS_LIMIT = 1000
MAX_COMMANDS_PER_CLAIM = 64

CommandName = Annotated[str, Meta(pattern=NAME_PATTERN, description="command (event type)")]
LeaseId = Annotated[str, Meta(min_length=1, max_length=128)]
Seconds = Annotated[float, Meta(ge=0, le=MAX_DELAY_SECONDS)]
LeaseSeconds = Annotated[float, Meta(ge=1, le=MAX_LEASE_SECONDS)]


class Body(Struct, kw_only=True, omit_defaults=True):
    """Base of request bodies; unknown fields are ignored, for client compatibility."""


# -- requests -----------------------------------------------------------------


class CreateTask(Body):
    command: CommandName
    payload: Raw
    priority: int = 0
    maxAttempts: Annotated[int, Meta(ge=1, le=MAX_ATTEMPTS_LIMIT)] | None = None
    webhook: Annotated[str, Meta(pattern=r"^https?://\S+$", max_length=2048)] | None = None
    idempotencyKey: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    runAt: Annotated[datetime, Meta(tz=True)] | None = None
    delaySeconds: Seconds | None = None

    def __post_init__(self) -> None:
        # BadRequest (not ValueError) passes through msgspec with its field named.
        if bytes(self.payload) == b"null":
            raise BadRequest("payload must not be null", field="payload")
        if self.runAt is not None:
            if self.delaySeconds is not None:
                raise ValueError("give runAt or delaySeconds, not both")
            if self.runAt > datetime.now(UTC) + timedelta(seconds=MAX_DELAY_SECONDS):
                raise BadRequest(f"runAt must be at most {MAX_DELAY_SECONDS // 86400} days "
                                 "ahead", field="runAt")


class ClaimRequest(Body):
    commands: Annotated[list[CommandName], Meta(min_length=1, max_length=MAX_COMMANDS_PER_CLAIM)]
    leaseSeconds: LeaseSeconds | None = None
    waitSeconds: Annotated[float, Meta(ge=0, le=MAX_CLAIM_WAIT_SECONDS)] = 0


class LeaseBody(Body):
    leaseId: LeaseId | None = None


class HeartbeatRequest(LeaseBody):
    extendSeconds: LeaseSeconds | None = None


class NackRequest(LeaseBody):
    delaySeconds: Seconds | None = None
    reason: Annotated[str, Meta(max_length=4096)] | None = None


class ResultRequest(LeaseBody, kw_only=True):
    status: Literal["COMPLETED", "FAILED"]
    result: Raw = field(default_factory=Raw)
    error: Annotated[str, Meta(max_length=16384)] | None = None
    artifacts: Raw = field(default_factory=Raw)


# -- stored records and responses ---------------------------------------------


class Task(Struct, kw_only=True, omit_defaults=True):
    """A task as stored (msgpack) and as returned (JSON)."""

    id: str
    command: str
    payload: str
    priority: int
    status: str
    attempts: int
    maxAttempts: int
    workerId: str | None = None
    leaseId: str | None = None
    leaseUntil: datetime | None = None
    visibleAt: datetime | None = None
    webhook: str | None = None
    error: str | None = None
    tenantId: str | None = None
    createdAt: datetime
    updatedAt: datetime


class ResultRecord(Struct, kw_only=True, omit_defaults=True):
    """A result as stored: ``result`` and ``artifacts`` are JSON text."""

    taskId: str
    status: str
    result: str | None = None
    error: str | None = None
    artifacts: str | None = None
    completedAt: datetime


class Result(Struct, kw_only=True, omit_defaults=True):
    """A result as returned: ``result`` and ``artifacts`` embedded as JSON."""

    taskId: str
    status: str
    result: Raw | None = None
    error: str | None = None
    artifacts: Raw | None = None
    completedAt: datetime

    @classmethod
    def from_record(cls, record: ResultRecord) -> Result:
        return cls(
            taskId=record.taskId,
            status=record.status,
            result=None if record.result is None else Raw(record.result),
            error=record.error,
            artifacts=None if record.artifacts is None else Raw(record.artifacts),
            completedAt=record.completedAt,
        )


class TaskWithResult(Struct):
    task: Task
    result: Result


class HeartbeatResponse(Struct):
    ok: bool
    leaseUntil: datetime


class RequeueResponse(Struct, omit_defaults=True):
    status: str
    delaySeconds: float | None = None


# One JSON decoder per request body, each decoding raw bytes straight into its Struct.
request_decoders: dict[type, msgspec.json.Decoder] = {
    kind: msgspec.json.Decoder(kind)
    for kind in (CreateTask, ClaimRequest, LeaseBody, HeartbeatRequest, NackRequest, ResultRequest)
}
# strict=False: stored times are float seconds, decoded into datetimes.
task_decoder = msgspec.msgpack.Decoder(Task, strict=False)
result_decoder = msgspec.msgpack.Decoder(ResultRecord, strict=False)
json_encoder = msgspec.json.Encoder()
