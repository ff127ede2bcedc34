"""codeQ's HTTP/1.1 server: httptools parsing under uvloop, calling the ASGI app directly.

``connection`` reads requests off one connection (bounds, timers,
pipelining), ``exchange`` is one request and its response (the ASGI
``receive`` and ``send``), ``server`` accepts connections and stops
gracefully.
"""

from codeq.http.server import HttpServer

__all__ = ["HttpServer"]
