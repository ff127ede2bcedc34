"""Authentication on: tokens, tenants, scopes and eventTypes, against a real codeq serve."""

from __future__ import annotations

import hashlib
import hmac
import signal
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support import CodeqServer, new_store, wait_until

from .conftest import SECRET, TOKENS, b64, claims_with, static_token, tokens_toml, unsigned

V1 = "/v1/codeq"
INVALID = 'error="invalid_token"'


def create(client, command: str, **extra) -> dict:
    reply = client.post(f"{V1}/tasks", json={"command": command, "payload": 1, **extra})
    assert reply.status_code == 202, reply.text
    return reply.json()


def claim(client, command: str) -> dict:
    reply = client.post(f"{V1}/tasks/claim", json={"commands": [command], "waitSeconds": 5})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_no_or_malformed_credentials_get_401_with_a_challenge(as_, command):
    reply = as_().post(f"{V1}/tasks", json={"command": command, "payload": 1})
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.json()["code"] == "UNAUTHORIZED"
    for header in ("Basic dXNlcjpwdw==", "Bearer", "Bearer not-a-token-we-know"):
        client = as_()
        client.headers["Authorization"] = header
        assert client.get(f"{V1}/tasks/00000000-0000-4000-8000-000000000000").status_code == 401
    # The probes stay open.
    assert as_().get("/healthz").status_code == 200


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_jwks_signed_tokens_are_accepted(as_, keys, command, kid):
    client = as_(token=keys.mint(kid))
    task = create(client, command)
    assert task["tenantId"] == "acme"
    claimed = claim(client, command)
    assert claimed["workerId"] == "w-1"  # the token's sub


def test_hs256_tokens_with_the_shared_secret_are_accepted(as_, command):
    token = jwt.encode(claims_with({"sub": "hs-worker"}), SECRET, algorithm="HS256")
    client = as_(token=token)
    create(client, command)
    assert claim(client, command)["workerId"] == "hs-worker"


def _bad_tokens(keys) -> dict[str, str]:
    good = keys.mint("rsa-1")
    header, payload, signature = good.split(".")
    # Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
    public_pem = keys.private["rsa-1"][0].public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
                             claims_with({})).rsplit(".", 1)[0]
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{b64(mac)}"
    return {
        "alg none": unsigned({"alg": "none", "typ": "JWT"}, claims_with({})),
        "HS256 signed with the RSA public key": confused,
        "wrong signature": f"{header}.{payload}.{signature[::-1]}",
        "expired": keys.mint("rsa-1", exp=int(time.time()) - 120),
        "not yet valid": keys.mint("rsa-1", nbf=int(time.time()) + 120),
        "wrong issuer": keys.mint("rsa-1", iss="someone-else"),
        "wrong audience": keys.mint("rsa-1", aud="another-service"),
        "no exp": jwt.encode({k: v for k, v in claims_with({}).items() if k != "exp"},
                             keys.private["rsa-1"][0], algorithm="RS256",
                             headers={"kid": "rsa-1"}),
        "HS256 with another secret": jwt.encode(claims_with({}), "x" * 40, algorithm="HS256"),
        "bad tenant": keys.mint("rsa-1", tid="not a tenant!"),
    }


def test_bad_tokens_get_401_invalid_token(as_, keys, command):
    for what, token in _bad_tokens(keys).items():
        reply = as_(token=token).post(f"{V1}/tasks", json={"command": command, "payload": 1})
        assert reply.status_code == 401, (what, reply.text)
        assert INVALID in reply.headers["WWW-Authenticate"], what
        assert reply.json()["code"] == "INVALID_TOKEN", what


def test_a_token_within_the_leeway_is_accepted(as_, keys, command):
    create(as_(token=keys.mint("rsa-1", exp=int(time.time()) - 10)), command)


def test_a_rotated_key_is_fetched_once_and_kept_while_the_jwks_is_down(as_, keys, jwks,
                                                                        command):
    keys.add_rsa("rsa-2")
    before = jwks.fetches
    create(as_(token=keys.mint("rsa-2")), command)  # unknown kid: one fetch finds it
    assert jwks.fetches == before + 1
    # Another unknown kid within the minute: no second fetch.
    keys.add_ec("ec-2")
    reply = as_(token=keys.mint("ec-2")).post(f"{V1}/tasks",
                                                json={"command": command, "payload": 1})
    assert reply.status_code == 401 and jwks.fetches == before + 1
    jwks.down = True
    try:
        create(as_(token=keys.mint("rsa-2", sub="w-2")), command)  # cached key still works
    finally:
        jwks.down = False


def test_static_tokens_name_the_tenant_and_worker(as_, command):
    task = create(as_("everything"), command)
    assert task["tenantId"] == "acme"
    assert claim(as_("worker"), command)["workerId"] == "worker"


