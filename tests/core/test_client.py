"""The compiled client against a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest

from codeq._core import Client, ReplyError, Script
from codeq.errors import StoreUnavailable
from tests.support import STORE_KIND, StoreServer, not_on_cluster

pytestmark = not_on_cluster("the single-node Client against one store process "
                            "(tests/cluster/test_client.py tests the ClusterClient)")


@pytest.fixture
async def client(store_url, store):
    c = Client(store_url, name="codeq-test")
    assert await c.wait_connected(5)
    yield c
    await c.close()


async def test_concurrent_callers_each_get_their_own_reply(client):
    replies = await asyncio.gather(*(client.call(b"INCRBY", b"n", i) for i in range(1, 1001)))
    # Every caller sees the running total right after its own increment.
    assert replies == [i * (i + 1) // 2 for i in range(1, 1001)]


async def test_reply_error_fails_only_its_caller(client, store):
    store.set("s", "text")
    ok = client.call(b"SET", b"x", b"1")
    bad = client.call(b"INCR", b"s")
    also_ok = client.call(b"GET", b"x")
    results = await asyncio.gather(ok, bad, also_ok, return_exceptions=True)
    assert results[0] == b"OK"
    assert isinstance(results[1], ReplyError)
    assert results[2] == b"1"


async def test_evalsha_reloads_after_script_flush(client, store):
    script = Script("echo", "return ARGV[1] .. KEYS[1]", 1)
    client.register(script)
    assert await client.evalsha(script, (b"k",), (b"v",)) == b"vk"
    store.script_flush()
    assert store.script_exists(script.sha.decode()) == [False]
    assert await client.evalsha(script, (b"k",), (b"w",)) == b"wk"
    assert store.script_exists(script.sha.decode()) == [True]


async def test_client_names_itself(client, store):
    names = [c["name"] for c in store.client_list()]
    assert "codeq-test" in names


async def test_reconnects_after_connection_killed(client, store):
    assert await client.call(b"PING") == b"PONG"
    ours = [c["id"] for c in store.client_list() if c["name"] == "codeq-test"]
    assert len(ours) == 1
    store.client_kill_filter(_id=ours[0])
    deadline = time.monotonic() + 5
    while True:
        try:
            assert await client.call(b"PING") == b"PONG"
            break
        except StoreUnavailable:
            assert time.monotonic() < deadline, "client did not reconnect"
            await asyncio.sleep(0.02)


async def test_in_flight_command_fails_clearly_when_store_dies():
    server = StoreServer(appendonly=False).start()
    try:
        c = Client(server.url)
        assert await c.wait_connected(5)
        # A blocking pop keeps the command in flight while the store dies.
        pending = asyncio.ensure_future(c.call(b"BLPOP", b"never", b"10"))
        await asyncio.sleep(0.05)
        server.kill()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(StoreUnavailable):
            await c.call(b"PING")
        await c.close()
    finally:
        server.cleanup()


async def test_stalled_store_fails_callers_instead_of_hanging():
    server = StoreServer(appendonly=False).start()
    try:
        c = Client(server.url, command_timeout=0.3)
        assert await c.wait_connected(5)
        pending = asyncio.ensure_future(c.call(b"BLPOP", b"never", b"10"))
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(pending, 5)
        await c.close()
    finally:
        server.cleanup()


async def test_password_database_and_unix_socket():
    server = StoreServer(appendonly=False, password="s3cret", unixsocket=True).start()
    try:
        tcp = Client(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        unix = Client(f"unix://{server.socket_path}?db=3")
        assert await tcp.wait_connected(5)
        await tcp.call(b"SET", b"where", b"db3")
        with server.client() as view:
            if STORE_KIND == "redis":
                # Redis keeps databases apart; KVRocks accepts SELECT but has
                # one keyspace (its namespaces go by password).
                assert view.get("where") is None
                view.execute_command("SELECT", 3)
            assert view.get("where") == b"db3"
        # Without the password the client keeps retrying and never connects.
        assert not await unix.wait_connected(0.3)
        await unix.close()
        unix = Client(f"unix://:s3cret@{server.socket_path}?db=3")
        assert await unix.wait_connected(5)
        assert await unix.call(b"GET", b"where") == b"db3"
        await tcp.close()
        await unix.close()
    finally:
        server.cleanup()


async def test_commands_while_disconnected_fail_fast():
    c = Client("redis://127.0.0.1:1/0")
    assert not await c.wait_connected(0.2)
    with pytest.raises(StoreUnavailable):
        await c.call(b"PING")
    await c.close()


async def test_a_subscriber_tells_messages_from_replies(store_url, store):
    pushed = []
    sub = Client(store_url, name="codeq-sub", channel=b"ch", on_push=pushed.append)
    assert await sub.wait_connected(5)
    ping = sub.execute((b"PING",))  # queued; written once this coroutine yields
    store.publish("ch", "hello")  # so the message reaches the socket before the pong
    assert await ping in (b"PONG", [b"pong", b""])  # KVRocks, Redis
    assert pushed == [[b"message", b"ch", b"hello"]]
    await sub.close()
