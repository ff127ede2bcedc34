"""Push: result callbacks and availability webhooks (DESIGN.md, "Push").

Calls down into the engine for everything it keeps in the store; the API
reaches it only through ``Push``.
"""

from __future__ import annotations

from codeq.config import Settings
from codeq.engine import Engine
from codeq.push.availability import AvailabilityNotifier
from codeq.push.callbacks import Dispatcher
from codeq.push.destinations import Destinations
from codeq.push.sender import Sender


class Push:
    """The outbound side of one server process."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.destinations = Destinations(settings.webhook_allow)
        # One connection pool each, sized to what may be in flight: slow
        # subscribers never hold up callbacks (aiohttp counts the wait for a
        # pooled connection in the request's timeout).
        senders = [Sender(self.destinations, settings.webhook_secret, settings.callback_timeout,
                          settings.callback_concurrency) for _ in range(2)]
        self.callbacks = Dispatcher(engine, settings, senders[0])
        self.availability = AvailabilityNotifier(engine, settings, senders[1])
        self.senders = senders

    def url_problem(self, url: str) -> str | None:
        """Why ``url`` may not be a webhook, or None when it may."""
        return self.destinations.problem(url)

    def start(self) -> None:
        self.callbacks.start()
        self.availability.start()

    async def stop(self) -> None:
        await self.availability.stop()
        await self.callbacks.stop()
        for sender in self.senders:
            await sender.close()


__all__ = ["Push"]
