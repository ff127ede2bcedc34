"""The package as users get it: its files, its version, its command."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest

import codeq
from tests.support import ROOT, codeq_cli

INSTALLED = os.environ.get("CODEQ_TEST_INSTALLED") == "1"


def test_codeq_version_is_the_package_version():
    proc = codeq_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"codeq {codeq.__version__}"
    assert metadata.version("codeq") == codeq.__version__


@pytest.mark.skipif(not INSTALLED, reason="checks the installed wheel (make test)")
def test_the_wheel_holds_every_file_the_package_reads():
    installed = {str(p) for p in metadata.files("codeq") or ()}
    source = Path(ROOT, "codeq")
    wanted = [p for p in source.rglob("*")
              if p.suffix in (".py", ".lua", ".pyi") or p.name == "py.typed"]
    assert wanted
    missing = [str(p.relative_to(ROOT)) for p in wanted
               if str(p.relative_to(ROOT)) not in installed]
    assert not missing, f"not in the wheel: {missing}"
    assert any(f.startswith("codeq/_core.") and f.endswith(".so") for f in installed)
    assert not [f for f in installed if f.endswith((".pyx", ".c"))]
