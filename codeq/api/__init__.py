"""HTTP layer: Falcon ASGI resources, one module per noun."""

from codeq.api.app import create_app

__all__ = ["create_app"]
