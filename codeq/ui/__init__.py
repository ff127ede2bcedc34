"""The web dashboard at ``/ui/`` (``--ui on``, the default).

Server-rendered: each page is a shell whose regions htmx loads from HTML
fragments (Jinja2 templates), polled every few seconds; the token, when
authentication is on, lives only in the browser tab's sessionStorage and
goes out as the Authorization header, so fragments are authenticated like
the admin API. The dashboard reads through the engine calls the admin API
makes and changes state only through the admin API's endpoints: it adds no
second way to change anything. htmx and uPlot ship inside the package
(static/VENDORED.md); nothing is fetched from elsewhere or built at install.
"""

from __future__ import annotations

from collections.abc import Callable

import falcon.asgi

from codeq.api.common import Context
from codeq.metrics.prom import Counting
from codeq.ui import pages
from codeq.ui.throughput import Recorder


def mount(app: falcon.asgi.App, route: Callable[[str, object], None], ctx: Context,
          counting: Counting) -> None:
    """Add the dashboard's routes to ``app``, and the recorder of its throughput series."""
    app.add_middleware(Recorder(ctx.engine, counting))
    ui = pages.Ui(ctx)
    at = pages.UI
    route(at, pages.Shell(ui, "overview.html"))
    route(f"{at}/queue", pages.Shell(ui, "queue.html", "command"))
    route(f"{at}/task", pages.Shell(ui, "task.html", "id"))
    route(f"{at}/static/{{name}}", pages.Static())
    for name, fragment in (("whoami", pages.WhoAmI), ("overview", pages.Overview),
                           ("throughput", pages.Throughput), ("depths", pages.Depths),
                           ("inflight", pages.InFlight), ("dlq", pages.DeadLetters),
                           ("task", pages.Task)):
        route(f"{at}/fragments/{name}", fragment(ui))
