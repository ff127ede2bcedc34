"""Prometheus metrics at ``/metrics``, summed over every server process.

Each process counts in plain memory (a dict increment on the hot path) and
writes a snapshot of its counts to a shared directory every second and when
it stops; a scrape, answered by whichever process the connection reaches,
adds its own live counts to the others' snapshots, and prometheus-client
renders the text. So counts from other processes are up to a second old,
and a process that exits leaves its last counts in the sums, as Prometheus
counters must. (prometheus-client's own multiprocess mode writes a
memory-mapped file on every increment, after a getpid(): 12 % of a server
process' CPU in the full cycle, measured.) Queue depths are read from the
store at scrape time, O(commands) (engine/admin.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "CODEQ_METRICS_DIR"


def prepare() -> str | None:
    """Make the snapshot directory the server processes share, unless the
    operator named one; return the directory made here (to remove at exit)."""
    if os.environ.get(ENV):
        os.makedirs(os.environ[ENV], exist_ok=True)
        return None
    path = tempfile.mkdtemp(prefix="codeq-metrics-")
    os.environ[ENV] = path
    return path


def forget(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)
