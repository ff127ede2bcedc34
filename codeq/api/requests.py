"""After each response: count and time it by route for the metrics, and at
debug level write an access line (with the request id codeQ's HTTP server
gave it, codeq/http). A plain call from the server, not a Falcon middleware:
that cost 6 % of the full cycle."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from codeq.http.exchange import REQUEST_ID_KEY
from codeq.metrics.prom import Counting

PRINCIPAL_KEY = "codeq.principal"  # scope key: who the request was authenticated as
access = logging.getLogger("codeq.access")


def route_of(path: str, routes: frozenset[str]) -> str:
    """The route template a path matched (``/v1/codeq/tasks/{id}``), or "unmatched"."""
    if path in routes:
        return path
    parts = path.rstrip("/").split("/")
    for i, part in enumerate(parts):
        if len(part) == 36 and part.count("-") == 4:
            parts[i] = "{id}"
    if len(parts) > 5 and parts[3] == "admin" and parts[4] == "queues":
        parts[5] = "{command}"
    route = "/".join(parts)
    return route if route in routes else "unmatched"


def response_hook(counting: Counting, routes: Iterable[str],
                  ) -> Callable[[dict[str, Any], int, float], None]:
    known = frozenset(routes)

    def on_response(scope: dict[str, Any], status: int, seconds: float) -> None:
        method, path = scope["method"], scope["path"]
        counting.request(route_of(path, known), method, str(status), seconds)
        if access.isEnabledFor(logging.DEBUG):
            access.debug("%s %s %d %.1f ms %s %s", method, path, status, seconds * 1000,
                         scope.get(PRINCIPAL_KEY, "-"),
                         scope.get(REQUEST_ID_KEY, b"-").decode("latin-1"))

    return on_response
