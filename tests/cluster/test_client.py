"""The compiled cluster client against a real Redis Cluster: slots, redirects,
scripts per node, WAIT."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from codeq._core import ClusterClient, Script, StoreUnavailable, key_slot
from codeq.config import Settings
from codeq.engine import Engine, Notifier
from tests.support import ClusterStore, wait_until

JOIN = Script("join", "return (redis.call('GET', KEYS[1]) or '') .. '+' .. "
              "(redis.call('GET', KEYS[2]) or '')", 2)


@pytest.fixture(scope="module")
def cluster():
    """A cluster of this module's own: its tests flush it and stop its nodes."""
    store = ClusterStore().start()
    yield store
    store.cleanup()


@pytest.fixture
async def client(cluster):
    cluster.flushall()
    client = ClusterClient(cluster.url)
    client.register(JOIN)
    assert await client.wait_connected(10)
    yield client
    await client.close()


def errors(node, kind: str) -> int:
    """How many replies of an error kind (MOVED, ASK, TRYAGAIN) a node gave."""
    raw = node.client().info("errorstats")
    return int(raw.get(f"errorstat_{kind}", {}).get("count", 0))


def other_master(cluster: ClusterStore, slot: int):
    source = cluster.master_of(slot)
    return source, next(n for n in cluster.masters() if n is not source)


async def ask(cluster: ClusterStore, *args: str, node=None):
    return await asyncio.to_thread(cluster._ask, *args, node=node)


async def test_key_slots_match_the_cluster(cluster):
    for key in ("job", "codeq:{default:email.send}:tasks", "{}x", "a{}{b}", "{a}{b}", "{",
                "x{y", "é{ü}", "codeq:{due:3}:queues"):
        assert key_slot(key) == await ask(cluster, "CLUSTER", "KEYSLOT", key), key


async def test_each_command_reaches_its_slots_master(cluster, client):
    await asyncio.gather(*(client.call(b"SET", f"k{i}", i) for i in range(300)))
    view = cluster.client()
    assert [int(view.get(f"k{i}")) for i in range(300)] == list(range(300))
    masters = {cluster.master_of(key_slot(f"k{i}")).port for i in range(300)}
    assert len(masters) == 3  # the keys were spread over every master


async def test_moved_is_followed_and_the_map_updated(cluster, client):
    await client.call(b"SET", b"{moved}k", b"v")
    slot = key_slot(b"{moved}k")
    source, target = other_master(cluster, slot)
    before = errors(source, "MOVED")
    await asyncio.to_thread(cluster.migrate_slot, slot, target)  # behind the client's back
    assert await client.call(b"GET", b"{moved}k") == b"v"
    assert errors(source, "MOVED") == before + 1
    refreshes = client.refreshes
    await wait_until_async(lambda: client.refreshes > refreshes)
    assert await client.call(b"GET", b"{moved}k") == b"v"
    assert errors(source, "MOVED") == before + 1  # straight to the new master now


async def test_ask_reaches_a_key_already_moved(cluster, client):
    slot = key_slot(b"{ask}a")
    source, target = other_master(cluster, slot)
    await client.call(b"SET", b"{ask}a", b"1")
    await client.call(b"SET", b"{ask}b", b"2")
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    await ask(cluster, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id, node=target)
    await ask(cluster, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id, node=source)
    await ask(cluster, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS",
              "{ask}a", node=source)
    before = errors(source, "ASK")
    assert await client.call(b"GET", b"{ask}a") == b"1"  # moved: ASK to the target
    assert await client.call(b"GET", b"{ask}b") == b"2"  # still on the source
    assert errors(source, "ASK") == before + 1
    # A script over both keys, split between two nodes, waits out the move.
    call = asyncio.ensure_future(client.evalsha(JOIN, (b"{ask}a", b"{ask}b"), ()))
    await wait_until_async(lambda: errors(source, "TRYAGAIN") > 0 or call.done())
    assert not call.done()
    await ask(cluster, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS",
              "{ask}b", node=source)
    for node in cluster.masters():
        await ask(cluster, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id, node=node)
    assert await asyncio.wait_for(call, 5) == b"1+2"


