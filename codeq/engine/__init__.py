"""Queue semantics: the state machine as Lua scripts, and the upkeep loops."""

from codeq.engine.notify import Notifier
from codeq.engine.queue import Engine

__all__ = ["Engine", "Notifier"]
