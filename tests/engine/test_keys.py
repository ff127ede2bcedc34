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
    all_keys = [*q.ready, q.delayed, q.inflight, q.tasks, q.results, q.done, q.dlq, q.idem,
                q.waiting, q.rwaiters]
    assert len(set(all_keys)) == len(all_keys) == 19
    assert {tag(k) for k in all_keys} == {b"acme:email.send"}


def test_tenants_and_commands_are_kept_apart():
    # A tenant holds no ':', so "a:b:c" can only be tenant a, command b:c.
    assert re.match(keys.TENANT_PATTERN, "a")
    assert not re.match(keys.TENANT_PATTERN, "a:b")
    assert tag(keys.task_command("acme", "id-1")) == b"acme/id-1"
    assert tag(keys.tenant_commands("acme")) == b"acme"
    assert QueueKeys("acme", "x").ready_tier(9) == QueueKeys("acme", "x").ready[0]
    assert QueueKeys("acme", "x").ready_tier(0) == QueueKeys("acme", "x").ready[9]
