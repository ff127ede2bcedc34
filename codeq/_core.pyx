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
import logging
import time
from collections import deque
from urllib.parse import parse_qs, quote, unquote, urlsplit

import hiredis

from codeq.errors import StoreUnavailable

__all__ = ["Client", "ClusterClient", "ClusterSubscriber", "ReplicationUnconfirmed", "ReplyError",
           "Script", "Store", "StoreUnavailable", "connect", "encode_command", "key_slot",
           "parse_url"]

ReplyError = hiredis.ReplyError


class ReplicationUnconfirmed(StoreUnavailable):
    """A script ran, but its replicas did not confirm it in time (WAIT).

    ``reply`` is what the script answered: a caller that took something
    (a claim) can give it back.
    """

    def __init__(self, message, reply):
        super().__init__(message)
        self.reply = reply

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
    ``unix:///path/to.sock[?db=N]``, and
    ``redis+cluster://[:password@]host:port[,host:port...]/``: the seed nodes
    of a cluster (``nodes``; ``host`` and ``port`` are the first).
    """
    parts = urlsplit(url)
    settings = {"host": None, "port": None, "path": None, "db": 0,
                "username": None, "password": None, "nodes": []}
    if parts.scheme == "redis+cluster":
        settings["nodes"] = _seeds(parts.netloc.rpartition("@")[2])
        settings["host"], settings["port"] = settings["nodes"][0]
        if parts.path.strip("/"):
            raise ValueError("a cluster has one database: drop the path of the store URL")
    elif parts.scheme == "redis":
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
        raise ValueError(f"unsupported store URL scheme {parts.scheme!r} "
                         "(use redis://, unix:// or redis+cluster://)")
    if parts.username:
        settings["username"] = unquote(parts.username)
    if parts.password:
        settings["password"] = unquote(parts.password)
    return settings


def _seeds(str hosts):
    nodes = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster seed {item!r} must be host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


cdef inline bint _is_message(object reply):
    return (type(reply) is list and len(reply) >= 3
            and (reply[0] == b"message" or reply[0] == b"pmessage"))


def _consume(fut):
    if not fut.cancelled():
        fut.exception()  # a failed PING is handled by the watchdog, not here


async def _stop(task):
    """Cancel a background task and wait for it to end."""
    if task is not None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


async def _all_connected(ready, clients, timeout):
    """Wait for ``ready``, then for each of ``clients()`` (called then) to be
    connected, all within ``timeout``; False if it runs out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        await asyncio.wait_for(asyncio.shield(ready), timeout)
    except asyncio.TimeoutError:
        return False
    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    return all(await asyncio.gather(*(c.wait_connected(left) for c in clients())))


class Script:
    """A Lua script known by its SHA1, loaded once and called by EVALSHA."""

    __slots__ = ("name", "source", "sha", "numkeys", "writes")

    def __init__(self, name, source, numkeys, writes=True):
        self.name = name
        self.source = source.encode() if isinstance(source, str) else source
        self.sha = hashlib.sha1(self.source).hexdigest().encode()
        self.numkeys = numkeys
        self.writes = writes  # whether a cluster client waits for replicas after it

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
    cdef int attempts

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
        self.attempts = 0
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
        await _stop(self.task)
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
            # Given a cluster's seeds (the pub/sub connection), each attempt
            # tries the next: any node hears every PUBLISH of the cluster.
            host, port = (s["host"], s["port"]) if not s["nodes"] else \
                s["nodes"][self.attempts % len(s["nodes"])]
            self.attempts += 1
            await asyncio.wait_for(loop.create_connection(factory, host, port), 5.0)
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


# -- cluster -------------------------------------------------------------------

DEF SLOTS = 16384
# MOVED redirects one command may follow (a map being rewritten settles in
# one or two).
DEF MAX_REDIRECTS = 5
# Seconds a command keeps following ASK and retrying TRYAGAIN while its slot
# is being migrated, before the caller gets StoreUnavailable. A script names
# keys that may not exist yet (empty priority tiers), so Redis answers it
# TRYAGAIN until the whole slot has moved; a slot of a few hundred keys
# moves in milliseconds.
DEF MIGRATING_SECONDS = 2.0
# Seconds between slot map refreshes while every node answers; while a node
# of the map is unreachable (a failover under way), every REFRESH_DOWN.
DEF REFRESH_IDLE = 10.0
DEF REFRESH_DOWN = 0.25

cdef unsigned short _CRC16[256]


cdef void _crc16_table():
    cdef unsigned int i, j, c
    for i in range(256):
        c = i << 8
        for j in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        _CRC16[i] = c & 0xFFFF


_crc16_table()


