"""``codeq serve`` itself: help, embedded store, several processes, crashes."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis

from codeq.config import OPTIONS
from codeq.embedded import EmbeddedStore
from codeq.keys import QueueKeys
from tests.support import (
    STORE_KIND,
    CodeqServer,
    alive,
    children,
    cmdline,
    codeq_cli,
    new_store,
    not_on_cluster,
    poll_waiting,
    wait_until,
)

V1 = "/v1/codeq"
STORE_PROCESS = "kvrocks" if STORE_KIND == "kvrocks" else "redis-server"
EMBEDDED = not_on_cluster("the embedded store is one local process (the redis and kvrocks "
                           "legs test it)")


def test_help_documents_every_setting():
    proc = codeq_cli("serve", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for option in OPTIONS:
        assert option.flag in out
        assert option.env in out
    assert "--store" in out


def test_bad_settings_exit_with_a_clear_message():
    proc = codeq_cli("serve", "--backoff-policy", "x")
    assert proc.returncode == 2
    assert "backoff" in proc.stderr
    proc = codeq_cli("serve", "--port", "0x")
    assert proc.returncode == 2
    assert "port must be a int" in proc.stderr


@EMBEDDED
def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = codeq_cli("serve", "--port", str(port), "--data-dir", str(tmp_path))
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    # The embedded store it had started is stopped again.
    assert (tmp_path / "store.log").exists()
    assert not embedded_store(str(tmp_path)).answers()


@pytest.fixture(scope="module")
def embedded():
    """codeq serve with defaults, no store URL, two server processes."""
    data_dir = tempfile.mkdtemp(prefix="codeq-data-")
    server = CodeqServer("--data-dir", data_dir, "--workers", "2", "--log-level", "warning")
    server.start()
    yield server, data_dir
    server.stop()


def embedded_store(data_dir: str) -> EmbeddedStore:
    """The embedded store a codeq serve runs (or ran) on ``data_dir``."""
    binary = "kvrocks" if STORE_KIND == "kvrocks" else STORE_PROCESS
    return EmbeddedStore(data_dir, binary=binary)


def store_of(data_dir: str) -> redis.Redis:
    return redis.Redis.from_url(embedded_store(data_dir).url, protocol=2)


@EMBEDDED
def test_embedded_store_persists_every_write(embedded):
    server, data_dir = embedded
    pids = children(server.proc.pid)
    assert any(STORE_PROCESS in cmdline(p) for p in pids)
    with store_of(data_dir) as store:
        if STORE_KIND == "redis":
            assert store.config_get("appendonly") == {"appendonly": "yes"}
        else:
            assert store.config_get("rocksdb.write_options.disable_wal") == {
                "rocksdb.write_options.disable_wal": "no"}
        assert store.config_get("dir")["dir"] == str(Path(data_dir).resolve())


@EMBEDDED
def test_long_polls_are_woken_across_processes(embedded):
    server, _ = embedded
    results = []

    def poll():
        with httpx.Client(base_url=server.base, timeout=30) as api:
            started = time.monotonic()
            resp = api.post(f"{V1}/tasks/claim", headers={"X-Worker-Id": "w"},
                            json={"commands": ["x.proc"], "waitSeconds": 20})
            results.append((resp.status_code, time.monotonic() - started))

    threads = [threading.Thread(target=poll) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # let every poll reach its wait
    for _ in range(6):
        # A fresh connection each time: the kernel spreads them over both processes.
        resp = httpx.post(server.base + f"{V1}/tasks", json={"command": "x.proc", "payload": {}})
        assert resp.status_code == 202
    for t in threads:
        t.join(30)
    assert [code for code, _ in results] == [200] * 6
    assert max(elapsed for _, elapsed in results) < 5


@EMBEDDED
def test_due_tasks_and_expired_leases_handled_within_a_second_by_default(embedded):
    server, data_dir = embedded
    q = QueueKeys("default", "x.tick")
    with httpx.Client(base_url=server.base, timeout=10) as api, store_of(data_dir) as store:
        task = api.post(f"{V1}/tasks", json={"command": "x.tick", "payload": {},
                                             "delaySeconds": 0.5}).json()
        due = datetime.fromisoformat(task["visibleAt"]).timestamp()
        wait_until(lambda: store.lrange(q.ready_tier(0), 0, -1) == [task["id"].encode()],
                   5, 0.01, "promotion without a claim")
        assert time.time() - due < 1.0

        leased = api.post(f"{V1}/tasks/claim", headers={"X-Worker-Id": "w"},
                          json={"commands": ["x.tick"], "leaseSeconds": 1}).json()
        lease_end = datetime.fromisoformat(leased["leaseUntil"]).timestamp()
        wait_until(lambda: api.get(f"{V1}/tasks/{task['id']}").json()["status"] == "PENDING",
                   5, 0.01, "requeue of the expired lease")
        assert time.time() - lease_end < 1.0


@EMBEDDED
def test_a_crashed_server_process_is_replaced_and_nothing_is_lost(embedded):
    server, _ = embedded
    with httpx.Client(base_url=server.base, timeout=10) as api:
        ids = [api.post(f"{V1}/tasks", json={"command": "x.crash", "payload": {}}).json()["id"]
               for _ in range(20)]
        def server_processes() -> set[int]:
            # Spawned server processes; not the store, nor multiprocessing's tracker.
            return {p for p in children(server.proc.pid)
                    if "spawn_main" in cmdline(p) and alive(p)}

        workers = server_processes()
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), 5, what="the victim to die")
        wait_until(lambda: len(server_processes() - {victim}) == 2, 30, 0.1,
                   "a replacement server process")
        for task_id in ids:
            resp = wait_until(lambda t=task_id: (r := api.get(f"{V1}/tasks/{t}")).status_code
                              == 200 and r, 10)
            assert resp.json()["status"] == "PENDING"


@EMBEDDED
def test_a_crashed_embedded_store_is_restarted_and_keeps_every_task(embedded):
    server, _ = embedded
    with httpx.Client(base_url=server.base, timeout=10) as api:
        ids = [api.post(f"{V1}/tasks", json={"command": "x.store", "payload": {}}).json()["id"]
               for _ in range(20)]
        store_pid = next(p for p in children(server.proc.pid) if STORE_PROCESS in cmdline(p))
        os.kill(store_pid, signal.SIGKILL)
        wait_until(lambda: api.get("/readyz").status_code == 503, 10, 0.01, "503 while down")
        wait_until(lambda: api.get("/readyz").status_code == 200, 30, 0.1, "the store back")
        assert any(STORE_PROCESS in cmdline(p) for p in children(server.proc.pid))
        for task_id in ids:
            assert api.get(f"{V1}/tasks/{task_id}").json()["status"] == "PENDING"


@EMBEDDED
def test_shutdown_stops_the_store_and_a_restart_keeps_the_tasks():
    data_dir = tempfile.mkdtemp(prefix="codeq-data-")
    server = CodeqServer("--data-dir", data_dir, "--log-level", "warning").start()
    with httpx.Client(base_url=server.base, timeout=10) as api:
        task_id = api.post(f"{V1}/tasks", json={"command": "x.keep", "payload": {}}).json()["id"]
    store_pids = [p for p in children(server.proc.pid) if STORE_PROCESS in cmdline(p)]
    assert len(store_pids) == 1
    assert server.stop() == 0
    wait_until(lambda: not alive(store_pids[0]), 10, what="the store to stop")

    # KVRocks listens on TCP: if another program took its port meanwhile, the
    # store moves to a free one (Redis' unix socket is the data dir's own).
    squatter = socket.create_server(("127.0.0.1", embedded_store(data_dir).port or 0))
    again = CodeqServer("--data-dir", data_dir, "--log-level", "warning").start()
    try:
        with httpx.Client(base_url=again.base, timeout=10) as api:
            assert api.get(f"{V1}/tasks/{task_id}").json()["status"] == "PENDING"
    finally:
        again.stop()
        squatter.close()


def test_shutdown_ends_long_polls_at_once(store_server):
    server = CodeqServer("--store-url", store_server.url, "--log-level", "warning").start()
    results = {}

    def poll():
        with httpx.Client(base_url=server.base, timeout=40) as api:
            started = time.monotonic()
            resp = api.post(f"{V1}/tasks/claim", headers={"X-Worker-Id": "w"},
                            json={"commands": ["x.drain"], "waitSeconds": 30})
            results["status"], results["elapsed"] = resp.status_code, time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    with store_server.client() as store:
        poll_waiting(store, "x.drain")
    started = time.monotonic()
    assert server.stop() == 0
    thread.join(10)
    assert results["status"] == 204
    assert results["elapsed"] < 10
    assert time.monotonic() - started < 10


@EMBEDDED
def test_a_killed_serve_leaves_nothing_running_and_frees_its_data_dir():
    data_dir = tempfile.mkdtemp(prefix="codeq-data-")
    server = CodeqServer("--data-dir", data_dir, "--workers", "2", "--log-level", "warning")
    server.start()
    try:
        second = codeq_cli("serve", "--port", "0", "--data-dir", data_dir)
        assert second.returncode == 1
        assert "already running" in second.stderr

        kids = children(server.proc.pid)
        assert sum(STORE_PROCESS in cmdline(p) for p in kids) == 1
        assert sum("spawn_main" in cmdline(p) for p in kids) == 2
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        for pid in kids:
            wait_until(lambda p=pid: not alive(p), 15, 0.05, f"orphan {cmdline(pid)} to exit")
    finally:
        server.stop()

    again = CodeqServer("--data-dir", data_dir, "--log-level", "warning").start()
    assert again.stop() == 0


def test_a_store_of_another_layout_is_refused_with_a_clear_message():
    store = new_store().start()
    try:
        with store.client() as view:
            view.sadd("codeq:tenants", "default")  # what codeQ 0.1 left behind
        proc = codeq_cli("serve", "--port", "0", "--store-url", store.url, "--workers", "2")
        assert proc.returncode == 1
        assert "codeQ 0.1" in proc.stderr and "flush" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        store.cleanup()
