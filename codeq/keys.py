"""Every store key and channel name codeQ uses, built in one place.

Layout (cluster-safe: one script only ever touches keys of one hash tag):

    codeq:{<tenant>:<command>}:ready:<0..9>   list of task ids, FIFO per tier
    codeq:{<tenant>:<command>}:tiers          zset of the tiers whose list may hold ids
    codeq:{<tenant>:<command>}:delayed        zset id -> visible at (ms)
    codeq:{<tenant>:<command>}:inflight       zset id -> lease until (ms)
    codeq:{<tenant>:<command>}:tasks          hash id -> task record (msgpack array)
    codeq:{<tenant>:<command>}:payloads       hash id -> payload (JSON text, never rewritten)
    codeq:{<tenant>:<command>}:results        hash id -> result record (msgpack array)
    codeq:{<tenant>:<command>}:done           zset id -> finished at (ms), for retention
    codeq:{<tenant>:<command>}:dlq            zset id -> dead-lettered at (ms)
    codeq:{<tenant>:<command>}:idem           hash idempotency key -> id
    codeq:{<tenant>:<command>}:waiting        string, set while a claim long-polls
    codeq:{<tenant>:<command>}:rwaiters       set of ids whose result is long-polled
    codeq:{<tenant>:<command>}:outbox         zset id -> when its result callback is next
                                              due (ms); while a dispatcher holds it, the
                                              end of its lease
    codeq:{<tenant>:<command>}:callbacks      hash id -> callback record (msgpack array)
    codeq:{<tenant>}:commands                 set of the tenant's commands that hold tasks
    codeq:{<tenant>}:subs                     hash subscription id -> record (msgpack array)
    codeq:{<tenant>}:subs:expiry              zset subscription id -> expires at (ms)
    codeq:{<tenant>}:subs:last                hash subscription id -> last notified (ms)
    codeq:{<tenant>}:subs:turns               hash groupId -> notifications of the group
    codeq:{<tenant>}:subs:command:<command>   set of the ids of subscriptions naming it
    codeq:{<tenant>}:subs:any                 set of the ids of subscriptions naming none
    codeq:{<tenant>}:throughput:<minute>      hash <second>:<series> -> tasks created, completed
                                              or failed in that second, summed over the server
                                              processes (the dashboard's charts); each minute
                                              (Unix time // 60) expires 15 min after its last
                                              write
    codeq:tenants                             set of tenants
    codeq:{due:<0..7>}:queues                 zset <tenant>:<command> -> when that queue next
                                              needs upkeep (ms); a queue's shard by crc32
    codeq:{due:<0..7>}:upkeep                 zset <tenant>:<command> -> lease of its running
                                              upkeep (ms)
    codeq:{queues}:ids                        hash <tenant>:<command> -> queue number
    codeq:{queues}:names                      hash queue number -> <tenant>:<command>
    codeq:layout                              string: the version of this layout ("2")
    codeq:{queues}:shards                     string: the --queue-shards of the store's queues
    codeq:{rl:<caller>}:<op>                  hash: a caller's token bucket for one operation
                                              (<caller> a digest of who it is)

With ``--queue-shards N`` above 1, a command's tasks are spread over N
queues: shard 0 is laid out as above, shard k (1 .. N-1) under the hash tag
``{<tenant>:<command>#<k>}`` (``#`` cannot occur in a command, so no
command's tag can be another's shard). Each shard is a queue of its own,
with its own number; in the due index its member is ``<tenant>:<command>#<k>``.

A task id carries its queue's number (see ids.py): there is no per-task key
outside the queue's hash tag. Commands are limited to ``[A-Za-z0-9._:-]``
(``NAME_PATTERN``) and tenants to the same without ``:`` (``TENANT_PATTERN``):
neither can contain the ``{}`` of a hash tag, and ``{tenant:command}`` splits
one way only.
"""

from __future__ import annotations

import hashlib
import zlib

PRIORITY_MIN = 0
PRIORITY_MAX = 9
# "$(?!\n)": Python's $ also matches before a final newline (JSON Schema's,
# in the OpenAPI document, does not); the lookahead refuses it in both.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$(?!\n)"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$(?!\n)"

TENANTS = b"codeq:tenants"
EVENTS_CHANNEL = b"codeq:events"
QUEUE_IDS = b"codeq:{queues}:ids"
QUEUE_NAMES = b"codeq:{queues}:names"
LAYOUT = b"codeq:layout"
LAYOUT_VERSION = b"2"
QUEUE_SHARDS = b"codeq:{queues}:shards"


SHARD_MARK = "#"


def shard_name(command: str, shard: int) -> str:
    """Return the name of a command's queue shard (shard 0 is the command)."""
    return f"{command}{SHARD_MARK}{shard}" if shard else command


