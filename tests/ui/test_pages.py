"""The dashboard over plain HTTP: shells without data, fragments guarded like the
admin API, its static files, ``--ui off``, and its files in the wheel."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, CodeqServer, StoreServer
from tests.ui.conftest import token

INSTALLED = os.environ.get("CODEQ_TEST_INSTALLED") == "1"
FRAGMENTS = ("whoami", "overview", "throughput", "depths?command=x", "inflight?command=x",
             "dlq?command=x", "task?id=00000000-0000-4000-8000-000000000000")


def get(server: CodeqServer, path: str, who: str | None = None, **headers: str,
        ) -> httpx.Response:
    if who:
        headers["Authorization"] = f"Bearer {token(who)}"
    return httpx.get(server.base + path, headers=headers, timeout=20)


@pytest.mark.parametrize("path", ["/ui/", "/ui", "/ui/queue?command=email.send",
                                  "/ui/task?id=whatever"])
def test_page_shells_need_no_token_and_hold_no_data(auth_server, path):
    reply = get(auth_server, path)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in reply.headers["content-security-policy"]
    assert 'id="login-form"' in reply.text and 'data-auth="on"' in reply.text
    assert "acme" not in reply.text


@pytest.mark.parametrize("fragment", FRAGMENTS)
def test_fragments_need_a_token_with_codeq_admin(auth_server, fragment):
    path = f"/ui/fragments/{fragment}"
    reply = get(auth_server, path)
    assert reply.status_code == 401 and reply.json()["code"] == "UNAUTHORIZED"
    assert reply.headers["www-authenticate"].startswith("Bearer")
    reply = get(auth_server, path, "producer")
    assert (reply.status_code, reply.json()["scope"]) == (403, "codeq:admin")
    reply = get(auth_server, path, "admin")
    assert reply.status_code == (404 if fragment.startswith("task") else 200), reply.text


def test_fragments_show_the_tokens_tenant_only(auth_server):
    assert "acme" in get(auth_server, "/ui/fragments/whoami", "admin").text
    assert "<td" not in get(auth_server, "/ui/fragments/overview", "admin").text


@pytest.mark.parametrize(("fragment", "field"), [("depths?command=bad%20name", "command"),
                                                 ("dlq?command=x&cursor=nonsense", "cursor"),
                                                 ("inflight", "command"),
                                                 ("task?id=42", "id")])
def test_bad_fragment_parameters_are_a_400_naming_them(codeq_server, fragment, field):
    reply = get(codeq_server, f"/ui/fragments/{fragment}")
    assert (reply.status_code, reply.json()["field"]) == (400, field)


def test_static_files_are_served_with_an_etag(codeq_server):
    reply = get(codeq_server, "/ui/static/htmx.min.js")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/javascript")
    assert reply.content.startswith(b"var htmx=")
    again = get(codeq_server, "/ui/static/htmx.min.js", **{"If-None-Match": reply.headers["etag"]})
    assert again.status_code == 304
    assert get(codeq_server, "/ui/static/VENDORED.md").status_code == 404
    assert get(codeq_server, "/ui/static/..%2Fpages.py").status_code == 404


def test_with_ui_off_there_is_no_dashboard():
    store = StoreServer("redis").start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning", "--ui", "off")
    try:
        server.start()
        for path in ("/ui/", "/ui/fragments/overview", "/ui/static/htmx.min.js"):
            assert get(server, path).status_code == 404
        assert get(server, "/v1/codeq/admin/queues").status_code == 200
    finally:
        server.stop()
        store.cleanup()


@pytest.mark.skipif(not INSTALLED, reason="checks the installed wheel (make test)")
def test_the_wheel_holds_the_templates_and_static_files():
    installed = {str(p) for p in metadata.files("codeq") or ()}
    source = Path(ROOT, "codeq", "ui")
    wanted = [str(p.relative_to(ROOT)) for sub in ("templates", "static")
              for p in (source / sub).rglob("*") if p.is_file()]
    assert any(w.endswith("htmx.min.js") for w in wanted)
    assert [w for w in wanted if w not in installed] == []