SCOPED_CALLS = [
    # (scope needed, method, path template, body)
    ("codeq:produce", "POST", "/tasks", {"command": "{command}", "payload": 1}),
    ("codeq:produce", "POST", "/tasks/batch", {"tasks": [{"command": "{command}",
                                                          "payload": 1}]}),
    ("codeq:produce", "GET", "/tasks/{id}", None),
    ("codeq:produce", "GET", "/tasks/{id}/result", None),
    ("codeq:claim", "POST", "/tasks/claim", {"commands": ["{command}"]}),
    ("codeq:claim", "POST", "/tasks/claim/batch", {"commands": ["{command}"], "count": 2}),
    ("codeq:heartbeat", "POST", "/tasks/{id}/heartbeat", {}),
    ("codeq:abandon", "POST", "/tasks/{id}/abandon", {}),
    ("codeq:nack", "POST", "/tasks/{id}/nack", {}),
    ("codeq:result", "POST", "/tasks/{id}/result", {"status": "COMPLETED"}),
    ("codeq:result", "POST", "/tasks/batch/results", {"results": [
        {"taskId": "{id}", "status": "COMPLETED"}]}),
    ("codeq:subscribe", "POST", "/workers/subscriptions",
     {"callbackUrl": "https://example.com/hook"}),
]


def _fill(value, **names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, **names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, **names) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("scope", "method", "path", "body"), SCOPED_CALLS,
                         ids=[f"{c[1]} {c[2]}" for c in SCOPED_CALLS])
def test_every_endpoint_refuses_a_token_without_its_scope(as_, command, scope, method, path,
                                                          body):
    task = create(as_("producer"), command)
    lacking = "worker" if scope in ("codeq:produce", "codeq:subscribe") else "producer"
    names = {"command": command, "id": task["id"]}
    reply = as_(lacking).request(method, V1 + _fill(path, **names), json=_fill(body, **names))
    assert reply.status_code == 403, reply.text
    assert reply.json()["code"] == "MISSING_SCOPE" and reply.json()["scope"] == scope
    granted = as_("everything").request(method, V1 + _fill(path, **names),
                                        json=_fill(body, **names))
    assert granted.status_code not in (401, 403), granted.text


def test_worker_scope_grants_the_five_worker_calls_and_no_more(as_, command):
    create(as_("producer"), command)
    worker = as_("worker")
    task = claim(worker, command)
    assert worker.post(f"{V1}/tasks/{task['id']}/heartbeat",
                       json={"leaseId": task["leaseId"]}).status_code == 200
    assert worker.post(f"{V1}/tasks/{task['id']}/result",
                       json={"status": "COMPLETED", "leaseId": task["leaseId"]}).status_code == 200
    assert worker.post(f"{V1}/tasks", json={"command": command, "payload": 1}).status_code == 403
    # codeq:claim alone claims, but may not finish.
    create(as_("producer"), command)
    claimer = as_("claimer")
    task = claim(claimer, command)
    reply = claimer.post(f"{V1}/tasks/{task['id']}/result", json={"status": "COMPLETED"})
    assert reply.json()["scope"] == "codeq:result"


def test_event_types_limit_what_a_token_claims_and_subscribes_to(as_):
    mailer = as_("mailer")
    create(as_("producer"), "email.send")
    reply = mailer.post(f"{V1}/tasks/claim", json={"commands": ["email.send", "sms.send"]})
    assert (reply.status_code, reply.json()["code"]) == (403, "COMMAND_NOT_ALLOWED")
    assert claim(mailer, "email.send")["command"] == "email.send"
    reply = mailer.post(f"{V1}/workers/subscriptions", json={
        "callbackUrl": "https://example.com/hook", "eventTypes": ["sms.send"]})
    assert reply.json()["code"] == "COMMAND_NOT_ALLOWED"
    assert mailer.post(f"{V1}/workers/subscriptions", json={
        "callbackUrl": "https://example.com/hook"}).status_code == 200


def test_x_worker_id_is_ignored_when_auth_is_on(as_, command):
    create(as_("producer"), command)
    task = claim(as_("worker"), command)
    other = as_("everything")
    other.headers["X-Worker-Id"] = "worker"  # pretending to be the owner
    reply = other.post(f"{V1}/tasks/{task['id']}/result", json={"status": "COMPLETED"})
    assert (reply.status_code, reply.json()["code"]) == (403, "NOT_OWNER")


