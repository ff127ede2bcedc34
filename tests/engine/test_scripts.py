"""The Lua scripts themselves: headers, loading, and the backoff policies."""

from __future__ import annotations

import pytest

from codeq.engine import scripts


@pytest.mark.parametrize("name", sorted(scripts.NUMKEYS))
def test_header_documents_every_key_the_caller_passes(name):
    assert scripts.header_key_count(name) == scripts.NUMKEYS[name]


@pytest.mark.parametrize("name", sorted(scripts.NUMKEYS))
def test_script_loads_with_includes_resolved(name, store):
    source = scripts.render(name)
    assert "-- @include" not in source
    assert store.script_load(source) == scripts.load(name).sha.decode()


def backoff(store, policy, attempts, rand=0.5, base=1000, cap=60000):
    includes = "".join((scripts.SCRIPT_DIR / "includes" / f"{name}.lua").read_text()
                       for name in ("common", "finish", "retry"))
    source = includes + ("\nreturn backoff_ms(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),"
                         " tonumber(ARGV[4]), tonumber(ARGV[5]))")
    return store.eval(source, 0, policy, base, cap, attempts, rand)


@pytest.mark.parametrize(
    ("policy", "attempts", "rand", "expected"),
    [
        ("fixed", 1, 0.5, 1000),
        ("fixed", 7, 0.5, 1000),
        ("linear", 1, 0.5, 1000),
        ("linear", 4, 0.5, 4000),
        ("linear", 100, 0.5, 60000),  # capped
        ("exponential", 1, 0.5, 1000),
        ("exponential", 4, 0.5, 8000),
        ("exponential", 500, 0.5, 60000),  # capped, no overflow
        ("equal_jitter", 4, 0.0, 4000),  # half of 8000 ...
        ("equal_jitter", 4, 0.999, 7996),  # ... up to all of it
        ("full_jitter", 4, 0.0, 0),
        ("full_jitter", 4, 0.5, 4000),
        ("full_jitter", 500, 0.5, 30000),
    ],
)
def test_backoff_policies(store, policy, attempts, rand, expected):
    assert backoff(store, policy, attempts, rand) == expected

