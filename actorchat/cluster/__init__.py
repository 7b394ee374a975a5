"""Many processes as one system: membership and placement, on Redis.

The first layer of a cluster, and only that: which nodes are alive
(``Membership``, leases renewed by a greenlet) and which node owns each
conversation under which epoch (``Directory``, the epoch the PostgreSQL
store fences writes with). Nothing routes commands or events between nodes
yet, and a ``ChatSystem`` does not use this package: it is the foundation
the routing layer will stand on.

Needs redis-py (``pip install 'actorchat[cluster]'``); every Redis failure
is an ``actorchat.errors.ClusterError``.
"""

from __future__ import annotations

from actorchat.cluster._directory import Directory, Placement
from actorchat.cluster._membership import Membership
from actorchat.cluster._redis import RedisClient, connect

__all__ = ["Directory", "Membership", "Placement", "RedisClient", "connect"]
