"""Per-user message rate limiting (PROTOCOL.md rule 14).

A token bucket per user, shared by all of the user's connections and the
HTTP API: ``rate_limit_messages`` tokens refilled evenly over
``rate_limit_window`` seconds, so a burst of that many is allowed and the
long-run rate is capped. Everything runs on one gevent hub, so the buckets
need no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from actorchat.errors import RateLimited

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets keyed by user id.

    Args:
        capacity: tokens in a full bucket (the burst allowed).
        window: seconds to refill a whole bucket.
        clock: monotonic time source (tests may pass their own).
    """

    #: Buckets kept before idle full ones are dropped (a sweep on insert).
    MAX_IDLE_BUCKETS = 100_000

    def __init__(
        self, capacity: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / window
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, user_id: str, cost: float = 1.0) -> None:
        """Spend ``cost`` tokens of the user's bucket or raise ``RateLimited``.

        The error's ``retry_after`` is when enough tokens will be back.
        """
        now = self._clock()
        tokens, last = self._buckets.get(user_id, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < cost:
            retry_after = round((cost - tokens) / self.rate, 3)
            self._buckets[user_id] = (tokens, now)
            raise RateLimited(
                f"too many messages: at most {self.capacity:g} per "
                f"{self.capacity / self.rate:g}s; retry in {retry_after:g}s",
                retry_after,
            )
        if len(self._buckets) >= self.MAX_IDLE_BUCKETS and user_id not in self._buckets:
            self._sweep(now)
        self._buckets[user_id] = (tokens - cost, now)

    def _sweep(self, now: float) -> None:
        """Forget buckets that have refilled completely: they carry no state."""
        full = self.capacity / self.rate
        self._buckets = {u: b for u, b in self._buckets.items() if now - b[1] < full}
