"""The Redis client of the cluster layer: one factory, one way errors come out.

redis-py speaks plain sockets, so in a gevent-monkey-patched process its
blocking calls yield to other greenlets; nothing here needs an event loop.
Every failure leaves this layer as one ``ClusterError`` line naming what was
being done, with the password scrubbed and the redis-py error as its cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from actorchat._redact import redact, scrub
from actorchat.errors import ClusterError, ConfigurationError

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["RedisClient", "connect"]


class RedisClient:
    """A redis-py client with the URL it came from, for messages without the password.

    Attributes:
        redis: the redis-py client (a connection pool; safe across greenlets).
        where: the URL, its password replaced by ``***``.
    """

    __slots__ = ("_secrets", "redis", "where")

    def __init__(self, redis: Redis, url: str) -> None:
        self.redis = redis
        self.where = redact(url)
        password = urlsplit(url).password
        self._secrets = [unquote(password)] if password else []

    def __repr__(self) -> str:
        return f"RedisClient({self.where!r})"

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn any redis-py error inside into a one-line ``ClusterError`` about ``what``."""
        from redis.exceptions import RedisError

        try:
            yield
        except RedisError as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            msg = scrub(f"{what} (Redis at {self.where}): {detail}", self._secrets)
            raise ClusterError(msg) from exc

    def close(self) -> None:
        """Close the pool's connections (the client reconnects if used again)."""
        self.redis.close()


def connect(url: str, *, timeout: float = 2.0) -> RedisClient:
    """A client for ``url`` (``redis://[:password@]host:port/db``, ``rediss://``, ``unix://``).

    Connecting is lazy: a Redis that is down fails the first call, not this
    one. ``timeout`` bounds connecting and each read and write. A broken
    connection is retried once at once, on a new connection (what lets a
    client ride out a Redis restart); a Redis still down after that is a
    ``ClusterError``, never a wait longer than about twice ``timeout``.

    Raises:
        ConfigurationError: redis-py is not installed, or the URL is malformed.
    """
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        msg = "redis_url is set but redis-py is not installed: pip install 'actorchat[cluster]'"
        raise ConfigurationError(msg) from exc
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": True,
        "client_name": "actorchat",
    }
    try:
        client = redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        msg = f"invalid configuration: redis_url: {exc} (got {redact(url)!r})"
        raise ConfigurationError(msg) from None
    return RedisClient(client, url)
