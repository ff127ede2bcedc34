"""The README stays in step with the code it documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from codeq.config import OPTIONS, Settings
from tests.support import ROOT, CodeqServer, StoreServer

README = (ROOT / "README.md").read_text()


def test_readme_configuration_table_lists_every_setting_with_its_default():
    rows = {line.split("|")[1].strip(): line for line in README.splitlines()
            if line.startswith("| `--")}
    for option in OPTIONS:
        row = next((r for flags, r in rows.items() if f"`{option.flag}`" in flags), None)
        assert row is not None, f"{option.flag} missing from the README table"
        assert f"`{option.env}`" in row
        default = getattr(Settings(), option.name)
        if default != "":
            assert f"| {_shown(default)} |" in row, (option.name, row)


def _shown(default: object) -> str:
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, tuple):
        return ", ".join(default) or "none"
    return str(default)


def test_readme_quick_start_is_the_two_make_targets():
    assert "make run" in README and "make test" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    # CI runs nothing the README does not tell users about.
    for line in ci.splitlines():
        if line.startswith("make "):
            assert f"`{line}`" in README, line


def test_readme_curl_walk_through_runs_as_written(codeq_server):
    section = README.split("## A task's life, with curl", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    script = script.replace("http://127.0.0.1:8080", codeq_server.base)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    heartbeat, result, read = proc.stdout.splitlines()
    assert json.loads(heartbeat)["ok"] is True
    assert json.loads(result)["status"] == "COMPLETED"
    assert json.loads(read)["task"]["status"] == "COMPLETED"
    assert json.loads(read)["result"]["result"] == {"messageId": "m-1"}


def readme_python(heading: str) -> str:
    """The first Python block of a README section."""
    return README.split(heading, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def run_against_own_server(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run a README script against a codeq serve of its own (the examples leave
    tasks queued); return what it printed."""
    store = StoreServer().start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning", *args,
                         env=env).start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script.replace("http://127.0.0.1:8080", server.base)],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    finally:
        server.stop()
        store.cleanup()


def test_readme_authentication_example_runs_as_written():
    script = readme_python("## Authentication, tenants, scopes")
    secret = re.search(r'SECRET = "([^"]+)"', script).group(1)
    out = run_against_own_server(script, "--auth", "on", env={"CODEQ_JWT_SECRET": secret})
    assert "'sent': True" in out


def test_readme_client_example_runs_as_written():
    first, second = run_against_own_server(readme_python("### The client")).splitlines()
    assert first.endswith(" PENDING 250") and second == "None"


def test_readme_worker_example_runs_as_written():
    out = run_against_own_server(readme_python("### A worker"))
    assert "{'messageId': 'm-" in out and "{'width': 320}" in out
