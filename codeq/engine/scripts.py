"""Load the Lua scripts of codeq/scripts, resolving their includes."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from codeq._core import Script

SCRIPT_DIR = Path(__file__).resolve().parent.parent / "scripts"
_INCLUDE = re.compile(r"^-- @include (\w+)$", re.MULTILINE)
_HEADER_KEY = re.compile(r"^\s*KEYS\[(\d+)(?:\.\.(\d+))?\]", re.MULTILINE)

# Scripts and how many keys each caller passes; a test checks every header
# against these counts.
NUMKEYS = {
    "queue_id": 2,
    "create": 7,
    "create_batch": 16,
    "claim": 16,
    "peek": 3,
    "heartbeat": 2,
    "abandon": 14,
    "nack": 21,
    "result": 7,
    "result_wait": 4,
    "tick": 23,
    "upkeep_take": 2,
    "upkeep_done": 2,
    "callback_take": 4,
    "callback_done": 2,
    "queue_stats": 15,
    "rate_take": 1,
    "dlq_requeue": 18,
    "dlq_purge": 9,
    "throughput_add": 1,
    # The subscription scripts take one more key per command set (at least one).
    "sub_put": 3,
    "sub_renew": 2,
    "sub_delete": 4,
    "sub_pick": 6,
}


def render(name: str) -> str:
    """Return a script's source with its includes inlined."""
    source = (SCRIPT_DIR / f"{name}.lua").read_text()

    def include(match: re.Match[str]) -> str:
        return (SCRIPT_DIR / "includes" / f"{match.group(1)}.lua").read_text()

    return _INCLUDE.sub(include, source)


def header_key_count(name: str) -> int:
    """Return how many KEYS a script's header documents."""
    source = (SCRIPT_DIR / f"{name}.lua").read_text()
    header = source.split("]]", 1)[0]
    highest = 0
    for match in _HEADER_KEY.finditer(header):
        highest = max(highest, int(match.group(2) or match.group(1)))
    return highest


# Scripts whose changes need no replica's confirmation (--store-wait-replicas):
# they change nothing, or only what may be lost in a failover (a result
# waiter's mark, a rate limit's bucket).
UNCONFIRMED = frozenset({"peek", "queue_stats", "result_wait", "rate_take"})


@cache
def load(name: str) -> Script:
    """Return the Script object for one operation."""
    return Script(name, render(name), NUMKEYS[name], writes=name not in UNCONFIRMED)


def all_scripts() -> list[Script]:
    """Return every script, for loading at start."""
    return [load(name) for name in NUMKEYS]
