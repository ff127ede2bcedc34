"""Every store key and channel name codeQ uses, built in one place.

Layout (cluster-safe: one script only ever touches keys of one hash tag):

    codeq:{<tenant>:<command>}:ready:<0..9>   list of task ids, FIFO per tier
    codeq:{<tenant>:<command>}:delayed        zset id -> visible at (ms)
    codeq:{<tenant>:<command>}:inflight       zset id -> lease until (ms)
    codeq:{<tenant>:<command>}:tasks          hash id -> task record (msgpack)
    codeq:{<tenant>:<command>}:results        hash id -> result record (msgpack)
    codeq:{<tenant>:<command>}:done           zset id -> finished at (ms), for retention
    codeq:{<tenant>:<command>}:dlq            zset id -> dead-lettered at (ms)
    codeq:{<tenant>:<command>}:idem           hash idempotency key -> id
    codeq:{<tenant>:<command>}:waiting        string, set while a claim long-polls
    codeq:{<tenant>:<command>}:rwaiters       set of ids whose result is long-polled
    codeq:{<tenant>/<id>}:command             string: which command a task id belongs to
    codeq:{<tenant>}:commands                 set of the tenant's commands that hold tasks
    codeq:tenants                             set of tenants
    codeq:{due:<0..7>}:queues                 zset <tenant>:<command> -> when that queue next
                                              needs upkeep (ms); a queue's shard by crc32
    codeq:{due:<0..7>}:upkeep                 zset <tenant>:<command> -> lease of its running
                                              upkeep (ms)

Commands are limited to ``[A-Za-z0-9._:-]`` (``NAME_PATTERN``) and tenants to
the same without ``:`` (``TENANT_PATTERN``): neither can contain the ``{}`` of a
hash tag or the ``/`` of an id key, and ``{tenant:command}`` splits one way only.
"""

from __future__ import annotations

import zlib

PRIORITY_MIN = 0
PRIORITY_MAX = 9
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$"

TENANTS = b"codeq:tenants"
EVENTS_CHANNEL = b"codeq:events"


class QueueKeys:
    """The keys of one (tenant, command) queue, all under one hash tag."""

    __slots__ = (
        "command",
        "delayed",
        "dlq",
        "done",
        "idem",
        "inflight",
        "ready",
        "results",
        "rwaiters",
        "tasks",
        "tenant",
        "waiting",
    )

    def __init__(self, tenant: str, command: str) -> None:
        self.tenant = tenant
        self.command = command
        prefix = f"codeq:{{{tenant}:{command}}}:"
        # Highest tier first: the order claim scripts scan them in.
        self.ready: tuple[bytes, ...] = tuple(
            f"{prefix}ready:{p}".encode() for p in range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)
        )
        self.delayed = f"{prefix}delayed".encode()
        self.inflight = f"{prefix}inflight".encode()
        self.tasks = f"{prefix}tasks".encode()
        self.results = f"{prefix}results".encode()
        self.done = f"{prefix}done".encode()
        self.dlq = f"{prefix}dlq".encode()
        self.idem = f"{prefix}idem".encode()
        self.waiting = f"{prefix}waiting".encode()
        self.rwaiters = f"{prefix}rwaiters".encode()

    def ready_tier(self, priority: int) -> bytes:
        """Return the ready list of one priority tier."""
        return self.ready[PRIORITY_MAX - priority]


def task_command(tenant: str, task_id: str) -> bytes:
    """Return the key naming the command a task id belongs to."""
    return f"codeq:{{{tenant}/{task_id}}}:command".encode()


def tenant_commands(tenant: str) -> bytes:
    """Return the set of the tenant's commands whose queues hold tasks."""
    return f"codeq:{{{tenant}}}:commands".encode()


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
