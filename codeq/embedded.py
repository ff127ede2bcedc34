"""The embedded store: a local kvrocks or redis-server that ``codeq serve``
starts, supervises and stops when no store URL is given."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("codeq.store")
PR_SET_PDEATHSIG = 1


# Looked up once here: a child between fork and exec must not load libraries.
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies, so a killed
    ``codeq serve`` never leaves a store or a server process behind."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM a child, SIGKILL it after ``timeout`` s; return its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_bind(port: int) -> bool:
    """Whether a server could listen on this loopback port now."""
    with socket.socket() as s:
        # As a server binds: connections of a previous run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ping(url_host: str | None, port: int | None, path: str | None, timeout: float = 0.5) -> bool:
    """Return whether a store answers PING on a TCP port or unix socket."""
    try:
        if path:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                return _ping(sock)
        with socket.create_connection((url_host, port), timeout) as sock:
            return _ping(sock)
    except OSError:
        return False


def _ping(sock: socket.socket) -> bool:
    sock.sendall(b"PING\r\n")
    return sock.recv(64).startswith(b"+PONG")


class EmbeddedStore:
    """One store process with its data under ``data_dir``, every write persisted:
    redis-server with its append-only file, or KVRocks with its write-ahead log."""

    def __init__(self, data_dir: str, binary: str | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        found = binary or shutil.which("kvrocks") or shutil.which("redis-server")
        if found is None:
            raise RuntimeError("no store: install kvrocks or redis-server, or pass --store-url")
        self.binary: str = found
        self.kind = "kvrocks" if Path(self.binary).name.startswith("kvrocks") else "redis"
        # What the store replays after a crash, for the logs.
        self.journal = "write-ahead log" if self.kind == "kvrocks" else "append-only file"
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket_path = str(self.data_dir / "store.sock")
        self.conf = self.data_dir / "kvrocks.conf"
        # KVRocks listens on TCP only: keep the port of an earlier run of this
        # data dir, so a store still running there is found.
        self.port: int | None = None
        if self.kind == "kvrocks" and self.conf.exists():
            found_port = re.search(r"^port (\d+)$", self.conf.read_text(), re.MULTILINE)
            self.port = int(found_port.group(1)) if found_port else None

    @property
    def url(self) -> str:
        if self.kind == "redis":
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        """Return whether a store answers at this data dir's address."""
        if self.kind == "redis":
            return ping(None, None, self.socket_path)
        return self.port is not None and ping("127.0.0.1", self.port, None)

    def _command(self) -> list[str]:
        if self.kind == "redis":
            # appendfsync everysec: the AOF is written before replies are sent,
            # so a crash of the store process loses nothing acknowledged.
            return [self.binary, "--port", "0", "--unixsocket", self.socket_path,
                    "--unixsocketperm", "700", "--dir", str(self.data_dir),
                    "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                    "--daemonize", "no", "--loglevel", "warning"]
        if self.port is None or (self.proc is None and not can_bind(self.port)):
            # A first start whose last run's port is taken moves; a restart
            # keeps its port, which the server processes connect to.
            self.port = free_port()
        # kvrocks takes its settings from a file (not every key is a flag);
        # its RocksDB write-ahead log keeps acknowledged writes across a crash.
        self.conf.write_text(f"bind 127.0.0.1\nport {self.port}\ndir {self.data_dir}\n"
                             "daemonize no\n")
        return [self.binary, "-c", str(self.conf)]

    def start(self, timeout: float = 30.0) -> None:
        """Start the store and wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.answers():
            # Two stores on one data dir would corrupt it.
            raise RuntimeError(f"a store is already running on {self.data_dir} "
                               "(another codeq serve?)")
        if self.kind == "redis" and os.path.exists(self.socket_path):
            os.unlink(self.socket_path)  # left by a crash; redis would not bind
        log_file = open(self.data_dir / "store.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self._command(), stdout=log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=die_with_parent)
        log_file.close()
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; "
                                   f"see {self.data_dir / 'store.log'}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} did not answer within {timeout:g} s")
            time.sleep(0.05)
        log.info("embedded %s ready at %s (data in %s)", self.kind, self.url, self.data_dir)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the store (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
        self.proc = None