def test_another_tenants_tasks_read_as_not_found_everywhere(as_, command):
    mine = as_("everything")
    theirs = as_("other")
    task = create(mine, command)
    claimed = claim(mine, command)
    assert claimed["id"] == task["id"]
    lease = {"leaseId": claimed["leaseId"]}
    for method, path, body in [
        ("GET", f"/tasks/{task['id']}", None),
        ("GET", f"/tasks/{task['id']}/result", None),
        ("POST", f"/tasks/{task['id']}/heartbeat", lease),
        ("POST", f"/tasks/{task['id']}/abandon", lease),
        ("POST", f"/tasks/{task['id']}/nack", lease),
        ("POST", f"/tasks/{task['id']}/result", {"status": "COMPLETED", **lease}),
    ]:
        reply = theirs.request(method, V1 + path, json=body)
        assert (reply.status_code, reply.json()["code"]) == (404, "TASK_NOT_FOUND"), path
    reply = theirs.post(f"{V1}/tasks/batch/results", json={"results": [
        {"taskId": task["id"], "status": "COMPLETED", **lease}]})
    assert reply.json()["results"][0]["code"] == "TASK_NOT_FOUND"
    # Their queue of the same name is another queue: nothing to claim there.
    create(mine, command)
    reply = theirs.post(f"{V1}/tasks/claim", json={"commands": [command]})
    assert reply.status_code == 204
    # And the task is untouched: still ours, in progress.
    assert mine.get(f"{V1}/tasks/{task['id']}").json()["status"] == "IN_PROGRESS"
    # Subscriptions too are the tenant's own.
    sub = mine.post(f"{V1}/workers/subscriptions",
                    json={"callbackUrl": "https://example.com/hook"}).json()["subscriptionId"]
    assert theirs.post(f"{V1}/workers/subscriptions/{sub}/heartbeat").status_code == 404
    assert theirs.delete(f"{V1}/workers/subscriptions/{sub}").status_code == 404
    assert mine.delete(f"{V1}/workers/subscriptions/{sub}").status_code == 204


def test_the_tokens_file_is_reread_on_sighup(auth_server, tokens_file, as_, command):
    before = tokens_file.read_text()
    try:
        tokens_file.write_text(tokens_toml({**TOKENS, "late": (["codeq:produce"], None,
                                                               "acme")}))
        assert as_("late").post(f"{V1}/tasks", json={"command": command,
                                                     "payload": 1}).status_code == 401
        auth_server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: as_("late").post(f"{V1}/tasks", json={
            "command": command, "payload": 1}).status_code == 202, what="the new token")
        assert static_token("late")
    finally:
        tokens_file.write_text(before)
        auth_server.proc.send_signal(signal.SIGHUP)


def test_rate_limits_answer_429_then_recover(tokens_file, command):
    store = new_store().start()
    server = CodeqServer("--store-url", store.url, "--log-level", "warning", "--auth", "on",
                         "--tokens-file", str(tokens_file),
                         "--rate-limit", "create=0.5/3", "--rate-limit", "claim=100/100").start()
    try:
        mine = httpx.Client(base_url=server.base, timeout=20, headers={
            "Authorization": f"Bearer {static_token('everything')}"})
        theirs = httpx.Client(base_url=server.base, timeout=20, headers={
            "Authorization": f"Bearer {static_token('producer')}"})
        body = {"command": command, "payload": 1}
        assert [mine.post(f"{V1}/tasks", json=body).status_code for _ in range(3)] == [202] * 3
        refused = mine.post(f"{V1}/tasks", json=body)
        assert refused.status_code == 429
        assert refused.json()["code"] == "RATE_LIMITED"
        assert int(refused.headers["Retry-After"]) >= 1
        # Per token: another caller has a bucket of its own; other operations are not limited.
        assert theirs.post(f"{V1}/tasks", json=body).status_code == 202
        assert mine.get(f"{V1}/admin/queues").status_code == 200
        # One every 2 s (slow enough that the 4th create is refused however
        # slowly the first ran): a token is back within about 2 s.
        wait_until(lambda: mine.post(f"{V1}/tasks", json=body).status_code == 202,
                   timeout=6, interval=0.1, what="a token to come back")
        mine.close()
        theirs.close()
    finally:
        server.stop()
        store.cleanup()


def test_request_ids_are_echoed_or_made_and_logged(tokens_file, command):
    store = new_store().start()
    server = CodeqServer("--store-url", store.url, "--log-level", "debug", "--auth", "on",
                         "--tokens-file", str(tokens_file)).start()
    try:
        with httpx.Client(base_url=server.base, timeout=20) as client:
            reply = client.post(f"{V1}/tasks", json={"command": command, "payload": 1},
                                headers={"X-Request-Id": "req-abc-123",
                                         "Authorization": f"Bearer {static_token('producer')}"})
            assert reply.status_code == 202
            assert reply.headers["X-Request-Id"] == "req-abc-123"
            made = [client.get(f"{V1}/tasks/00000000-0000-4000-8000-000000000000")
                    for _ in range(2)]
            assert [m.status_code for m in made] == [401, 401]
            ids = [m.headers["X-Request-Id"] for m in made]
            assert ids[0] != ids[1] and all(len(i) == 24 for i in ids)
        wait_until(lambda: "req-abc-123" in server.log(), what="the request's log line")
        line = next(ln for ln in server.log().splitlines() if "req-abc-123" in ln)
        assert "POST /v1/codeq/tasks 202" in line and "token:producer" in line
    finally:
        server.stop()
        store.cleanup()
