"""Every request and response body, and the stored records, as msgspec Structs.

Decoders and encoders are built once at import (msgspec's performance advice):
request bodies decode straight from the raw bytes into their Struct, stored
msgpack records (arrays, see scripts/includes/common.lua) straight into
``StoredTask`` / ``StoredResult``.
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
MAX_BATCH = 100

UUID_PATTERN = (r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                r"$(?!\n)")  # no final newline: see keys.NAME_PATTERN
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
    webhook: Annotated[str, Meta(pattern=r"^https?://\S+$(?!\n)", max_length=2048)] | None = None
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


class BatchResultItem(ResultRequest, kw_only=True):
    taskId: Annotated[str, Meta(pattern=UUID_PATTERN)]


MAX_SUBSCRIPTION_TTL = 24 * 3600
MAX_MIN_INTERVAL = 3600


class SubscribeRequest(Body):
    callbackUrl: Annotated[str, Meta(min_length=1, max_length=2048)]
    eventTypes: Annotated[list[CommandName], Meta(max_length=MAX_COMMANDS_PER_CLAIM)] = field(
        default_factory=list)
    ttlSeconds: Annotated[float, Meta(ge=1, le=MAX_SUBSCRIPTION_TTL)] = 300
    deliveryMode: Literal["fanout", "group", "hash"] = "fanout"
    groupId: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    minIntervalSeconds: Annotated[float, Meta(ge=0, le=MAX_MIN_INTERVAL)] = 5


class Subscription(Struct):
    subscriptionId: str
    expiresAt: datetime


MAX_ADMIN_PAGE = 500  # tasks per DLQ page, and requeued or purged per call


class Ids(Body):
    ids: Annotated[list[Annotated[str, Meta(pattern=UUID_PATTERN)]],
                   Meta(min_length=1, max_length=MAX_ADMIN_PAGE)] | None = None


class CleanupRequest(Body):
    limit: Annotated[int, Meta(ge=1, le=100_000)] = 1000


# A batch is decoded as raw items, each then decoded on its own: a bad item
# fails alone, with its own error.
Items = Annotated[list[Raw], Meta(min_length=1, max_length=MAX_BATCH)]


class CreateBatch(Body):
    tasks: Items


class ClaimBatchRequest(ClaimRequest, kw_only=True):
    count: Annotated[int, Meta(ge=1, le=MAX_BATCH)]


class ResultBatch(Body):
    results: Items


# -- stored records -------------------------------------------------------------

STATUSES = ("PENDING", "IN_PROGRESS", "COMPLETED", "FAILED")
STATUS_CODES = {name: code for code, name in enumerate(STATUSES)}


class StoredTask(Struct, array_like=True):
    """A task record as the scripts store it: a msgpack array (common.lua)."""

    status: int
    priority: int
    attempts: int
    maxAttempts: int
    createdAt: datetime
    updatedAt: datetime
    visibleAt: datetime
    workerId: str | None = None
    leaseId: str | None = None
    leaseUntil: datetime | None = None
    error: str | None = None
    webhook: str | None = None
    idempotencyKey: str | None = None


class StoredResult(Struct, array_like=True):
    """A result record as stored: ``result`` and ``artifacts`` are JSON text."""

    status: int
    completedAt: datetime
    result: str | None = None
    error: str | None = None
    artifacts: str | None = None


class StoredCallback(Struct, array_like=True):
    """A result callback's record (common.lua): status is CALLBACK_STATUSES' index."""

    status: int
    attempts: int
    lastError: str | None = None
    deliveryId: str = ""
    taker: str | None = None


CALLBACK_STATUSES = ("pending", "delivered", "failed")


# -- responses --------------------------------------------------------------------


class CallbackState(Struct, kw_only=True, omit_defaults=True):
    """Where a task's result callback stands: pending, delivered or failed."""

    status: str
    attempts: int
    lastError: str | None = None


class Task(Struct, kw_only=True, omit_defaults=True):
    """A task as returned: the stored record with its id, queue and payload."""

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
    callback: CallbackState | None = None


class DeadLetter(Task, kw_only=True, omit_defaults=True):
    """A dead-lettered task, with when it was dead-lettered."""

    deadLetteredAt: datetime


class Queue(Struct, kw_only=True):
    """A queue's depths, as the admin API returns them."""

    command: str
    ready: int
    delayed: int
    inProgress: int
    dlq: int
    oldestReadyAgeSeconds: float | None


