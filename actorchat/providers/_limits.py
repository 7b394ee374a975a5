"""Per-model pools and rate limits, wrapped around every provider.

A model's backend takes a bounded number of concurrent streams and a
bounded number of requests per minute; past them it answers 429 and every
conversation retries at once. ``LimitedProvider`` keeps each model inside
its limits instead, on our side:

- at most ``max_concurrency`` upstream streams at once (0: no bound);
- a token bucket of ``requests_per_minute`` (0: no limit), refilled
  continuously, holding ``options.burst`` requests (default: one second's
  worth, at least one); retries draw from it too;
- generations that cannot start wait in arrival order, in a queue of at
  most ``max_waiting``; past it ``stream`` raises ``Overloaded`` at once,
  so a flood costs a refusal, not unbounded memory. A cancel while waiting
  leaves the queue.

``stats()`` gives the model's counters: in flight, queued, requests,
retries, errors (provider failures after retries), timeouts, rejected.

Providers that run in-process (the mock) register with ``limited=False``:
they get the counters but no bound, since there is no backend to protect.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.event import Event

from actorchat.config import ModelConfig
from actorchat.errors import ActorchatError, Overloaded, Timeout
from actorchat.providers._base import GenerationRequest, Provider, StreamEnd, StreamItem

__all__ = ["LimitedProvider", "Limiter", "TokenBucket"]


class TokenBucket:
    """Requests per second with a burst allowance; time is passed in.

    ``take`` may run the bucket into debt (for retries, which already hold
    a slot): the caller then waits the returned time before sending.
    """

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(capacity, 1.0)
        self.tokens = self.capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def try_take(self, now: float) -> float:
        """Take one token if there is one (0.0); else the seconds until there is."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> float:
        """Take one token now, into debt if need be; return the wait that pays it."""
        self._refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Limiter:
    """Concurrency slots, a rate, and an ordered bounded queue for one model.

    All state is touched from greenlets of one hub, so there is no lock.
    """

    def __init__(
        self,
        name: str,
        max_concurrency: int,
        requests_per_minute: float,
        max_waiting: int,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_waiting = max(max_waiting, 0)
        self.clock = clock
        self.bucket: TokenBucket | None = None
        if requests_per_minute > 0:
            rate = requests_per_minute / 60.0
            self.bucket = TokenBucket(rate, burst if burst else max(rate, 1.0), clock())
        self.in_flight = 0
        self.rejected = 0
        self._waiters: deque[Event] = deque()
        self._wakeup: gevent.Greenlet[Any, Any] | None = None

    @property
    def queued(self) -> int:
        """Generations waiting for a slot or a token."""
        return len(self._waiters)

    def _free(self) -> bool:
        return self.max_concurrency <= 0 or self.in_flight < self.max_concurrency

    def acquire(self) -> None:
        """Take a slot and a token, waiting in order; ``Overloaded`` if the queue is full."""
        if not self._waiters and self._free():
            wait = self.bucket.try_take(self.clock()) if self.bucket is not None else 0.0
            if wait == 0.0:
                self.in_flight += 1
                return
        if len(self._waiters) >= self.max_waiting:
            self.rejected += 1
            msg = (
                f"model {self.name!r} is at capacity: {self.in_flight} streams running, "
                f"{len(self._waiters)} waiting"
            )
            raise Overloaded(msg)
        granted = Event()
        self._waiters.append(granted)
        try:
            self._pump()
            granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # granted, but we are leaving (cancelled)
            else:
                try:
                    self._waiters.remove(granted)
                except ValueError:
                    pass
                self._pump()
            raise

    def release(self) -> None:
        """Give a slot back and let the next waiter in."""
        self.in_flight -= 1
        if self._waiters:
            self._pump()

    def retry_budget(self) -> float:
        """Reserve a request for a retry; seconds to wait before sending it."""
        if self.bucket is None:
            return 0.0
        return self.bucket.take(self.clock())

    def _pump(self) -> None:
        waiters = self._waiters
        while waiters and self._free():
            if self.bucket is not None:
                wait = self.bucket.try_take(self.clock())
                if wait > 0:
                    if self._wakeup is None:
                        self._wakeup = gevent.spawn_later(wait, self._on_wakeup)
                    return
            self.in_flight += 1
            waiters.popleft().set()

    def _on_wakeup(self) -> None:
        self._wakeup = None
        self._pump()


class LimitedProvider(Provider):
    """A provider inside its model's limits, with per-model counters.

    ``create_provider`` wraps every provider in one; ``inner`` is the
    wrapped provider. See the module docstring.
    """

    def __init__(self, inner: Provider, model: ModelConfig, *, limited: bool = True) -> None:
        self.inner = inner
        self.model = model
        self.name = inner.name
        self.limited = limited
        burst = model.options.get("burst")
        if not isinstance(burst, int | float) or isinstance(burst, bool):
            burst = None
        self.limiter = Limiter(
            model.name,
            model.max_concurrency if limited else 0,
            model.requests_per_minute if limited else 0.0,
            model.max_waiting,
            None if burst is None else float(burst),
        )
        if limited:
            inner.use_retry_budget(self.limiter.retry_budget)
        self.requests = 0
        self.completed = 0
        self.errors = 0
        self.timeouts = 0

    def __repr__(self) -> str:
        return f"<LimitedProvider {self.inner!r}>"

    def stream(self, request: GenerationRequest) -> Iterator[StreamItem]:
        """The inner stream, once a slot (and a rate token) is ours."""
        limiter = self.limiter
        limiter.acquire()
        self.requests += 1
        inner = self.inner.stream(request)
        try:
            for item in inner:
                if type(item) is StreamEnd:
                    # Counted here: the conversation closes the stream
                    # as soon as it has the end, without reading on.
                    self.completed += 1
                yield item
        except ActorchatError as exc:
            self.errors += 1
            if isinstance(exc, Timeout):
                self.timeouts += 1
            raise
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()
            limiter.release()

    def waits(self) -> bool:
        # A limited model may wait for a slot or a rate token.
        return self.limited or self.inner.waits()

    def check(self) -> bool:
        return self.inner.check()

    def prompt_tokens(self, request: GenerationRequest) -> int | None:
        return self.inner.prompt_tokens(request)

    def close(self) -> None:
        self.inner.close()

    def stats(self) -> dict[str, Any]:
        """The model's counters, for ``/api/v1/admin/stats`` and ``/metrics``."""
        limiter = self.limiter
        out: dict[str, Any] = {
            "model": self.model.name,
            "provider": self.name,
            "in_flight": limiter.in_flight,
            "queued": limiter.queued,
            "max_concurrency": limiter.max_concurrency,
            "requests_per_minute": self.model.requests_per_minute if self.limited else 0.0,
            "max_waiting": limiter.max_waiting,
            "requests": self.requests,
            "retries": 0,
            "completed": self.completed,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "rejected": limiter.rejected,
        }
        upstream = self.inner.stats()
        if upstream:
            out["retries"] = upstream.get("retries", 0)
            out["upstream_requests"] = upstream.get("requests", self.requests)
        return out
