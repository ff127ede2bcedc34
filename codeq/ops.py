"""The operators' commands of the ``codeq`` CLI: tasks, queues, the DLQ, a worker.

Each talks to a running codeQ over HTTP (``--url`` / ``CODEQ_URL``, ``--token`` /
``CODEQ_TOKEN``) through codeq.client; tables for people by default,
``--json`` for scripts; an error is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

DEFAULT_URL = "http://127.0.0.1:8080"


def add_commands(sub: Any) -> None:
    """Add the operators' subcommands to the ``codeq`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("CODEQ_URL", DEFAULT_URL),
                        help="codeQ's base URL [env CODEQ_URL] (default: %(default)s)")
    common.add_argument("--token", default=os.environ.get("CODEQ_TOKEN"),
                        help="bearer token [env CODEQ_TOKEN]")
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")

    task = sub.add_parser("task", help="create a task, read one or its result")
    tasks = task.add_subparsers(dest="action", required=True)
    create = tasks.add_parser("create", parents=[common], help="create a task")
    create.add_argument("command_name", metavar="COMMAND")
    create.add_argument("payload", help="the payload, as JSON")
    create.add_argument("--priority", type=int, default=0)
    create.add_argument("--delay", type=float, help="seconds before it may be claimed")
    create.add_argument("--max-attempts", type=int)
    create.add_argument("--idempotency-key")
    get = tasks.add_parser("get", parents=[common], help="read a task")
    get.add_argument("id")
    result = tasks.add_parser("result", parents=[common], help="read a task's result")
    result.add_argument("id")
    result.add_argument("--wait", type=float, default=0, help="seconds to wait for it (≤ 60)")

    sub.add_parser("queues", parents=[common], help="every queue with its depths (admin)")

    dlq = sub.add_parser("dlq", help="list, requeue or purge dead-lettered tasks (admin)")
    dlqs = dlq.add_subparsers(dest="action", required=True)
    listing = dlqs.add_parser("list", parents=[common], help="dead-lettered tasks, oldest first")
    listing.add_argument("command_name", metavar="COMMAND")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--cursor")
    for name, text in (("requeue", "back to PENDING, attempts reset"),
                       ("purge", "remove for good")):
        action = dlqs.add_parser(name, parents=[common], help=text)
        action.add_argument("command_name", metavar="COMMAND")
        action.add_argument("ids", nargs="*", help="task ids (none: the oldest 500)")
        if name == "purge":
            action.add_argument("--yes", action="store_true",
                                help="confirm: purged tasks cannot be brought back")

    worker = sub.add_parser("worker", parents=[common],
                            help="run the Worker that module:attr names")
    worker.add_argument("target", help="module:attribute, a codeq.worker.Worker (or a "
                                       "function returning one)")


def run(args: argparse.Namespace) -> int:
    from codeq.client import Client
    from codeq.client.errors import CodeqError

    if args.command == "worker":
        return _worker(args.target)
    try:
        with Client(args.url, args.token, retries=2) as codeq:
            out, table = _call(codeq, args)
    except CodeqError as exc:
        code = f" ({exc.code})" if exc.code else ""
        print(f"codeq: {exc.message}{code}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"codeq: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(msgspec.json.encode(out).decode())
    else:
        print(table)
    return 0


def _call(codeq: Any, args: argparse.Namespace) -> tuple[Any, str]:
    if args.command == "task":
        if args.action == "create":
            try:
                payload = json.loads(args.payload)
            except json.JSONDecodeError as exc:
                raise ValueError(f"payload is not JSON: {exc}") from None
            key = args.idempotency_key
            task = codeq.create(args.command_name, payload, priority=args.priority,
                                delay=args.delay, max_attempts=args.max_attempts,
                                **({"idempotency_key": key} if key else {}))
            return task, _fields(task, ("id", "command", "status", "priority", "visibleAt"))
        if args.action == "get":
            task = codeq.get(args.id)
            return task, _fields(task, ("id", "command", "status", "attempts", "maxAttempts",
                                        "workerId", "leaseUntil", "error", "payload"))
        done = codeq.result(args.id, wait=args.wait)
        return done, _fields(done.result, ("taskId", "status", "result", "error",
                                           "completedAt"))
    if args.command == "queues":
        queues = codeq.queues()
        return {"queues": queues}, _table(
            ("COMMAND", "READY", "DELAYED", "IN PROGRESS", "DLQ", "OLDEST READY (s)"),
            [(q.command, q.ready, q.delayed, q.inProgress, q.dlq,
              "" if q.oldestReadyAgeSeconds is None else f"{q.oldestReadyAgeSeconds:.1f}")
             for q in queues])
    if args.action == "list":
        page = codeq.dlq(args.command_name, args.limit, args.cursor)
        table = _table(("ID", "ATTEMPTS", "DEAD-LETTERED AT", "ERROR"),
                       [(t.id, t.attempts, t.deadLetteredAt.isoformat(), t.error or "")
                        for t in page.tasks])
        if page.nextCursor:
            table += f"\nmore: --cursor {page.nextCursor}"
        return page, table
    if args.action == "requeue":
        count = codeq.requeue(args.command_name, args.ids or None)
        return {"requeued": count}, f"requeued {count}"
    if not args.yes:
        raise ValueError("purge removes tasks for good: add --yes to confirm")
    count = codeq.purge(args.command_name, args.ids or None)
    return {"removed": count}, f"removed {count}"


def _fields(obj: Any, names: Sequence[str]) -> str:
    rows = []
    for name in names:
        value = getattr(obj, name, None)
        if value is None:
            continue
        if isinstance(value, dict | list):
            value = json.dumps(value)
        rows.append((name, str(value)))
    width = max(len(n) for n, _ in rows)
    return "\n".join(f"{n.ljust(width)}  {v}" for n, v in rows)


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _worker(target: str) -> int:
    from codeq.worker import Worker

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        print("codeq: worker needs module:attribute", file=sys.stderr)
        return 2
    sys.path.insert(0, os.getcwd())
    try:
        found: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        print(f"codeq: cannot load {target}: {exc}", file=sys.stderr)
        return 2
    worker = found if isinstance(found, Worker) else found()
    if not isinstance(worker, Worker):
        print(f"codeq: {target} is not a codeq.worker.Worker", file=sys.stderr)
        return 2
    worker.run()
    return 0