class QueueDetail(Queue, kw_only=True):
    readyByPriority: dict[str, int]


class Result(Struct, kw_only=True, omit_defaults=True):
    """A result as returned: ``result`` and ``artifacts`` embedded as JSON."""

    taskId: str
    status: str
    result: Raw | None = None
    error: str | None = None
    artifacts: Raw | None = None
    completedAt: datetime


def task_of(task_id: str, command: str, tenant: str, payload: bytes, raw: bytes) -> Task:
    """Return the API task of a stored record."""
    s = stored_task_decoder.decode(raw)
    return Task(id=task_id, command=command, payload=payload.decode(), priority=s.priority,
                status=STATUSES[s.status], attempts=s.attempts, maxAttempts=s.maxAttempts,
                workerId=s.workerId, leaseId=s.leaseId, leaseUntil=s.leaseUntil,
                visibleAt=s.visibleAt, webhook=s.webhook, error=s.error, tenantId=tenant,
                createdAt=s.createdAt, updatedAt=s.updatedAt)


def result_of(task_id: str, raw: bytes) -> Result:
    """Return the API result of a stored record."""
    s = stored_result_decoder.decode(raw)
    return Result(taskId=task_id, status=STATUSES[s.status],
                  result=None if s.result is None else Raw(s.result), error=s.error,
                  artifacts=None if s.artifacts is None else Raw(s.artifacts),
                  completedAt=s.completedAt)


class TaskWithResult(Struct):
    task: Task
    result: Result


class HeartbeatResponse(Struct):
    ok: bool
    leaseUntil: datetime


class RequeueResponse(Struct, omit_defaults=True):
    status: str
    delaySeconds: float | None = None


class Tasks(Struct):
    tasks: list[Task]


# -- response shapes the OpenAPI document names (codeq/api/openapi.py) ---------------


class Error(Struct, omit_defaults=True):
    """Every error: what is wrong, a stable code, and the field or scope at fault."""

    error: str
    code: str
    field: str | None = None
    scope: str | None = None


class CreateOutcome(Struct, omit_defaults=True):
    """One item of a batch create: ``task``, or the error fields."""

    task: Task | None = None
    error: str | None = None
    code: str | None = None
    field: str | None = None


class CreateOutcomes(Struct):
    results: list[CreateOutcome]


class ResultOutcome(Struct, omit_defaults=True):
    """One item of a batch of results: ``taskId`` and ``result``, or the error fields."""

    taskId: str | None = None
    result: Result | None = None
    error: str | None = None
    code: str | None = None
    field: str | None = None


class ResultOutcomes(Struct):
    results: list[ResultOutcome]


class Queues(Struct):
    queues: list[Queue]


class DeadLetterPage(Struct):
    tasks: list[DeadLetter]
    nextCursor: str | None


class InFlightPage(Struct):
    tasks: list[Task]
    nextCursor: str | None


class AdminTask(Struct):
    """A task as operators see it: its result (null until it has one) and when
    it was dead-lettered (null unless it is in the DLQ)."""

    task: Task
    result: Result | None
    deadLetteredAt: datetime | None


class Requeued(Struct):
    requeued: int


class Removed(Struct):
    removed: int


class Status(Struct, omit_defaults=True):
    status: str
    error: str | None = None


# One JSON decoder per request body, each decoding raw bytes straight into its Struct.
request_decoders: dict[type, msgspec.json.Decoder] = {
    kind: msgspec.json.Decoder(kind)
    for kind in (CreateTask, ClaimRequest, LeaseBody, HeartbeatRequest, NackRequest, ResultRequest,
                 BatchResultItem, CreateBatch, ClaimBatchRequest, ResultBatch, SubscribeRequest,
                 Ids, CleanupRequest)
}
# strict=False: stored times are float seconds, decoded into datetimes.
stored_task_decoder = msgspec.msgpack.Decoder(StoredTask, strict=False)
stored_result_decoder = msgspec.msgpack.Decoder(StoredResult, strict=False)
stored_callback_decoder = msgspec.msgpack.Decoder(StoredCallback)


def callback_of(raw: bytes) -> CallbackState:
    """Return the API view of a stored callback record."""
    s = stored_callback_decoder.decode(raw)
    return CallbackState(status=CALLBACK_STATUSES[s.status], attempts=s.attempts,
                         lastError=s.lastError)
json_encoder = msgspec.json.Encoder()
