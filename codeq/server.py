"""Run the service: the embedded store if asked, N server processes, supervision."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import uvloop

from codeq import metrics
from codeq.config import Settings, redact
from codeq.embedded import EmbeddedStore

if TYPE_CHECKING:
    from codeq.engine import Engine

log = logging.getLogger("codeq.server")

# Seconds a server process gets past shutdown_timeout to finish its shutdown.
_EXIT_GRACE = 3.0
GC_THRESHOLD = 20_000  # allocations between young-generation collections (default 700)


def setup_logging(level: str) -> None:
    from codeq.http.exchange import RequestIdFilter

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(process)d %(levelname)s "
                        "%(name)s [%(request_id)s]: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdFilter())


def build_engine(settings: Settings, store_url: str):
    """Return the engine of one server process, with its own connections."""
    from codeq._core import connect
    from codeq.engine import Engine, Notifier

    timeout = settings.store_timeout
    store = connect(store_url, name="codeq", command_timeout=timeout,
                    wait_replicas=settings.store_wait_replicas)
    return Engine(store, Notifier(store_url, timeout, store), settings)


def _worker_main(settings: Settings, store_url: str, sock: socket.socket) -> None:
    """Serve HTTP on an inherited listening socket until told to stop."""
    from codeq.api import create_app
    from codeq.embedded import die_with_parent

    if multiprocessing.parent_process() is not None:
        die_with_parent()
    setup_logging(settings.log_level)
    engine = build_engine(settings, store_url)
    service = create_app(engine, settings)
    # PERF: what start-up built lives as long as the process: keep it out of
    # every collection, and collect the young generation less often (each
    # request allocates a few dozen containers that refcounting frees).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    uvloop.run(_serve(settings, engine, service, sock))


async def _serve(settings: Settings, engine: Engine, service: Any, sock: socket.socket) -> None:
    """Serve until SIGINT or SIGTERM; then end the long polls and drain, bounded."""
    from codeq.http import HttpServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        engine.drain()  # long polls would hold the drain up to 60 s: end them now
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await HttpServer(service.app, settings, service.on_response).serve(sock, stop)


async def _check_store(settings: Settings, url: str) -> None:
    """Refuse, before any server process starts, a store of another key layout
    (LayoutMismatch); a store not reachable yet is checked by each process."""
    engine = build_engine(settings, url)
    engine.store.start()
    try:
        if await engine.store.wait_connected(settings.store_timeout):
            await engine.check_layout()
    finally:
        await engine.store.close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    setup_logging(settings.log_level)
    metrics_dir = metrics.prepare()  # before any server process imports prometheus-client
    store = None
    url = settings.store_url
    if not url:
        store = EmbeddedStore(settings.data_dir)
        store.start()
        url = store.url
    try:
        uvloop.run(_check_store(settings, url))
        sock = _listen(settings.host, settings.port)
        log.info("codeQ listening on http://%s:%d with %d process(es), store %s",
                 settings.host, sock.getsockname()[1], settings.workers, redact(url))
        if settings.auth == "off" and not _loopback(settings.host):
            log.warning("authentication is off on %s, a non-loopback address: anyone who "
                        "reaches the port can create, claim and finish any task (--auth on)",
                        settings.host)
        if store is None and settings.workers == 1:
            _worker_main(settings, url, sock)
            return 0
        return _supervise(settings, url, sock, store)
    finally:
        if store is not None:
            store.stop()
        metrics.forget(metrics_dir)


def _supervise(settings: Settings, url: str, sock: socket.socket,
               store: EmbeddedStore | None) -> int:
    """Keep N server processes (and the embedded store) running until stopped."""
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    procs: list[multiprocessing.process.BaseProcess] = []

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGHUP, forward)  # reread the tokens file, in every process

    def spawn(i: int) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker_main, args=(settings, url, sock),
                           name=f"codeq-server-{i}", daemon=False)
        proc.start()
        return proc

    procs.extend(spawn(i) for i in range(settings.workers))
    while not stopping.wait(0.5):
        if store is not None and not store.alive():
            log.error("embedded %s exited; restarting it, it recovers from its %s", store.kind,
                      store.journal)
            try:
                store.start()
            except RuntimeError:
                log.exception("embedded store failed to start; retrying")
        for i, proc in enumerate(procs):
            if not proc.is_alive():
                log.error("server process %s exited with %s; starting another",
                          proc.pid, proc.exitcode)
                procs[i] = spawn(i)
    # Our copy of the listening socket would keep it open after the server
    # processes close theirs: the kernel would queue new connections that no
    # one accepts, and reset them only when we exit.
    sock.close()
    for proc in procs:
        proc.terminate()
    # Each process drains for at most shutdown_timeout, then closes its
    # store connections; one that overruns that is killed.
    deadline = time.monotonic() + settings.shutdown_timeout + _EXIT_GRACE
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            log.error("server process %s still running after shutdown; killing it", proc.pid)
            proc.kill()
            proc.join()
    return 0