cdef inline unsigned int _slot(const char* key, Py_ssize_t n):
    """The cluster slot of a key: CRC16 (XMODEM) of its hash tag, if any."""
    cdef Py_ssize_t i, start = 0, end = n
    cdef unsigned int crc = 0
    for i in range(n):
        if key[i] == b"{":
            for end in range(i + 1, n):
                if key[end] == b"}":
                    break
            else:
                end = n
            if end < n and end > i + 1:
                start = i + 1
            else:
                end = n
            break
    for i in range(start, end):
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ <unsigned char>key[i]) & 0xFF]
    return crc & (SLOTS - 1)


cpdef unsigned int key_slot(object key) except? 0:
    """Return the cluster slot (0..16383) of a key, honouring ``{hash tags}``."""
    cdef const char* data
    cdef Py_ssize_t n
    if type(key) is str:
        data = PyUnicode_AsUTF8AndSize(key, &n)
        return _slot(data, n)
    if type(key) is bytes:
        return _slot(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
    raise TypeError(f"a key is bytes or str, not {type(key).__name__}")


# Commands that name no key: sent to any node.
_KEYLESS = frozenset((b"PING", b"PUBLISH", b"SCRIPT", b"CLUSTER", b"INFO", b"CLIENT", b"TIME",
                      b"ECHO", b"WAIT", b"DBSIZE"))


cdef object _key_of(tuple args):
    name = args[0]
    if name == b"EVALSHA" or name == b"EVAL":
        return args[3] if int(args[2]) else None
    if len(args) < 2 or (name.upper() if type(name) is bytes else name.upper().encode()) in _KEYLESS:
        return None
    return args[1]


def connect(str url, *, int wait_replicas=0, **options):
    """Return the store client a URL asks for: ClusterClient for
    ``redis+cluster://``, Client otherwise (``wait_replicas``: cluster only)."""
    if url.startswith("redis+cluster://"):
        return ClusterClient(url, wait_replicas=wait_replicas, **options)
    if wait_replicas:
        raise ValueError("waiting for replicas needs a redis+cluster:// store URL")
    return Client(url, **options)


cdef class _Call:
    """One command on a cluster, following redirects until it has a reply."""

    cdef ClusterClient cluster
    cdef readonly tuple args
    cdef readonly object key
    cdef readonly object outer
    cdef public Client node  # the node it was last sent to
    cdef int redirects
    cdef double retry_until

    def __cinit__(self, ClusterClient cluster, tuple args, key, outer, Client node):
        self.cluster = cluster
        self.args = args
        self.key = key
        self.outer = outer
        self.node = node
        self.redirects = 0
        self.retry_until = 0.0

    def on_reply(self, inner):
        outer = self.outer
        if outer.done():
            if not inner.cancelled():
                inner.exception()  # the caller went away
            return
        if inner.cancelled():
            outer.cancel()
            return
        exc = inner.exception()
        if exc is None:
            outer.set_result(inner.result())
            return
        if type(exc) is ReplyError:
            text = str(exc)
            if text.startswith(("MOVED ", "ASK ", "TRYAGAIN")):
                if self._may_retry(text):
                    self.cluster._follow(self, text)
                    return
                exc = StoreUnavailable(f"store kept redirecting a command: {text}")
            elif text.startswith(("CLUSTERDOWN", "READONLY", "LOADING", "MASTERDOWN")):
                # A failover or a restart under way: the map may have changed.
                self.cluster.want_refresh()
                exc = StoreUnavailable(f"store cluster cannot serve it now: {text}")
        elif isinstance(exc, StoreUnavailable):
            self.cluster.want_refresh()
        outer.set_exception(exc)

    cdef bint _may_retry(self, str text):
        if text.startswith("MOVED"):
            self.redirects += 1
            return self.redirects <= MAX_REDIRECTS
        # ASK and TRYAGAIN alternate while the slot moves: bounded in time.
        now = time.monotonic()
        if not self.retry_until:
            self.retry_until = now + MIGRATING_SECONDS
        return now < self.retry_until

    def fail(self, exc):
        if not self.outer.done():
            self.outer.set_exception(exc)


cdef class ClusterClient:
    """A store client for a Redis Cluster (or clustered KVRocks).

    Keeps the slot map (CLUSTER SLOTS) and one auto-pipelining ``Client`` per
    master; each command goes to the master of its key's slot (a script's:
    its first key). MOVED updates the map and resends, ASK resends once with
    ASKING, TRYAGAIN resends after a pause: each means the command did not
    run. A command in flight when a node is lost is not resent, as on one
    node: its caller gets StoreUnavailable, and the map is refreshed until
    the slot has a reachable master again (a replica promoted).

    With ``wait_replicas`` N, a script's reply is returned only once N
    replicas of its node have it (WAIT, shared by the scripts answered in one
    loop turn); else the caller gets StoreUnavailable, the change possibly
    made. Without it a master's failover can lose the last changes it
    acknowledged, as replication is asynchronous.
    """

    cdef readonly str url
    cdef readonly str name
    cdef dict settings
    cdef double command_timeout
    cdef public object on_connect
    cdef public object last_error
    cdef readonly int wait_replicas
    cdef int wait_timeout_ms
    cdef object loop
    cdef dict scripts
    cdef dict nodes          # "host:port" -> Client (masters, and seeds while unknown)
    cdef list slots          # slot -> Client of its master, or None
    cdef object refreshed    # Event: set when a refresh is wanted
    cdef object task
    cdef object ready
    cdef dict waits          # Client -> WAIT future of this loop turn
    cdef set redirecting     # tasks following redirects
    cdef dict redirected     # "host:port" -> when a redirect last named it
    cdef bint closing
    cdef readonly int refreshes
    cdef readonly long moved      # redirects followed, for the metrics
    cdef readonly long asks
    cdef readonly long tryagains

    def __init__(self, str url, *, str name="codeq", double command_timeout=DEF_COMMAND_TIMEOUT,
                 on_connect=None, int wait_replicas=0, double wait_timeout=1.0, channel=None,
                 on_push=None):
        if channel is not None:
            raise ValueError("subscribe with a Client on the cluster's URL: any node hears "
                             "every PUBLISH")
        self.url = url
        self.name = name
        self.settings = parse_url(url)
        if not self.settings["nodes"]:
            raise ValueError("a cluster URL is redis+cluster://host:port[,host:port...]/")
        self.command_timeout = command_timeout
        self.on_connect = on_connect
        self.last_error = None
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = int(wait_timeout * 1000)
        self.loop = None
        self.scripts = {}
        self.nodes = {}
        self.slots = [None] * SLOTS
        self.refreshed = None
        self.task = None
        self.ready = None
        self.waits = {}
        self.redirecting = set()
        self.redirected = {}
        self.closing = False
        self.refreshes = 0
        self.moved = self.asks = self.tryagains = 0

    @property
    def is_connected(self):
        return self.ready is not None and self.ready.done() and any(
            node.is_connected for node in self.nodes.values())

    def register(self, script):
        self.scripts[script.sha] = script
        for node in self.nodes.values():
            node.register(script)

    def start(self):
        if self.task is None:
            self.loop = asyncio.get_running_loop()
            self.refreshed = asyncio.Event()
            self.ready = self.loop.create_future()
            self.task = self.loop.create_task(self._refresher())

    async def wait_connected(self, timeout=None):
        """Wait until the slot map is known and every master connected."""
        self.start()
        return await _all_connected(self.ready, self._serving, timeout)

    async def close(self):
        self.closing = True
        await _stop(self.task)
        self.task = None
        nodes, self.nodes = list(self.nodes.values()), {}
        self.slots = [None] * SLOTS
        await asyncio.gather(*(n.close() for n in nodes), return_exceptions=True)

    def want_refresh(self):
        if self.refreshed is not None:
            self.refreshed.set()

    # -- commands -------------------------------------------------------------

    cdef Client _node_of(self, key):
        cdef Client node
        if key is None:
            for node in self.nodes.values():
                if node.is_connected:
                    return node
            raise StoreUnavailable("store unavailable: no cluster node is reachable")
        node = self.slots[key_slot(key)]
        if node is None:
            self.want_refresh()
            raise StoreUnavailable("store unavailable: no cluster node serves the slot of "
                                   f"{key!r} yet")
        return node

    cpdef object execute(self, tuple args):
        """Queue one command for its slot's master; return its future."""
        return self.execute_on(_key_of(args), args)

    cpdef object execute_on(self, object key, tuple args):
        """Queue a command for the master of ``key``'s slot (None: any node)."""
        return self._submit(key, args).outer

    cdef _Call _submit(self, object key, tuple args):
        cdef Client node = self._node_of(key)
        try:
            inner = node.execute(args)
        except StoreUnavailable:
            self.want_refresh()
            raise
        call = _Call(self, args, key, self.loop.create_future(), node)
        inner.add_done_callback(call.on_reply)
        return call

    async def call(self, *args):
        return await self.execute(args)

    async def evalsha(self, script, tuple keys, tuple args):
        """Run a script on the master of its first key's slot, loading it
        there again if that node lost it."""
        key = keys[0] if keys else None
        cmd = (b"EVALSHA", script.sha, len(keys)) + keys + args
        call = self._submit(key, cmd)
        try:
            reply = await call.outer
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.execute_on(key, (b"SCRIPT", b"LOAD", script.source))
            call = self._submit(key, cmd)
            reply = await call.outer
        if self.wait_replicas and script.writes:
            await self._replicated(call.node, reply)
        return reply

    async def _replicated(self, Client node, reply):
        # The node that ran the script (after an ASK, not the slot's master).
        fut = self.waits.get(node)
        if fut is None:
            # WAIT covers every write sent before it on the connection: one
            # for all the replies of this loop turn.
            fut = node.execute((b"WAIT", self.wait_replicas, self.wait_timeout_ms))
            self.waits[node] = fut
            self.loop.call_soon(self.waits.pop, node, None)
        acked = await asyncio.shield(fut)
        if acked < self.wait_replicas:
            raise ReplicationUnconfirmed(
                f"store did not confirm the change on {self.wait_replicas} replica(s) within "
                f"{self.wait_timeout_ms} ms ({acked} did)", reply)

    def _follow(self, _Call call, str text):
        if text.startswith("MOVED"):
            self.moved += 1
        elif text.startswith("ASK"):
            self.asks += 1
        else:
            self.tryagains += 1
        # Kept until done: the loop holds only weak references to tasks.
        task = asyncio.ensure_future(self._redirect(call, text))
        self.redirecting.add(task)
        task.add_done_callback(self.redirecting.discard)

    async def _redirect(self, _Call call, str text):
        cdef Client node
        try:
            if text.startswith("TRYAGAIN"):
                await asyncio.sleep(0.02)  # the move usually ends within a few
                node = self._node_of(call.key)
            else:
                kind, slot, addr = text.split()[:3]
                node = await self._node_at(addr)
                if kind == "MOVED":
                    self.slots[int(slot)] = node
                    self.want_refresh()
                else:
                    node.execute((b"ASKING",)).add_done_callback(_consume)
            call.node = node
            node.execute(call.args).add_done_callback(call.on_reply)
        except Exception as exc:
            call.fail(exc if isinstance(exc, StoreUnavailable) else
                      StoreUnavailable(f"store redirect failed: {exc}"))

    async def _node_at(self, str addr):
        cdef Client node = self.nodes.get(addr)
        self.redirected[addr] = time.monotonic()  # kept a while, though it serves no slot yet
        if node is None:
            node = self._add(addr)
        if not node.is_connected and not await node.wait_connected(self.command_timeout / 2):
            raise StoreUnavailable(f"store node {addr} is unreachable")
        return node

    def _serving(self):
        """The Clients of the masters that serve slots."""
        serving = set(self.slots)
        serving.discard(None)
        return serving

    def masters(self):
        """Return the addresses ("host:port") of the masters serving slots."""
        serving = self._serving()
        return sorted(addr for addr, node in self.nodes.items() if node in serving)

    def node_url(self, str addr):
        """Return the URL of one node, with the cluster's credentials."""
        s = self.settings
        auth = ""
        if s["password"]:
            auth = (quote(s["username"], safe="") if s["username"] else "") + ":" + \
                quote(s["password"], safe="") + "@"
        host, _, port = addr.rpartition(":")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        return f"redis://{auth}{host}:{port}"

    def subscriber(self, channel, on_push, on_connect=None, double command_timeout=5.0):
        """Return a subscription to ``channel`` that hears every node's PUBLISH."""
        return ClusterSubscriber(self, channel, on_push, on_connect, command_timeout)

    cdef Client _add(self, str addr):
        node = Client(self.node_url(addr), name=self.name,
                      command_timeout=self.command_timeout, on_connect=self._node_connected)
        for script in self.scripts.values():
            node.register(script)
        self.nodes[addr] = node
        node.start()
        return node

    def _node_connected(self):
        if self.on_connect is not None and self.ready is not None and self.ready.done():
            self.on_connect()

    # -- slot map -------------------------------------------------------------

    async def _refresher(self):
        cdef double delay = 0.05
        while not self.closing:
            try:
                await self._refresh()
            except (OSError, asyncio.TimeoutError, ReplyError, StoreUnavailable) as exc:
                self.last_error = exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except Exception as exc:  # a reply not understood: keep trying, say so
                self.last_error = StoreUnavailable(f"cluster map not understood: {exc!r}")
                logging.getLogger("codeq.store").exception("reading the cluster map failed")
                await asyncio.sleep(1.0)
                continue
            delay = 0.05
            self.refreshed.clear()
            down = any(not n.is_connected for n in self._serving())
            try:
                await asyncio.wait_for(self.refreshed.wait(),
                                       REFRESH_DOWN if down else REFRESH_IDLE)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(0.05)  # at most 20 refreshes a second

    async def _refresh(self):
        """Read the slot map from the first node that answers; open the new
        masters, close nodes that no longer serve slots."""
        candidates = [a for a, n in self.nodes.items() if n.is_connected]
        candidates += [a for a in self.nodes if a not in candidates]
        candidates += [f"{h}:{p}" for h, p in self.settings["nodes"]
                       if f"{h}:{p}" not in candidates]
        reply = None
        for addr in candidates:
            node = self.nodes.get(addr) or self._add(addr)
            if not node.is_connected and not await node.wait_connected(1.0):
                continue
            try:
                reply = await asyncio.wait_for(node.execute((b"CLUSTER", b"SLOTS")), 2.0)
            except (StoreUnavailable, ReplyError, asyncio.TimeoutError) as exc:
                self.last_error = exc
                continue
            if reply:
                host = addr.rpartition(":")[0]
                break
        if not reply:
            raise StoreUnavailable("no cluster node answered CLUSTER SLOTS with a map")
        slots = [None] * SLOTS
        for entry in reply:
            master = entry[2]
            addr = f"{master[0].decode() or host}:{master[1]}"
            node = self.nodes.get(addr) or self._add(addr)
            slots[entry[0]:entry[1] + 1] = [node] * (entry[1] + 1 - entry[0])
        self.slots = slots
        self.refreshes += 1
        serving = self._serving()
        now = time.monotonic()
        for addr, node in list(self.nodes.items()):
            # A node a redirect named lately may be taking slots (a scale-out).
            if node not in serving and now - self.redirected.get(addr, 0.0) > 30.0:
                del self.nodes[addr]
                self.redirected.pop(addr, None)
                self.loop.create_task(node.close())
        self.last_error = None
        if not self.ready.done():
            self.ready.set_result(True)


class ClusterSubscriber:
    """A channel subscription that hears every PUBLISH of a cluster.

    Redis Cluster passes each PUBLISH to every node: one subscribed
    connection, to a master of the slot map (another once it has been down
    2 s), hears them all. A clustered KVRocks does not: there one subscribed
    connection per master is kept, in step with the map. Same surface as a
    subscribed ``Client``.
    """

    def __init__(self, ClusterClient cluster, channel, on_push, on_connect=None,
                 double command_timeout=DEF_COMMAND_TIMEOUT):
        self.cluster = cluster
        self.options = dict(name=cluster.name + "-events", channel=channel, on_push=on_push,
                            on_connect=on_connect, command_timeout=command_timeout)
        self.clients = {}  # "host:port" (or the URL, when one hears all) -> Client
        self.task = None
        self.known = None  # set once it is known whether every node hears all

    @property
    def is_connected(self):
        return bool(self.clients) and all(c.is_connected for c in self.clients.values())

    def start(self):
        if self.task is None:
            self.known = asyncio.get_running_loop().create_future()
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def wait_connected(self, timeout=None):
        self.start()
        return await _all_connected(self.known, lambda: list(self.clients.values()), timeout)

    async def close(self):
        await _stop(self.task)
        self.task = None
        clients, self.clients = list(self.clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    async def _run(self):
        cluster = self.cluster
        cluster.start()
        while True:
            try:
                await cluster.wait_connected(self.options["command_timeout"])
                info = await cluster.execute((b"INFO", b"server"))
                break
            except (StoreUnavailable, ReplyError, asyncio.TimeoutError):
                await asyncio.sleep(0.5)
        every_node_hears_all = b"kvrocks_version" not in info
        down_since = {}
        turn = 0
        while True:
            masters = cluster.masters()
            now = time.monotonic()
            for addr, client in self.clients.items():
                if client.is_connected:
                    down_since.pop(addr, None)
                else:
                    down_since.setdefault(addr, now)
            if not every_node_hears_all:
                wanted = set(masters)
            else:
                # One connection; moved to another master once down a while.
                wanted = set(self.clients)
                stale = any(now - t > 2.0 for t in down_since.values())
                if masters and (not wanted or stale):
                    turn += 1
                    wanted = {masters[turn % len(masters)]}
            for addr in wanted - set(self.clients):
                self.clients[addr] = Client(cluster.node_url(addr), **self.options)
                self.clients[addr].start()
            for addr in set(self.clients) - wanted:
                down_since.pop(addr, None)
                await self.clients.pop(addr).close()
            if not self.known.done():
                self.known.set_result(True)
            await asyncio.sleep(0.5)


Store = Client | ClusterClient  # what the engine is given
