"""Key names, designed for Redis Cluster.

A Lua script or a transaction may only touch keys of one hash slot, and the
slot of a key with ``{tag}`` in it is the tag's. So membership lives under one
tag (``{nodes}``: the whole table is read and written by one script), and
each conversation's directory entry under a tag of its own
(``{c:<conversation id>}``): entries spread over the cluster, and the claim
of one conversation is one script on one slot.
"""

from __future__ import annotations

__all__ = ["entry_key", "members_key"]


def members_key(namespace: str) -> str:
    """The membership table: a sorted set of node ids scored by lease expiry (ms)."""
    return f"{namespace}:{{nodes}}:members"


def entry_key(namespace: str, conversation_id: str) -> str:
    """A conversation's directory entry: a hash of ``node`` and ``epoch``."""
    return f"{namespace}:{{c:{conversation_id}}}:owner"
