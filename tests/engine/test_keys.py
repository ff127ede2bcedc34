"""The key layout is cluster-safe: each queue's keys share one hash tag."""

from __future__ import annotations

import re

from codeq import keys
from codeq.keys import QueueKeys

TAG = re.compile(rb"\{([^}]*)\}")


def tag(key: bytes) -> bytes:
    found = TAG.search(key)
    assert found is not None, key
    return found.group(1)


def test_every_key_of_a_queue_shares_its_hash_tag():
    q = QueueKeys("acme", "email.send")
    all_keys = [*q.ready, q.tiers, q.delayed, q.inflight, q.tasks, q.payloads, q.results,
                q.done, q.dlq, q.idem, q.waiting, q.rwaiters]
    assert len(set(all_keys)) == len(all_keys) == 21
    assert {tag(k) for k in all_keys} == {b"acme:email.send"}


def test_tenants_and_commands_are_kept_apart():
    # A tenant holds no ':', so "a:b:c" can only be tenant a, command b:c.
    assert re.match(keys.TENANT_PATTERN, "a")
    assert not re.match(keys.TENANT_PATTERN, "a:b")
    assert tag(keys.tenant_commands("acme")) == b"acme"
    assert keys.queue_member("acme", "b:c").split(b":", 1) == [b"acme", b"b:c"]
    # The queue registry's keys share one tag, as its script needs.
    assert tag(keys.QUEUE_IDS) == tag(keys.QUEUE_NAMES) == b"queues"
    # Each due-index shard's two keys share a tag; the shards spread apart.
    assert {tag(keys.due(s)) for s in range(keys.DUE_SHARDS)} == {
        tag(keys.upkeep(s)) for s in range(keys.DUE_SHARDS)}
    assert len({tag(keys.due(s)) for s in range(keys.DUE_SHARDS)}) == keys.DUE_SHARDS
    assert QueueKeys("acme", "x").ready_tier(9) == QueueKeys("acme", "x").ready[0]
    assert QueueKeys("acme", "x").ready_tier(0) == QueueKeys("acme", "x").ready[9]
