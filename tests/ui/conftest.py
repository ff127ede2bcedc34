"""Dashboard fixtures: engines for its reads, a codeq serve with auth on, and
a headless Chromium shared by the browser tests."""

from __future__ import annotations

import pytest

from tests.engine.conftest import engine, make_engine
from tests.support import CodeqServer, StoreServer
from tests.ui.browser import MISSING, chromium

__all__ = ["engine", "make_engine"]

# name: scopes, all of tenant acme
TOKENS = {"admin": ["codeq:admin"], "producer": ["codeq:produce"],
          "everything": ["codeq:produce", "codeq:worker", "codeq:admin"]}


def token(name: str) -> str:
    return f"ui-test-token-{name}-0123456789"


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory):
    """A codeq serve with auth on and static tokens (TOKENS), on a store of its
    own: one redis-server on every leg (the pages do the same on any store)."""
    tokens = tmp_path_factory.mktemp("ui") / "tokens.toml"
    tokens.write_text("\n".join(
        f'[[tokens]]\ntoken = "{token(name)}"\nname = "{name}"\ntenant = "acme"\n'
        f"scopes = {scopes!r}\n".replace("'", '"') for name, scopes in TOKENS.items()))
    store = StoreServer("redis").start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning", "--auth", "on",
                         "--tokens-file", str(tokens)).start()
    yield server
    server.stop()
    store.cleanup()


@pytest.fixture(scope="session")
def chrome():
    """One headless Chromium for every browser test (a test starts from a fresh page)."""
    if MISSING:
        pytest.skip(MISSING)
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture
def browser(chrome):
    """The Chromium, its session storage emptied after the test."""
    yield chrome
    if chrome.current_url.startswith("http"):
        chrome.execute_script("window.sessionStorage.clear()")
    chrome.get("about:blank")
