"""The system's counters: one home, bumped by the actors, read by every exporter.

Conversations and the supervisor count in place (one gevent hub: plain
integers need no lock); ``ChatSystem.stats()``, the server's Prometheus
collector and the dashboard read the same object. It sits on the lowest
floor so that the actors below the system can be typed against it.
"""

from __future__ import annotations

__all__ = ["Metrics"]


class Metrics:
    """System-wide counters, bumped in place by actors (one hub: no locks)."""

    __slots__ = (
        "crashes",
        "failed",
        "generating",
        "messages",
        "passivated",
        "provider_errors",
        "restarts",
        "tokens",
    )

    def __init__(self) -> None:
        self.messages = 0
        self.tokens = 0
        self.generating = 0
        self.provider_errors = 0
        self.crashes = 0
        self.restarts = 0
        self.failed = 0
        self.passivated = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