async def test_a_script_lost_by_one_node_is_loaded_there_again(cluster, client):
    await client.call(b"SET", b"{lost}a", b"x")
    assert await client.evalsha(JOIN, (b"{lost}a", b"{lost}b"), ()) == b"x+"
    await ask(cluster, "SCRIPT", "FLUSH", node=cluster.master_of(key_slot(b"{lost}a")))
    assert await client.evalsha(JOIN, (b"{lost}a", b"{lost}b"), ()) == b"x+"


async def test_wait_replicas_confirms_or_refuses(cluster):
    await wait_until_async(cluster.healthy, 30)  # every replica synced
    cluster.flushall()
    client = ClusterClient(cluster.url, wait_replicas=1, wait_timeout=0.5)
    client.register(JOIN)
    try:
        assert await client.wait_connected(10)
        assert await client.evalsha(JOIN, (b"{w}a", b"{w}b"), ()) == b"+"
        replica = cluster.replicas_of(cluster.master_of(key_slot(b"{w}a")))[0]
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable, match="did not confirm"):
                await client.evalsha(JOIN, (b"{w}a", b"{w}b"), ())
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        assert await client.evalsha(JOIN, (b"{w}a", b"{w}b"), ()) == b"+"
    finally:
        await client.close()


async def test_many_scripts_share_one_wait(cluster):
    await wait_until_async(cluster.healthy, 30)  # every replica synced
    cluster.flushall()
    client = ClusterClient(cluster.url, wait_replicas=1)
    client.register(JOIN)
    try:
        assert await client.wait_connected(10)
        master = cluster.master_of(key_slot(b"{many}a"))
        before = master.client().info("commandstats").get("cmdstat_wait", {}).get("calls", 0)
        replies = await asyncio.gather(*(client.evalsha(JOIN, (b"{many}a", b"{many}b"), ())
                                         for _ in range(200)))
        assert replies == [b"+"] * 200
        after = master.client().info("commandstats")["cmdstat_wait"]["calls"]
        assert 1 <= after - before < 50
    finally:
        await client.close()


async def wait_until_async(predicate, timeout: float = 10.0) -> None:
    await asyncio.to_thread(wait_until, predicate, timeout)


async def make_engine(cluster: ClusterStore, **settings) -> Engine:
    store = ClusterClient(cluster.url, wait_replicas=settings.pop("wait_replicas", 0),
                          command_timeout=settings.pop("command_timeout", 5.0))
    engine = Engine(store, Notifier(cluster.url, 5.0, store), Settings(**settings))
    await engine.open(loops=False)
    return engine


async def test_a_claim_its_replicas_did_not_confirm_is_given_back(cluster):
    await wait_until_async(cluster.healthy, 30)  # every replica synced
    cluster.flushall()
    engine = await make_engine(cluster, wait_replicas=1)
    try:
        task, _ = await engine.create("default", "wait.claim", b"{}")
        replica = cluster.replicas_of(cluster.master_of(key_slot(
            engine.queue("default", "wait.claim").tasks)))[0]
        assert replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreUnavailable):
                await engine.claim("default", ["wait.claim"], "w1")
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        # Not left leased to a worker that got a 503: claimable at once.
        again = await engine.claim("default", ["wait.claim"], "w2")
        assert [t.id for t in again] == [task.id] and again[0].attempts == 1
    finally:
        await engine.close()


async def test_a_sharded_claim_passes_over_a_shard_whose_master_is_away(cluster):
    cluster.flushall()
    engine = await make_engine(cluster, queue_shards=3, command_timeout=0.5)
    try:
        for n in range(6):
            await engine.create("default", "away", b'{"n":%d}' % n)
        names = engine.shard_names("away")
        nodes = {name: cluster.master_of(key_slot(engine.queue("default", name).tasks))
                 for name in names}
        assert len({n.port for n in nodes.values()}) > 1, "the shards share one master"
        stalled = nodes[names[0]]
        assert stalled.proc is not None
        os.kill(stalled.proc.pid, signal.SIGSTOP)
        try:
            got = await engine.claim("default", ["away"], "w1", count=10)
        finally:
            os.kill(stalled.proc.pid, signal.SIGCONT)
        live = sum(2 for name in names if nodes[name] is not stalled)
        assert len(got) == live  # every task of the shards on live masters
        await wait_until_async(cluster.healthy, 30)  # it may have been failed over
    finally:
        await engine.close()
