"""The compiled core without a server: RESP bytes, replies in fragments, URLs."""

from __future__ import annotations

import asyncio

import pytest

import codeq._core as core
from codeq._core import ReplyError, encode_command, parse_url
from codeq.errors import StoreUnavailable


def test_compiled_module_is_loaded():
    assert core.__file__.endswith(".so"), core.__file__
    assert not hasattr(core, "__pyx_pure_python__")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((b"PING",), b"*1\r\n$4\r\nPING\r\n"),
        (("SET", "k", "v"), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        ((b"INCRBY", b"k", 42), b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$2\r\n42\r\n"),
        ((b"X", -7, 1.5), b"*3\r\n$1\r\nX\r\n$2\r\n-7\r\n$3\r\n1.5\r\n"),
        ((b"SET", "ключ", b""),
         b"*3\r\n$3\r\nSET\r\n$8\r\n" + "ключ".encode() + b"\r\n$0\r\n\r\n"),
        ((b"SET", b"a\r\nb"), b"*2\r\n$3\r\nSET\r\n$4\r\na\r\nb\r\n"),
    ],
)
def test_encode_command(args, expected):
    assert encode_command(*args) == expected


def test_encode_refuses_unknown_types():
    with pytest.raises(TypeError, match="cannot send dict"):
        encode_command(b"SET", {"a": 1})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6390/2", {"host": "127.0.0.1", "port": 6390, "db": 2}),
        ("redis://localhost", {"host": "localhost", "port": 6379, "db": 0}),
        ("redis://:s%40cret@h:1/0", {"host": "h", "port": 1, "password": "s@cret"}),
        ("redis://user:pw@h:1", {"username": "user", "password": "pw"}),
        ("unix:///tmp/r.sock?db=3", {"path": "/tmp/r.sock", "db": 3}),
    ],
)
def test_parse_url(url, expected):
    settings = parse_url(url)
    for key, value in expected.items():
        assert settings[key] == value


@pytest.mark.parametrize("url", ["http://x", "redis://h/notanumber", "unix://", "rediss://h"])
def test_parse_url_refuses(url):
    with pytest.raises(ValueError):
        parse_url(url)


class FakeTransport:
    def __init__(self):
        self.writes: list[bytes] = []
        self.aborted = False

    def write(self, data):
        self.writes.append(bytes(data))

    def abort(self):
        self.aborted = True


async def test_one_write_per_loop_turn_and_replies_in_fragments():
    loop = asyncio.get_running_loop()
    proto = core._Protocol(loop)
    transport = FakeTransport()
    proto.connection_made(transport)
    futs = [proto.send((b"GET", b"a")), proto.send((b"INCR", b"n")), proto.send((b"GET", b"b"))]
    assert transport.writes == []  # nothing written until the loop turns
    await asyncio.sleep(0)
    assert transport.writes == [b"".join(encode_command(b"GET", k) for k in (b"a",))
                                + encode_command(b"INCR", b"n") + encode_command(b"GET", b"b")]
    replies = b"$5\r\nhello\r\n-ERR not an integer\r\n*2\r\n:1\r\n$-1\r\n"
    for i in range(len(replies)):  # one byte at a time
        proto.data_received(replies[i:i + 1])
    assert await futs[0] == b"hello"
    with pytest.raises(ReplyError, match="not an integer"):
        await futs[1]  # an error fails only its own caller
    assert await futs[2] == [1, None]


async def test_cancelled_caller_does_not_shift_replies():
    loop = asyncio.get_running_loop()
    proto = core._Protocol(loop)
    proto.connection_made(FakeTransport())
    first, second = proto.send((b"GET", b"a")), proto.send((b"GET", b"b"))
    first.cancel()
    proto.data_received(b"$1\r\na\r\n$1\r\nb\r\n")
    assert await second == b"b"


async def test_connection_lost_fails_every_waiter():
    loop = asyncio.get_running_loop()
    proto = core._Protocol(loop)
    proto.connection_made(FakeTransport())
    futs = [proto.send((b"GET", b"a")) for _ in range(3)]
    proto.connection_lost(ConnectionResetError())
    for fut in futs:
        with pytest.raises(StoreUnavailable):
            await fut
    with pytest.raises(StoreUnavailable):
        proto.send((b"PING",))
