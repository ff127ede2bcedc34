"""Settings: defaults, file, environment and flags, in that order of strength."""

from __future__ import annotations

import pytest

from codeq import config


def test_precedence_file_then_environment_then_flags(tmp_path):
    path = tmp_path / "codeq.toml"
    path.write_text('port = 9001\nbackoff-policy = "linear"\nmax_attempts = 7\nhost = "0.0.0.0"\n')
    settings = config.load(
        str(path),
        flags={"port": "9003", "host": None},
        environ={"CODEQ_PORT": "9002", "CODEQ_MAX_ATTEMPTS": "8"},
    )
    assert settings.port == 9003  # flag over environment over file
    assert settings.max_attempts == 8  # environment over file
    assert settings.backoff_policy == "linear"  # file over default
    assert settings.host == "0.0.0.0"  # a flag left unset does not override
    assert settings.retention_seconds == 86400.0  # default


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"CODEQ_PORT": "eighty"}, "CODEQ_PORT: port must be a int"),
        ({"CODEQ_PORT": "70000"}, "port must be 0..65535"),
        ({"CODEQ_BACKOFF_POLICY": "random"}, "backoff_policy must be one of"),
        ({"CODEQ_TICK_INTERVAL": "0"}, "tick_interval must be positive"),
        ({"CODEQ_WORKERS": "0"}, "workers must be at least 1"),
        ({"CODEQ_TENANT": "a:b"}, "tenant must be"),
        ({"CODEQ_TENANT": "a{b}"}, "tenant must be"),
    ],
)
def test_bad_values_are_named(environ, message):
    with pytest.raises(ValueError, match=message):
        config.load(environ=environ)


def test_unknown_key_in_file_is_refused(tmp_path):
    path = tmp_path / "codeq.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="unknown setting 'prot'"):
        config.load(str(path), environ={})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("redis://user:s3cret@db/1", "redis://user:***@db/1"),
        ("redis://db:6379/0", "redis://db:6379/0"),
        ("unix:///run/kv.sock?db=2", "unix:///run/kv.sock?db=2"),
    ],
)
def test_store_urls_are_logged_without_passwords(url, shown):
    assert config.redact(url) == shown
