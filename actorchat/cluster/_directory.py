"""The directory: which node owns each conversation, and under which epoch.

One entry per conversation (``_keys.entry_key``, a hash tag of its own): the
owning ``node`` and the ``epoch`` of its ownership. The epoch only grows: each
claim increments it, and a release leaves it in place, so every owner a
conversation ever had has a distinct epoch, higher than all before (the
fencing token of Orleans' grain directory, Akka's shard handoff).

**The epoch is the one the PostgreSQL store fences writes with.** The node
that ``activate`` answered for itself calls, before it loads the conversation::

    placement = directory.activate(cid)
    if placement.node == directory.node_id:
        store.set_epoch(cid, placement.epoch)   # every write of cid carries it
        store.load(cid)                         # takes the row over (claim)

A node that lost the conversation (its lease lapsed and another took over
with a higher epoch) then has each write refused with ``Fenced``, so it can
never append between the new owner's writes. Two requirements follow:

- All writes of a conversation in a cluster carry directory epochs: open the
  store with ``PostgresStore(epoch=0)`` so that a write without ``set_epoch``
  is older than any owner's. A row already owned under a higher epoch (a
  database used before the cluster, whose stores took epochs from its
  sequence) refuses the directory's small epochs: pass that row's epoch as
  ``min_epoch`` to ``activate``.
- Redis must keep its data (AOF or RDB persistence): epochs restarting at 1
  after a wipe are refused by rows owned at higher ones, safely but until
  ``min_epoch`` lifts them.

Liveness is membership's (``Membership.is_live``): the entry and the lease live
in different hash slots, so ``activate`` reads the owner, checks its lease,
and then claims with a compare-and-set on the entry alone (owner and epoch as
read): of many racing claimants exactly one wins, and the others see it.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorchat.cluster._keys import entry_key
from actorchat.cluster._membership import Membership
from actorchat.errors import ClusterError

__all__ = ["Directory", "Placement"]

# KEYS[1] entry; ARGV expected node ('' none), expected epoch ('' none), new
# node, min epoch. Returns {won (1/0), node, epoch} as the entry is after.
_CLAIM = """
local node = redis.call('HGET', KEYS[1], 'node') or ''
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
if node ~= ARGV[1] or epoch ~= ARGV[2] then
  return {0, node, epoch}
end
local next = (tonumber(epoch) or 0) + 1
local floor = tonumber(ARGV[4])
if next < floor then next = floor end
redis.call('HSET', KEYS[1], 'node', ARGV[3], 'epoch', next)
return {1, ARGV[3], tostring(next)}
"""

# KEYS[1] entry; ARGV node, epoch. 1 if released (it was that owner's, at that epoch).
_RELEASE = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1]
   and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'node')
  return 1
end
return 0
"""

#: Claims lost to other claimants before ``activate`` gives up (each loss
#: means the entry changed, so this is reached only under absurd churn).
_MAX_ROUNDS = 16


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a conversation lives: its owning node and the epoch of that ownership.

    Attributes:
        conversation_id: the conversation.
        node: the owning node's id.
        epoch: the owner epoch (for ``Store.set_epoch``).
        claimed: True if this call made ``node`` the owner (a new epoch).
    """

    conversation_id: str
    node: str
    epoch: int
    claimed: bool = False


class Directory:
    """Conversation -> (owning node, epoch), shared by every node through Redis.

    Args:
        membership: this node's membership (its client, id, namespace and
            the view of which nodes are live).
    """

    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self.client = membership.client
        self.node_id = membership.node_id
        self.namespace = membership.namespace
        r = self.client.redis
        self._claim = r.register_script(_CLAIM)
        self._release = r.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"Directory({self.node_id!r})"

    def _entry(self, cid: str) -> tuple[str, str]:
        with self.client.guard(f"reading the owner of conversation {cid}"):
            node, epoch = self.client.redis.hmget(entry_key(self.namespace, cid), "node", "epoch")
        return str(node or ""), str(epoch or "")

    def activate(
        self, conversation_id: str, prefer_node: str | None = None, *, min_epoch: int = 0
    ) -> Placement:
        """Where ``conversation_id`` is to be served, claiming it if no live node has it.

        If a live node owns it, that owner (``claimed=False``). Otherwise
        (no owner, or the owner's lease lapsed) it is claimed for
        ``prefer_node`` when that node is live, else for this node, with an
        epoch higher than every earlier one (and at least ``min_epoch``).

        Raises:
            ClusterError: Redis failed, or the claim kept losing races.
        """
        cid = conversation_id
        target = self.node_id
        if prefer_node and prefer_node != self.node_id and self.membership.is_live(prefer_node):
            target = prefer_node
        key = entry_key(self.namespace, cid)
        for _ in range(_MAX_ROUNDS):
            node, epoch = self._entry(cid)
            if node and (node == target or self.membership.is_live(node)):
                return Placement(cid, node, int(epoch))
            with self.client.guard(f"claiming conversation {cid}"):
                won, node, epoch = self._claim(
                    keys=[key], args=[node, epoch, target, max(0, min_epoch)]
                )
            if int(won):
                return Placement(cid, str(node), int(epoch), claimed=True)
        msg = f"claiming conversation {cid}: lost {_MAX_ROUNDS} races in a row"
        raise ClusterError(msg)

    def owner(self, conversation_id: str) -> Placement | None:
        """The live owner of ``conversation_id``; None if it has none (or its lease lapsed)."""
        node, epoch = self._entry(conversation_id)
        if node and self.membership.is_live(node):
            return Placement(conversation_id, node, int(epoch))
        return None

    def release(self, conversation_id: str, epoch: int) -> bool:
        """Give ``conversation_id`` up, if this node still owns it with ``epoch``.

        False (nothing changed) when another node, or a newer epoch of this
        one, owns it now. The epoch stays: the next owner's is higher.
        """
        key = entry_key(self.namespace, conversation_id)
        with self.client.guard(f"releasing conversation {conversation_id}"):
            done = self._release(keys=[key], args=[self.node_id, str(epoch)])
        return bool(done)
