"""Random identifiers."""

from __future__ import annotations

import uuid

from codeq import ids


def test_ids_are_uuid4_and_distinct():
    seen = {ids.task_id() for _ in range(5000)}
    assert len(seen) == 5000
    for text in list(seen)[:500]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    tokens = {ids.lease_token() for _ in range(5000)}
    assert len(tokens) == 5000
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)
