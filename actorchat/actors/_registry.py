"""The registry actor: conversation id -> live actor.

Only the registry actor changes the map (its mailbox orders registrations
and removals), but lookups never go through its mailbox: the map it owns is
published read-only through ``Registry``, and reading a dict on one gevent
hub is atomic. With 100,000 conversations a funnel through one mailbox would
be the system's bottleneck; this is the same trade Elixir's ``Registry``
makes with its ETS table.
"""

from __future__ import annotations

from typing import Any

import pykka

from actorchat.actors._base import GreenletActor
from actorchat.actors._messages import Register, Unregister

__all__ = ["Registry", "RegistryActor"]


class RegistryActor(GreenletActor):
    """Owns the id map; a ``Registry`` reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[str, pykka.ActorRef[Any]] = {}

    def on_receive(self, message: Any) -> Any:
        if type(message) is Register:
            table = self.table
            for cid, ref in message.entries:
                table[cid] = ref
            return len(message.entries)
        if type(message) is Unregister:
            current = self.table.get(message.conversation_id)
            if current is not None and (message.ref is None or current is message.ref):
                del self.table[message.conversation_id]
            return None
        return super().on_receive(message)


class Registry:
    """Read side of the registry, shared by the API, supervisor and server."""

    def __init__(self, actor: RegistryActor) -> None:
        self.ref = actor.actor_ref
        self._table = actor.table

    def lookup(self, conversation_id: str) -> pykka.ActorRef[Any] | None:
        return self._table.get(conversation_id)

    def ids(self) -> list[str]:
        """Ids of the conversations with an actor (a snapshot)."""
        return list(self._table)

    def count(self) -> int:
        return len(self._table)
