"""Test helpers: real store and service processes, polls with deadlines.

The store the tests start is redis-server, or KVRocks when CODEQ_TEST_STORE
is ``kvrocks`` (its binary from CODEQ_KVROCKS, PATH, or the shared/bin folder
beside the checkout). Service processes run the ``codeq`` command installed
next to this Python, from a directory outside the checkout, so they use the
installed package exactly as users get it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from codeq.embedded import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STORE_KIND = os.environ.get("CODEQ_TEST_STORE", "redis")
CODEQ = str(Path(sys.executable).with_name("codeq"))

# Every process a test starts, so the session can stop any a failing test left.
_STARTED: list[StoreServer | CodeqServer] = []


def find_kvrocks() -> str | None:
    """Return the KVRocks binary to test with, if there is one."""
    for candidate in (os.environ.get("CODEQ_KVROCKS"), shutil.which("kvrocks"),
                      str(ROOT.parent / "shared" / "bin" / "kvrocks")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def kvrocks_dir() -> str:
    """Return a directory holding the KVRocks binary under the name ``kvrocks``."""
    binary = find_kvrocks()
    assert binary is not None
    if os.path.basename(binary) == "kvrocks":
        return os.path.dirname(binary)
    link_dir = os.path.join(tempfile.gettempdir(), f"codeq-kvrocks-{os.getuid()}")
    os.makedirs(link_dir, exist_ok=True)
    link = os.path.join(link_dir, "kvrocks")
    if not os.path.exists(link):
        os.symlink(binary, link)
    return link_dir


def codeq_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``codeq`` process: none of the caller's CODEQ_* settings, and
    KVRocks first on PATH in the KVRocks leg (so the embedded store is KVRocks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEQ_")}
    if STORE_KIND == "kvrocks":
        env["PATH"] = f"{kvrocks_dir()}:{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def codeq_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``codeq`` command to completion."""
    return subprocess.run([CODEQ, *args], cwd=tempfile.gettempdir(), capture_output=True,
                          text=True, timeout=timeout, env=codeq_env())


def stop_all() -> None:
    """Stop every server process still running (by its PID)."""
    while _STARTED:
        _STARTED.pop().stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class StoreServer:
    """A redis-server or KVRocks on a free loopback port with a temporary data dir."""

    def __init__(self, kind: str = STORE_KIND, *, appendonly: bool = True,
                 password: str | None = None, unixsocket: bool = False,
                 cluster_node_timeout: int = 0) -> None:
        self.kind = kind
        self.binary = REDIS_SERVER if kind == "redis" else find_kvrocks()
        if self.binary is None:
            raise RuntimeError("no kvrocks binary found")
        self.dir = tempfile.mkdtemp(prefix=f"codeq-{kind}-")
        self.port = free_port()
        self.password = password
        self.socket_path = os.path.join(self.dir, "store.sock") if unixsocket else None
        self.appendonly = appendonly
        self.cluster_node_timeout = cluster_node_timeout  # ms; 0: not a cluster node
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        assert self.binary is not None
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", self.dir, "--daemonize", "no"]
        if self.kind == "redis":
            args += ["--save", "", "--appendonly", "yes" if self.appendonly else "no",
                     "--appendfsync", "everysec", "--loglevel", "warning"]
        # KVRocks always persists through its write-ahead log.
        if self.password:
            args += ["--requirepass", self.password]
        if self.socket_path:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.cluster_node_timeout:
            args += ["--cluster-enabled", "yes", "--cluster-config-file",
                     os.path.join(self.dir, "nodes.conf"),
                     "--cluster-node-timeout", str(self.cluster_node_timeout)]
        return args

    def start(self) -> StoreServer:
        log = open(os.path.join(self.dir, "store.log"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _STARTED.append(self)
        wait_until(self._ready, 15, what=f"{self.kind} on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.kind} exited with {self.proc.returncode}")
        client = self.client()
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        # RESP2, as codeQ speaks it (KVRocks refuses RESP3 by default).
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5, protocol=2)

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClusterStore:
    """A Redis Cluster of ``masters`` masters with one replica each, on loopback.

    Made by ``redis-cli --cluster create``; a failover (a master SIGKILLed)
    is noticed within about twice ``node_timeout`` ms.
    """

    def __init__(self, masters: int = 3, node_timeout: int = 1000) -> None:
        self.kind = "cluster"
        self.nodes = [StoreServer("redis", cluster_node_timeout=node_timeout)
                      for _ in range(masters * 2)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.addr for n in self.nodes) + "/"

    def start(self) -> ClusterStore:
        for node in self.nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *(n.addr for n in self.nodes),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        wait_until(self.healthy, 30, what="the cluster to form")
        return self

    def healthy(self) -> bool:
        """Every live node sees the whole cluster up, each slot with a master."""
        for node in self.nodes:
            if node.proc is None:
                continue
            client = node.client()
            try:
                info = client.execute_command("CLUSTER", "INFO")
            except redis.RedisError:
                return False
            finally:
                client.close()
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
                return False
        return True

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, protocol=2,
                                  socket_timeout=5)

    def masters(self) -> list[StoreServer]:
        """The nodes serving slots now, by CLUSTER NODES."""
        live = next(n for n in self.nodes if n.proc is not None)
        client = live.client()
        try:
            raw = client.execute_command("CLUSTER", "NODES")
        finally:
            client.close()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        ports = {int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
                 for line in text.splitlines()
                 if "master" in line.split()[2] and "fail" not in line.split()[2]}
        return [n for n in self.nodes if n.port in ports]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