def command_of(name: str) -> str:
    """Return the command of a queue (a command's, or one shard of it)."""
    return name.partition(SHARD_MARK)[0]


class QueueKeys:
    """The keys of one queue (a command's, or one shard of it), under one hash tag.

    ``name`` is the queue's (``<command>#<k>`` for shard k > 0), ``command``
    the command its tasks are reported under.
    """

    __slots__ = (
        "callbacks",
        "command",
        "delayed",
        "dlq",
        "done",
        "idem",
        "inflight",
        "name",
        "outbox",
        "payloads",
        "ready",
        "results",
        "rwaiters",
        "shard",
        "tasks",
        "tenant",
        "tiers",
        "waiting",
    )

    def __init__(self, tenant: str, name: str) -> None:
        self.tenant = tenant
        self.name = name
        self.command = command_of(name)
        self.shard = int(name[len(self.command) + 1:] or 0)
        prefix = f"codeq:{{{tenant}:{name}}}:"
        # Highest tier first: the order claim scripts scan them in.
        self.ready: tuple[bytes, ...] = tuple(
            f"{prefix}ready:{p}".encode() for p in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)
        )
        self.tiers = f"{prefix}tiers".encode()
        self.delayed = f"{prefix}delayed".encode()
        self.inflight = f"{prefix}inflight".encode()
        self.tasks = f"{prefix}tasks".encode()
        self.payloads = f"{prefix}payloads".encode()
        self.results = f"{prefix}results".encode()
        self.done = f"{prefix}done".encode()
        self.dlq = f"{prefix}dlq".encode()
        self.idem = f"{prefix}idem".encode()
        self.waiting = f"{prefix}waiting".encode()
        self.rwaiters = f"{prefix}rwaiters".encode()
        self.outbox = f"{prefix}outbox".encode()
        self.callbacks = f"{prefix}callbacks".encode()

    def ready_tier(self, priority: int) -> bytes:
        """Return the ready list of one priority tier."""
        return self.ready[PRIORITY_MAX - priority]


def tenant_commands(tenant: str) -> bytes:
    """Return the set of the tenant's commands whose queues hold tasks."""
    return f"codeq:{{{tenant}}}:commands".encode()


class SubscriptionKeys:
    """The keys of a tenant's availability subscriptions, all under its hash tag."""

    __slots__ = ("any", "expiry", "last", "prefix", "subs", "turns")

    def __init__(self, tenant: str) -> None:
        self.prefix = f"codeq:{{{tenant}}}:subs"
        self.subs = self.prefix.encode()
        self.expiry = f"{self.prefix}:expiry".encode()
        self.last = f"{self.prefix}:last".encode()
        self.turns = f"{self.prefix}:turns".encode()
        self.any = f"{self.prefix}:any".encode()

    def command(self, command: str) -> bytes:
        return f"{self.prefix}:command:{command}".encode()

    def sets(self, event_types: list[str]) -> tuple[bytes, ...]:
        """The command sets a subscription naming ``event_types`` is in."""
        return tuple(self.command(c) for c in event_types) if event_types else (self.any,)


def throughput(tenant: str, minute: int) -> bytes:
    """Return one minute of the tenant's throughput series (per-second counts)."""
    return f"codeq:{{{tenant}}}:throughput:{minute}".encode()


def rate_bucket(principal: str, op: str) -> bytes:
    """Return the token bucket of one caller and operation (rate limits)."""
    digest = hashlib.sha256(principal.encode()).hexdigest()[:24]
    return f"codeq:{{rl:{digest}}}:{op}".encode()


# The due index is spread over a fixed number of hash tags: a tick reads all
# of them whatever the number of tenants and queues, and on a cluster the
# hints of a busy store land on several nodes.
DUE_SHARDS = 8


def queue_member(tenant: str, command: str) -> bytes:
    """Return a queue's member in the due index (tenants hold no ':')."""
    return f"{tenant}:{command}".encode()


def due_shard(member: bytes) -> int:
    """Return the due-index shard of a queue's member."""
    return zlib.crc32(member) % DUE_SHARDS


def due(shard: int) -> bytes:
    """Return one shard of the due index: queue -> when it next needs upkeep (ms).

    A lower bound: every change that brings a queue's next due time closer
    (a delayed create, a claim, a heartbeat, a delayed nack) lowers its entry
    after the change; the upkeep puts the queue back with its exact next time.
    """
    return f"codeq:{{due:{shard}}}:queues".encode()


def upkeep(shard: int) -> bytes:
    """Return the leases of the running upkeeps of one due-index shard's queues."""
    return f"codeq:{{due:{shard}}}:upkeep".encode()
