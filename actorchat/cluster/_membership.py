"""Membership: which processes (nodes) are alive, by leases in Redis.

Every node holds a lease in one sorted set (``_keys.members_key``): its id
scored by the time its lease ends, in milliseconds of *Redis's* clock (the
scripts read ``TIME``), so the nodes' clocks never need to agree. A
background greenlet renews the lease every third of ``lease_ttl``; a node
that stops renewing (crashed, frozen, cut off) is dead to the others once
its lease ends, as in Orleans' membership table, and ``leave()`` removes a
node at once.

A node that finds its own lease had lapsed when it renews has been dead to
the others meanwhile: another node may have taken its conversations over
(with higher epochs, so the store fences its writes). It joins again and
calls ``on_lapse``, for the layer above to drop what it was serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent

from actorchat.cluster._keys import members_key
from actorchat.cluster._redis import RedisClient, connect
from actorchat.config import Config
from actorchat.errors import ClusterError, ConfigurationError

__all__ = ["Membership"]

log = logging.getLogger("actorchat.cluster")

# KEYS[1] members; ARGV node, ttl ms. Returns {renewed (1: was live), now ms}.
# Also drops leases that ended over a minute ago (no one reads them).
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
local live = 0
if old and tonumber(old) > now then live = 1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
return {live, now}
"""

# KEYS[1] members. The ids whose lease has not ended.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
"""

# KEYS[1] members; ARGV node. 1 if its lease has not ended.
_IS_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) > now then return 1 end
return 0
"""


class Membership:
    """This process as a node of the cluster: its lease, and the view of the others.

    Args:
        client: the Redis client (``connect``).
        node_id: this node's id (``Config.node_id``).
        lease_ttl: seconds a lease lasts; renewed every ``lease_ttl / 3``.
        namespace: the prefix of every key (one Redis may serve many clusters).
        on_lapse: called (in the heartbeat greenlet) when this node finds its
            lease had lapsed: the others took it for dead meanwhile.
    """

    def __init__(
        self,
        client: RedisClient,
        node_id: str,
        *,
        lease_ttl: float = 5.0,
        namespace: str = "actorchat",
        on_lapse: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.lease_ttl = lease_ttl
        self.namespace = namespace
        self.on_lapse = on_lapse
        self._key = members_key(namespace)
        self._ttl_ms = max(1, int(lease_ttl * 1000))
        self._heartbeat: gevent.Greenlet[Any] | None = None
        #: Joined and not left since (a lease found lapsed is then news).
        self._member = False
        #: Lease renewals that succeeded, and times a renewal found the lease lapsed.
        self.renewals = 0
        self.lapses = 0
        r = client.redis
        self._renew = r.register_script(_RENEW)
        self._live = r.register_script(_LIVE)
        self._is_live = r.register_script(_IS_LIVE)

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> Membership:
        """This process's membership as ``config`` says (``redis_url``, ``node_id``, ...).

        Not joined yet: ``join()`` takes the lease. Raises
        ``ConfigurationError`` if ``redis_url`` is empty.
        """
        if not config.redis_url:
            raise ConfigurationError("the cluster needs redis_url (ACTORCHAT_REDIS_URL)")
        client = connect(config.redis_url, timeout=config.redis_timeout)
        return cls(client, config.node_id, lease_ttl=config.lease_ttl, **kwargs)

    def __repr__(self) -> str:
        return f"Membership({self.node_id!r}, joined={self.joined})"

    @property
    def joined(self) -> bool:
        """Whether the heartbeat greenlet is running."""
        return self._heartbeat is not None and not self._heartbeat.dead

    def join(self) -> Membership:
        """Take a lease and start renewing it (raise ``ClusterError`` if Redis fails).

        Joining again after the heartbeat stopped (without ``leave``) and the
        lease ran out calls ``on_lapse``, as the heartbeat would have.
        """
        if self.joined:
            return self
        if not self.renew() and self._member:
            self._lapsed()  # joined before, never left: its lease ran out meanwhile
        self._member = True
        self._heartbeat = gevent.spawn(self._beat)
        log.info("node %s joined the cluster (lease %.1fs)", self.node_id, self.lease_ttl)
        return self

    def renew(self) -> bool:
        """Renew the lease once; False if it had lapsed (then it is taken again)."""
        with self.client.guard(f"renewing the lease of node {self.node_id}"):
            live, _now = self._renew(keys=[self._key], args=[self.node_id, self._ttl_ms])
        self.renewals += 1
        return bool(live)

    def _beat(self) -> None:
        interval = self.lease_ttl / 3
        while True:
            gevent.sleep(interval)
            try:
                was_live = self.renew()
            except ClusterError as exc:
                log.warning("%s; retrying in %.2fs", exc, interval)
                continue
            if not was_live:
                self._lapsed()

    def _lapsed(self) -> None:
        self.lapses += 1
        log.warning("node %s: its lease had lapsed; the others took it for dead", self.node_id)
        if self.on_lapse is not None:
            try:
                self.on_lapse()
            except Exception:
                log.exception("on_lapse of node %s failed", self.node_id)

    def leave(self) -> None:
        """Stop renewing and drop the lease at once: the others see this node gone now.

        Raises ``ClusterError`` if Redis fails (the lease then ends by itself).
        """
        if self._heartbeat is not None:
            self._heartbeat.kill()
            self._heartbeat = None
        self._member = False
        with self.client.guard(f"node {self.node_id} leaving"):
            self.client.redis.zrem(self._key, self.node_id)
        log.info("node %s left the cluster", self.node_id)

    def live_nodes(self) -> list[str]:
        """The ids of the nodes whose lease has not ended, sorted."""
        with self.client.guard("listing live nodes"):
            nodes = self._live(keys=[self._key])
        return sorted(str(n) for n in nodes)

    def is_live(self, node_id: str) -> bool:
        """Whether ``node_id`` holds a lease that has not ended."""
        with self.client.guard(f"looking up node {node_id}"):
            return bool(self._is_live(keys=[self._key], args=[node_id]))