class CodeqServer:
    """A real ``codeq serve`` process on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = list(args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = tempfile.mktemp(prefix="codeq-serve-", suffix=".log")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> CodeqServer:
        env = codeq_env(self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [CODEQ, "serve", "--port", str(self.port), *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir(),
        )
        log.close()
        _STARTED.append(self)
        try:
            wait_until(self._healthy, timeout, what=f"codeq serve on port {self.port}")
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.log()}") from None
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"codeq serve exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text()[-5000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout)
        self.proc = None
        return code


def children(pid: int) -> list[int]:
    """Return the child processes of ``pid``."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and all its descendants."""
    return [pid] + [p for kid in children(pid) for p in process_tree(kid)]


def alive(pid: int) -> bool:
    """Return whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """Split one HTTP response off ``raw``: its status, headers (lower-case
    names), body (framed by content-length; none without one), and the rest."""
    top, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0))
    return int(status_line.split()[1]), headers, rest[:length], rest[length:]


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key of the store with its serialized value, to prove nothing changed."""
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def journal_position(client: redis.Redis) -> int:
    """How far the store's journal has grown: Redis' AOF size, KVRocks' WAL sequence."""
    if STORE_KIND == "redis":
        return int(client.info("persistence")["aof_current_size"])
    return int(client.info()["sequence"])


@contextlib.contextmanager
def refusing_writes(client: redis.Redis) -> Iterator[str]:
    """Make the store refuse writes; yield the error it gives.

    Redis: out of memory (maxmemory 1, noeviction). KVRocks has no maxmemory:
    it refuses writes as a read-only replica of an address nobody serves.
    """
    if STORE_KIND == "redis":
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        try:
            yield "OOM"
        finally:
            client.config_set("maxmemory", 0)
    else:
        client.execute_command("SLAVEOF", "127.0.0.1", "1")
        try:
            yield "READONLY"
        finally:
            client.execute_command("SLAVEOF", "NO", "ONE")


class StallingProxy:
    """A TCP proxy to the store that can stop forwarding without closing.

    It plays a NAT or firewall that drops a flow silently: the connections it
    stalls stay open on both ends and carry nothing more. ``stall(marker)``
    stalls every open connection whose client has sent ``marker`` (e.g. the
    CLIENT SETNAME of codeQ's pub/sub connection); ``refuse_new`` makes new
    connections close at once, as an unreachable store would.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refuse_new = False
        self._lock = threading.Lock()
        self._conns: list[_ProxiedConnection] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.refuse_new:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns.append(_ProxiedConnection(client, upstream))

    def matching(self, marker: bytes) -> list[_ProxiedConnection]:
        with self._lock:
            return [c for c in self._conns if marker in c.sent and not c.closed]

    def stall(self, marker: bytes) -> list[_ProxiedConnection]:
        """Stall the open connections whose client sent ``marker``; return them."""
        found = self.matching(marker)
        for conn in found:
            conn.stalled.set()
        return found

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for conn in self._conns:
                conn.close()


class _ProxiedConnection:
    """One client connection and its upstream, pumped by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.sent = b""  # the first bytes the client sent, to recognise it by
        self.stalled = threading.Event()
        self.closed = False
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if src is self.client and len(self.sent) < 4096:
                    self.sent += data
                if self.stalled.is_set():
                    continue  # swallowed: the other end never hears of it
                dst.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Receiver:
    """A webhook receiver on loopback that records every POST it gets.

    ``answers`` are the statuses of the first requests in turn (then 200);
    ``hang`` holds each request unanswered until ``release()``.
    """

    def __init__(self, answers: list[int] | None = None, hang: bool = False) -> None:
        import http.server

        self.answers = list(answers or [])
        self.hang = hang
        self.released = threading.Event()
        self.got: list[tuple[str, dict[str, str], bytes]] = []  # (path, headers, body)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.got.append((self.path, dict(self.headers), body))
                    status = receiver.answers.pop(0) if receiver.answers else 200
                if receiver.hang:
                    receiver.released.wait(60)
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # the listen backlog: codeQ sends many at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self.hang = False
        self.released.set()

    def bodies(self) -> list[dict[str, Any]]:
        import json

        with self.lock:
            return [json.loads(body) for _, _, body in self.got]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` POSTs arrived; return their bodies."""
        wait_until(lambda: len(self.got) >= count, timeout, what=f"{count} webhook POST(s)")
        return self.bodies()
