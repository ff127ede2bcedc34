"""Task ids (UUID 8 carrying the queue's number) and lease tokens."""

from __future__ import annotations

import uuid

from codeq import ids


def test_task_ids_are_uuid8_carrying_their_queue_and_distinct():
    seen = {ids.task_id(7) for _ in range(5000)}
    assert len(seen) == 5000
    for text in list(seen)[:500]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (8, uuid.RFC_4122, text)
        assert ids.queue_of(text) == 7
    assert ids.queue_of(ids.task_id(ids.QUEUE_MAX)) == ids.QUEUE_MAX
    # 90 random bits: no two of many ids of one queue agree outside the queue number.
    assert len({t[9:] for t in seen}) == 5000


def test_ids_not_ours_name_no_queue():
    assert ids.queue_of(str(uuid.uuid4())) is None
    assert ids.queue_of("00000000-0000-8000-8000-000000000000") is None  # queue 0 is none
    assert ids.queue_of("not an id") is None


def test_lease_tokens_are_128_random_bits():
    tokens = {ids.lease_token() for _ in range(5000)}
    assert len(tokens) == 5000
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)
