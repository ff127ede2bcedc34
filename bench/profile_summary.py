"""Summarize a py-spy profile in raw (collapsed) form: where a server process spends its CPU.

Record one ``codeq serve`` process while a bench runs, then summarize:

    py-spy record --nonblocking -r 200 -f raw -o prof.txt -p PID   # Ctrl-C to stop
    python bench/profile_summary.py prof.txt

Prints the share of samples by package (self time, where the sample's leaf
frame is) and the functions with the most self time. py-spy counts only
samples where a thread was running, so shares are of CPU, not of wall time.
Samples with no Python frame at all are native threads (e.g. a Rust server's
I/O threads): they show as ``(native)``. Shares by inclusive time are
not printed: uvloop resumes tasks from C, so a task's frames do not sit
under one root.
"""

from __future__ import annotations

import argparse
import collections
import re

PACKAGES = ("uvicorn", "granian", "falcon", "codeq/http", "codeq/api", "codeq/engine",
            "codeq/protocol", "asyncio", "uvloop", "msgspec", "httptools")
_LOCATION = re.compile(r"\((.*?)(?::\d+)?\)$")


def package(frame: str) -> str:
    """Return the package a collapsed-stack frame ``func (path:line)`` belongs to."""
    if not frame.strip():
        return "(native)"
    found = _LOCATION.search(frame)
    path = found.group(1) if found else frame
    for name in PACKAGES:
        if name in path:
            return name
    return "codeq (other)" if "codeq" in path else "other"


def summarize(path: str, top: int) -> None:
    by_function: collections.Counter[str] = collections.Counter()
    by_package: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            leaf = stack.split(";")[-1]
            total += int(count)
            by_function[leaf] += int(count)
            by_package[package(leaf)] += int(count)
    print(f"{total} samples; self time by package:")
    for name, n in by_package.most_common():
        print(f"  {100 * n / total:5.1f} %  {name}")
    print(f"top {top} functions by self time:")
    for name, n in by_function.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {name.strip() or '(native)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="py-spy record -f raw output")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    summarize(args.profile, args.top)


if __name__ == "__main__":
    main()
