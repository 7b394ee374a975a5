"""What every request handler of one server shares, built once by the app factory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actorchat.errors import Forbidden, Overloaded

if TYPE_CHECKING:
    from actorchat._system import ChatSystem
    from actorchat.config import Config
    from actorchat.server._auth import Authenticator
    from actorchat.server._heartbeat import Heartbeat
    from actorchat.server._hub import Hub
    from actorchat.server._limits import RateLimiter
    from actorchat.server._metrics import ServerMetrics

__all__ = ["ServerContext"]


@dataclass(slots=True)
class ServerContext:
    """The server's collaborators and its little mutable state.

    ``connections`` holds every open WebSocket connection (for the
    capacity limit, stats and the 1001 close at shutdown); ``draining`` is
    set once shutdown begins, after which nothing new is started.
    """

    config: Config
    chat: ChatSystem
    hub: Hub
    auth: Authenticator
    limiter: RateLimiter
    metrics: ServerMetrics
    heartbeat: Heartbeat
    connections: dict[Any, None] = field(default_factory=dict)
    draining: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> None:
        """Start the fan-out and the pings."""
        self.hub.start()
        self.heartbeat.start()

    def stop(self) -> None:
        self.heartbeat.stop()
        self.hub.stop()

    def next_id(self) -> int:
        """A process-unique number for a connection's log lines."""
        return next(self._ids)

    def check_open(self) -> None:
        """Refuse to start new work once shutdown has begun."""
        if self.draining:
            raise Overloaded("the server is shutting down; retry on another instance")

    def check_owner(self, cid: str, user_id: str) -> None:
        """Raise ``NotFound`` / ``Forbidden`` unless ``user_id`` owns ``cid``.

        Owners never change, so the hub's map answers after the first look.
        """
        hub = self.hub
        owner = hub.owners.get(cid)
        if owner is None:
            owner = self.chat.get_conversation(cid).owner
            hub.learn_owner(cid, owner)
        if owner != user_id:
            raise Forbidden(f"conversation {cid!r} belongs to another user")
