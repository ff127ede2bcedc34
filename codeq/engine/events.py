"""What the engine reports as it changes tasks: counts for whoever observes
(the metrics, codeq/metrics). The default observer ignores them."""

from __future__ import annotations


class Observer:
    """Called after each change, with how many tasks of a queue it touched."""

    def created(self, tenant: str, command: str, n: int) -> None:
        pass

    def claimed(self, tenant: str, command: str, n: int) -> None:
        pass

    def finished(self, tenant: str, command: str, status: str, n: int) -> None:
        """Results submitted (status COMPLETED or FAILED)."""

    def dead_lettered(self, tenant: str, command: str, reason: str, n: int) -> None:
        """Dead-lettered after the last attempt (reason MAX_ATTEMPTS or LEASE_EXPIRED)."""

    def lease_expired(self, tenant: str, command: str, n: int) -> None:
        pass

    def store_call(self, seconds: float, failed: bool) -> None:
        """One script call's round trip."""

    def callback_attempt(self, outcome: str) -> None:
        """One result callback POST: delivered, retry or failed (no attempt left)."""

    def webhook_sent(self, outcome: str) -> None:
        """One availability webhook POST: delivered or failed."""
