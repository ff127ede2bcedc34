"""A pub/sub connection that dies silently (a NAT or firewall dropping the
idle flow without a reset) costs long polls latency, never a wrong answer."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import SERVE_ARGS
from tests.support import CodeqServer, StallingProxy, not_on_cluster, poll_waiting, wait_until

V1 = "/v1/codeq"
EVENTS = b"codeq-events"  # the CLIENT SETNAME of codeQ's pub/sub connection

pytestmark = not_on_cluster("the StallingProxy stands in front of one store process")


@pytest.fixture
def behind_proxy(store_server, request):
    """codeq serve reaching the store through a proxy that can stall flows."""
    proxy = StallingProxy(store_server.port)
    server = CodeqServer("--store-url", proxy.url, *SERVE_ARGS, *request.param).start()
    with httpx.Client(base_url=server.base, timeout=40) as api:
        wait_until(lambda: api.get("/readyz").status_code == 200, 10, what="ready")
        yield proxy, api
    server.stop()
    proxy.close()


def claim_in_background(api, command, wait):
    outcome = {}

    def run():
        started = time.monotonic()
        resp = api.post(f"{V1}/tasks/claim", headers={"X-Worker-Id": "w1"},
                        json={"commands": [command], "waitSeconds": wait})
        outcome.update(status=resp.status_code, body=resp, elapsed=time.monotonic() - started)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


# A store timeout far beyond the poll: the dead subscriber is not noticed in
# time, so only the poll's last look can find the task.
@pytest.mark.parametrize("behind_proxy", [("--store-timeout", "60")], indirect=True)
def test_a_long_poll_whose_wake_up_was_lost_still_gets_the_task(behind_proxy, command,
                                                                 store_view):
    proxy, api = behind_proxy
    assert len(proxy.stall(EVENTS)) == 1
    thread, outcome = claim_in_background(api, command, 2)
    poll_waiting(store_view, command)  # its wake-up will go to the stalled flow
    task = api.post(f"{V1}/tasks", json={"command": command, "payload": {}}).json()
    thread.join(10)
    assert outcome["status"] == 200, "the task was ready, yet the poll answered 204"
    assert outcome["body"].json()["id"] == task["id"]
    assert outcome["elapsed"] >= 1.9  # not woken: found by the last look


@pytest.mark.parametrize("behind_proxy", [("--store-timeout", "1")], indirect=True)
def test_a_silently_dead_subscriber_is_found_and_replaced(behind_proxy, command, store_view):
    proxy, api = behind_proxy
    proxy.refuse_new = True
    [stalled] = proxy.stall(EVENTS)
    # Its PING goes unanswered: the process drops it, cannot reconnect yet,
    # and says it is not ready.
    wait_until(lambda: api.get("/readyz").status_code == 503, 10, 0.05,
               "/readyz to notice the dead subscriber")
    proxy.refuse_new = False
    wait_until(lambda: api.get("/readyz").status_code == 200, 10, 0.05, "a new subscriber")
    # The stalled flow was dropped by codeQ and another one took its place.
    assert stalled.closed
    assert [c for c in proxy.matching(EVENTS) if c is not stalled]

    # Wake-ups flow again: a long poll is answered as soon as the task exists.
    thread, outcome = claim_in_background(api, command, 20)
    poll_waiting(store_view, command)
    api.post(f"{V1}/tasks", json={"command": command, "payload": {}})
    thread.join(25)
    assert outcome["status"] == 200
    assert outcome["elapsed"] < 2
