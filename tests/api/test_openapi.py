"""The OpenAPI document: served, complete, and fuzzed with schemathesis against
a real codeq serve (no 5xx, no response outside the document)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import STORE_KIND

DOC = "/v1/codeq/openapi.json"
ROUTES = [  # every /v1/codeq route codeq serve has, but the document itself
    "/tasks", "/tasks/batch", "/tasks/claim", "/tasks/claim/batch", "/tasks/batch/results",
    "/tasks/{id}", "/tasks/{id}/heartbeat", "/tasks/{id}/abandon", "/tasks/{id}/nack",
    "/tasks/{id}/result", "/workers/subscriptions", "/workers/subscriptions/{id}",
    "/workers/subscriptions/{id}/heartbeat", "/admin/queues", "/admin/queues/{command}",
    "/admin/queues/{command}/dlq", "/admin/queues/{command}/dlq/requeue",
    "/admin/queues/{command}/dlq/purge", "/admin/queues/{command}/inflight",
    "/admin/tasks/cleanup", "/admin/tasks/{id}",
]


def test_the_document_is_openapi_3_1_and_names_every_route(codeq_server):
    reply = httpx.get(codeq_server.base + DOC)
    assert reply.status_code == 200
    doc = reply.json()
    assert doc["openapi"] == "3.1.0"
    assert sorted(doc["paths"]) == sorted("/v1/codeq" + r for r in ROUTES)
    create = doc["paths"]["/v1/codeq/tasks"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/CreateTask"}
    assert "payload" in doc["components"]["schemas"]["CreateTask"]["required"]


def _shorter_polls(doc: dict) -> dict:
    """The document with long polls bounded to 1 s, so the fuzzing does not
    spend its time waiting (the bounds are the only change)."""
    schemas = doc["components"]["schemas"]
    for name in ("ClaimRequest", "ClaimBatchRequest"):
        schemas[name]["properties"]["waitSeconds"]["maximum"] = 1
    for param in doc["paths"]["/v1/codeq/tasks/{id}/result"]["get"]["parameters"]:
        if param["name"] == "waitSeconds":
            param["schema"]["maximum"] = 1
    return doc


@pytest.mark.skipif(STORE_KIND != "redis", reason="the API is fuzzed once, on the redis leg")
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_no_response_outside_the_document(
        codeq_server, tmp_path: Path):
    cli = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    assert cli, "schemathesis is a test dependency"
    doc = _shorter_polls(httpx.get(codeq_server.base + DOC).json())
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(doc))
    proc = subprocess.run(
        [cli, "run", str(path), "--url", codeq_server.base, "--max-examples", "10",
         "--checks", "not_a_server_error,response_schema_conformance,"
         "status_code_conformance,content_type_conformance",
         "--phases", "examples,coverage,fuzzing", "--mode", "all", "--seed", "1",
         "--header", "X-Worker-Id: fuzzer", "--request-timeout", "30", "--no-color"],
        capture_output=True, text=True, timeout=580, cwd=tmp_path)
    summary = proc.stdout[-4000:]
    assert proc.returncode == 0, summary
    assert " passed" in summary and "failed" not in summary.split("SUMMARY")[-1], summary
