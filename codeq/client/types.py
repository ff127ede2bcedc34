"""What the client returns: the API's task, and results with their JSON decoded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgspec import Struct

from codeq.schemas import Task


class Result(Struct, kw_only=True):
    """A task's result: ``result`` and ``artifacts`` as the worker sent them (decoded)."""

    taskId: str
    status: str
    result: Any = None
    error: str | None = None
    artifacts: Any = None
    completedAt: datetime


class TaskResult(Struct):
    task: Task
    result: Result


__all__ = ["Result", "Task", "TaskResult"]
