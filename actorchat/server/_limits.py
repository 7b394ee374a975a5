"""Per-user message rate limiting (PROTOCOL.md rule 14).

"30 messages per 10 s per user" holds for *every* 10 s window: each user
keeps the times of their last ``rate_limit_messages`` accepted messages,
and a message is refused while that many fall within the last
``rate_limit_window`` seconds. (A token bucket refilling evenly, the first
version, let a user send the burst and then the refill: up to twice the
limit in some windows.) Shared by all of a user's connections and the HTTP
API; everything runs on one gevent hub, so no lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from actorchat.errors import RateLimited

__all__ = ["RateLimiter"]


class RateLimiter:
    """Sliding-window message counts keyed by user id.

    Args:
        limit: messages allowed in any window.
        window: the window, in seconds.
        clock: monotonic time source (tests may pass their own).
    """

    #: Users tracked before those with no message in the window are dropped
    #: (a sweep on insert).
    MAX_IDLE_USERS = 100_000

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}

    def take(self, user_id: str) -> None:
        """Count one message of the user's, or raise ``RateLimited``.

        The error's ``retry_after`` is when the oldest message in the window
        leaves it.
        """
        now = self._clock()
        sent = self._sent.get(user_id)
        if sent is None:
            if len(self._sent) >= self.MAX_IDLE_USERS:
                self._sweep(now)
            sent = self._sent[user_id] = deque(maxlen=self.limit)
        elif len(sent) >= self.limit and now - sent[0] < self.window:
            retry_after = round(sent[0] + self.window - now, 3)
            raise RateLimited(
                f"too many messages: at most {self.limit} per {self.window:g}s; "
                f"retry in {retry_after:g}s",
                retry_after,
            )
        sent.append(now)  # the deque's maxlen drops the oldest

    def _sweep(self, now: float) -> None:
        """Forget users whose messages all left the window: they carry no state."""
        self._sent = {u: s for u, s in self._sent.items() if now - s[-1] < self.window}
