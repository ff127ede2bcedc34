"""Prometheus metrics at ``/metrics``, summed over every server process.

prometheus-client's multiprocess mode: each process writes its counters and
histograms to memory-mapped files in one directory, and a scrape (answered
by whichever process the connection reaches) sums them all. ``prepare``
makes that directory before any process imports prometheus-client (it picks
its storage at import). Queue depths are read from the store at scrape time,
O(commands) (engine/admin.py), never kept in the processes.
"""

from __future__ import annotations

import os
import shutil
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> str | None:
    """Point prometheus-client at a fresh directory unless the operator gave
    one; return the directory made here (to remove at exit)."""
    if os.environ.get(ENV):
        return None
    path = tempfile.mkdtemp(prefix="codeq-metrics-")
    os.environ[ENV] = path
    return path


def forget(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def process_died(pid: int) -> None:
    """A server process exited: its gauges leave the sums (counters stay)."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
