"""Test helpers: real store and service processes, polls with deadlines.

The store the tests start is redis-server, or KVRocks when CODEQ_TEST_STORE
is ``kvrocks`` (its binary from CODEQ_KVROCKS, PATH, or the shared/bin folder
beside the checkout), or a Redis Cluster of three masters and three replicas
when it is ``cluster`` (``new_store``; tests that need one store process are
skipped there by ``not_on_cluster``). Service processes run the ``codeq`` command installed
next to this Python, from a directory outside the checkout, so they use the
installed package exactly as users get it.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from codeq.embedded import can_bind, free_port, stop_process
from codeq.keys import QueueKeys

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STORE_KIND = os.environ.get("CODEQ_TEST_STORE", "redis")
ON_CLUSTER = STORE_KIND == "cluster"
# The kind of one store process: a cluster's nodes are redis-servers.
NODE_KIND = "redis" if ON_CLUSTER else STORE_KIND
CODEQ = str(Path(sys.executable).with_name("codeq"))

# Every process a test starts, so the session can stop any a failing test left.
_STARTED: list[StoreServer | CodeqServer] = []


def not_on_cluster(reason: str) -> pytest.MarkDecorator:
    """Skip a test on the cluster leg, saying why it cannot apply to a cluster."""
    return pytest.mark.skipif(ON_CLUSTER, reason=f"cluster leg: {reason}")


def new_store(**options: Any) -> StoreServer | ClusterStore:
    """A store of this leg, not started: one process, or a cluster on the cluster leg."""
    return ClusterStore() if ON_CLUSTER else StoreServer(**options)


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
    if NODE_KIND == "kvrocks":
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


def poll_waiting(view: redis.Redis | redis.RedisCluster, command: str,
                 tenant: str = "default") -> None:
    """Wait until a long poll waits on the queue (the claim script marks it)."""
    waiting = QueueKeys(tenant, command).waiting
    wait_until(lambda: view.exists(waiting), 10, 0.01, f"a poll on {command} to wait")


def metric(base: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``, by GET /metrics."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name and labels.items() <= s.labels.items())


def cluster_port() -> int:
    """Return a free loopback port whose cluster bus port (10,000 above) is free too.

    Both lie below the kernel's ephemeral range (32768 up), so no outgoing
    connection takes either while the node is down, and a node restarted on
    its port finds it free; Redis refuses a cluster port above 55535.
    """
    for _ in range(1000):
        port = random.randrange(10000, 22768)
        pair = (port, port + 10000)
        # A cluster's nodes all draw their ports before any binds one.
        if not _CLUSTER_PORTS.intersection(pair) and all(can_bind(p) for p in pair):
            _CLUSTER_PORTS.update(pair)
            return port
    raise RuntimeError("no free pair of cluster ports")


_CLUSTER_PORTS: set[int] = set()


class StoreServer:
    """A redis-server or KVRocks on a free loopback port with a temporary data dir."""

    def __init__(self, kind: str = NODE_KIND, *, appendonly: bool = True,
                 password: str | None = None, unixsocket: bool = False,
                 cluster_node_timeout: int = 0) -> None:
        self.kind = kind
        self.binary = REDIS_SERVER if kind == "redis" else find_kvrocks()
        if self.binary is None:
            raise RuntimeError("no kvrocks binary found")
        self.dir = tempfile.mkdtemp(prefix=f"codeq-{kind}-")
        self.port = cluster_port() if cluster_node_timeout else free_port()
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
                     "--cluster-node-timeout", str(self.cluster_node_timeout),
                     # A replica's first sync at once, not after 5 s of waiting for others.
                     "--repl-diskless-sync-delay", "0"]
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
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, on loopback.

    Made by ``redis-cli --cluster create``; a failover (a master SIGKILLed)
    is noticed within about twice ``node_timeout`` ms.
    """

    def __init__(self, masters: int = 3, node_timeout: int = 1000, replicas: int = 1) -> None:
        self.kind = "cluster"
        self.replicas = replicas
        self.nodes = [StoreServer("redis", cluster_node_timeout=node_timeout)
                      for _ in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.addr for n in self.nodes) + "/"

    def start(self) -> ClusterStore:
        try:
            for node in self.nodes:
                node.start()
            made = subprocess.run(["redis-cli", "--cluster", "create",
                                   *(n.addr for n in self.nodes), "--cluster-replicas",
                                   str(self.replicas), "--cluster-yes"],
                                  capture_output=True, text=True, timeout=60)
            if made.returncode:
                raise AssertionError(f"redis-cli --cluster create failed:\n{made.stdout}"
                                     f"{made.stderr}")
            wait_until(self.healthy, 30, what="the cluster to form")
        except BaseException:
            self.cleanup()
            raise
        return self

    def live(self) -> list[StoreServer]:
        """The nodes whose process runs."""
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def ask(self, *args: str, node: StoreServer | None = None) -> Any:
        """Run one command on ``node`` (else the first live node) and return its reply."""
        client = (node or self.live()[0]).client()
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    _ask = ask

    def _text(self, *args: str, node: StoreServer | None = None) -> str:
        raw = self._ask(*args, node=node)
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def healthy(self) -> bool:
        """Every live node sees the whole cluster up, each slot with a master, every
        node it knows of reachable, each master with all its replicas, and one
        view of who serves each slot."""
        views = set()
        masters = len(self.nodes) // (1 + self.replicas)
        for node in self.live():
            try:
                info = self._text("CLUSTER", "INFO", node=node)
                nodes = self._text("CLUSTER", "NODES", node=node)
            except redis.RedisError:
                return False
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
            lines = [line.split() for line in nodes.splitlines() if line.strip()]
            if any("fail" in f[2] or f[7] != "connected" for f in lines):
                return False
            followed = Counter(f[3] for f in lines if "slave" in f[2])
            if len(followed) != masters or set(followed.values()) != {self.replicas}:
                return False
            if "myself,slave" in nodes and self.ask(
                    "INFO", "replication", node=node)["master_link_status"] != "up":
                return False  # not in sync yet: WAIT would count it out
            views.add(tuple(sorted(
                (line.split()[1], tuple(line.split()[8:]))
                for line in nodes.splitlines() if line.strip() and "master" in line.split()[2]
                and line.split()[8:])))
        return len(views) == 1

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.live()[0].port, protocol=2,
                                  socket_timeout=5)

    def masters(self) -> list[StoreServer]:
        """The nodes serving slots now, by CLUSTER NODES."""
        text = self._text("CLUSTER", "NODES")
        ports = {int(line.split()[1].split("@")[0].rsplit(":", 1)[1])
                 for line in text.splitlines()
                 if "master" in line.split()[2] and "fail" not in line.split()[2]
                 and line.split()[8:]}
        return [n for n in self.nodes if n.port in ports]

    def slot_ranges(self, node: StoreServer | None = None) -> list[tuple[int, int, StoreServer]]:
        """The slot map by CLUSTER SLOTS (as a client sees it, from ``node``):
        (first slot, last slot, master) for each range."""
        return [(start, end, next(n for n in self.nodes if n.port == master[1]))
                for start, end, master, *_ in self._ask("CLUSTER", "SLOTS", node=node)]

    def master_of(self, slot: int, node: StoreServer | None = None) -> StoreServer:
        """The node serving ``slot`` (as ``node`` sees it)."""
        for start, end, master in self.slot_ranges(node):
            if start <= slot <= end:
                return master
        raise AssertionError(f"no node serves slot {slot}")

    def node_id(self, node: StoreServer) -> str:
        return self._text("CLUSTER", "MYID", node=node)

    def replicas_of(self, master: StoreServer) -> list[StoreServer]:
        """The replicas of ``master`` (as its first live peer sees them)."""
        lines = self.ask("CLUSTER", "REPLICAS", self.node_id(master))
        ports = {int(line.split()[1].split(b"@")[0].rsplit(b":", 1)[1]) for line in lines}
        return [n for n in self.nodes if n.port in ports]

    def flushall(self) -> None:
        """Empty every master (their replicas follow)."""
        for node in self.masters():
            self._ask("FLUSHALL", node=node)

    def migrate_slot(self, slot: int, target: StoreServer, batch: int = 10,
                     between_batches: Callable[[], None] | None = None) -> int:
        """Move ``slot`` to ``target`` the way ``redis-cli --cluster reshard`` does:
        IMPORTING on the target, MIGRATING on the source, MIGRATE the keys in
        batches (``between_batches`` runs after each, while the slot is split),
        then SETSLOT NODE on the target, the source and every other master.
        Return how many keys moved."""
        source = self.master_of(slot)
        assert source is not target, f"slot {slot} is on {target.addr} already"
        source_id, target_id = self.node_id(source), self.node_id(target)
        self._ask("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id, node=target)
        self._ask("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id, node=source)
        moved = 0
        while True:
            keys = self._ask("CLUSTER", "GETKEYSINSLOT", str(slot), str(batch), node=source)
            if not keys:
                break
            self._ask("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys,
                      node=source)
            moved += len(keys)
            if between_batches is not None:
                between_batches()
        self._ask("CLUSTER", "SETSLOT", str(slot), "NODE", target_id, node=target)
        self._ask("CLUSTER", "SETSLOT", str(slot), "NODE", target_id, node=source)
        for other in self.masters():
            if other not in (source, target):
                self._ask("CLUSTER", "SETSLOT", str(slot), "NODE", target_id, node=other)
        return moved

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


def primaries(client: redis.Redis | redis.RedisCluster) -> list[redis.Redis]:
    """One client per store process serving keys: the client itself, or a
    cluster's masters."""
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def all_keys(client: redis.Redis | redis.RedisCluster, pattern: str = "*") -> list[bytes]:
    """Every key of the store (of every master of a cluster)."""
    return sorted(key for node in primaries(client) for key in node.keys(pattern))


def snapshot(client: redis.Redis | redis.RedisCluster) -> dict[bytes, bytes]:
    """Every key of the store with its serialized value, to prove nothing changed."""
    return {key: client.dump(key) for key in all_keys(client)}


def command_calls(client: redis.Redis | redis.RedisCluster, *names: str) -> int:
    """How many times the store (every master of a cluster) ran the commands
    ``names`` (lower case; ``cluster`` counts every ``cluster|...``) by INFO
    commandstats; none named: every command."""
    total = 0
    for node in primaries(client):
        stats = node.info("commandstats")
        total += sum(v["calls"] for k, v in stats.items()
                     if not names or k.removeprefix("cmdstat_").split("|")[0] in names)
    return total


def kill_clients(client: redis.Redis | redis.RedisCluster, name: str | None = None,
                 kind: str | None = None) -> int:
    """Drop every connection named ``name`` (or of type ``kind``, e.g. pubsub), on
    every node of a cluster, replicas too (a subscriber may be on any)."""
    nodes = ([client.get_redis_connection(n) for n in client.get_nodes()]
             if isinstance(client, redis.RedisCluster) else [client])
    killed = 0
    for node in nodes:
        if kind is not None:
            killed += node.client_kill_filter(_type=kind)
            continue
        for conn in node.client_list():
            if conn["name"] == name:
                killed += node.client_kill_filter(_id=conn["id"])
    return killed


async def settled(store: Any) -> None:
    """Wait until the store has run every command a codeq store client sent so
    far (hints are sent without waiting for them): a PING behind them on each
    connection, one per master of a cluster."""
    if not hasattr(store, "execute_on"):
        await store.call(b"PING")
        return
    from codeq._core import key_slot

    for start, end, *_ in await store.call(b"CLUSTER", b"SLOTS"):
        tag = next(t for t in (f"{{{n}}}" for n in range(100_000))
                   if start <= key_slot(t) <= end)
        await store.execute_on(tag, (b"PING",))


def journal_position(client: redis.Redis | redis.RedisCluster) -> int:
    """How far the store's journal has grown: Redis' AOF size (summed over a
    cluster's masters), KVRocks' WAL sequence."""
    if NODE_KIND == "redis":
        return sum(int(node.info("persistence")["aof_current_size"])
                   for node in primaries(client))
    return int(client.info()["sequence"])


@contextlib.contextmanager
def refusing_writes(client: redis.Redis | redis.RedisCluster) -> Iterator[str]:
    """Make the store refuse writes; yield the error it gives.

    Redis: out of memory (maxmemory 1, noeviction), on every master of a
    cluster. KVRocks has no maxmemory: it refuses writes as a read-only
    replica of an address nobody serves.
    """
    if NODE_KIND == "redis":
        nodes = primaries(client)
        for node in nodes:
            node.config_set("maxmemory-policy", "noeviction")
            node.config_set("maxmemory", 1)
        try:
            yield "OOM"
        finally:
            for node in nodes:
                node.config_set("maxmemory", 0)
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
