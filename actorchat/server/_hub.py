"""The fan-out: one bus listener for the whole server, routed to connections.

The server hears every conversation's events as a listener of the bus
(``EventBus.listen``): each is routed as it is published, on the
publisher's greenlet, to the outboxes that want it. Routing never waits
(a direct write or an outbox append), and with no queue between the bus
and the sockets a chunk no longer waits a turn of the hub's loop to move
on: under load, that turn was most of a new message's time to first chunk.

Where each event goes:

- connections that *joined* the conversation get the event as is
  (``message_received``, the stream events, ``error``, updates);
- the owner's other connections get rule 9's user-level updates
  (``conversation_created``, ``conversation_updated``, ``message_added``,
  ``conversation_deleted``), so sidebars stay in sync.

The owner of a conversation is learnt from its events (creation and updates
carry it) or from the ownership checks the server does anyway; an unknown
one is looked up in the store off the routing loop, its user-level events
held meanwhile so that they keep their order.

Join-with-replay is exact: every event published so far has been routed
when a connection joins (nothing waits in between), so the bus's replay
buffer taken at the join and the events routed after it neither overlap
nor leave a gap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

import gevent

from actorchat._events import (
    ConversationDeleted,
    ConversationState,
    ConversationUpdated,
    ErrorEvent,
    Event,
    MessageReceived,
    StreamComplete,
    StreamContent,
    StreamStart,
)
from actorchat.server._outbox import Entry, Relabeled

if TYPE_CHECKING:
    from actorchat._system import ChatSystem
    from actorchat.server._metrics import ServerMetrics

__all__ = ["Hub", "Subscriber"]

log = logging.getLogger("actorchat.server")


class Subscriber(Protocol):
    """What the hub needs of a connection."""

    user_id: str

    def deliver(self, entry: Entry, cid: str) -> None:
        """Queue an event routed to this connection (never blocks)."""


class Hub:
    """Routes bus events to connections; keeps who joined what and who owns what."""

    def __init__(self, chat: ChatSystem, metrics: ServerMetrics) -> None:
        self.chat = chat
        self.metrics = metrics
        #: conversation id -> owner's user id (conversations only; never stale:
        #: owners do not change, and deletions remove the entry).
        self.owners: dict[str, str] = {}
        self._joined: dict[str, dict[Subscriber, None]] = {}
        self._users: dict[str, dict[Subscriber, None]] = {}
        self._pending_owner: dict[str, list[Event]] = {}
        self._unlisten: Callable[[], None] | None = None
        # message id -> (model, started at) until a reply's first chunk (metrics)
        self._streams: dict[str, tuple[str, float]] = {}
        self.routed = 0

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        self._unlisten = self.chat.bus.listen(self._on_event)

    def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    def _on_event(self, item: Event | list[StreamContent]) -> None:
        if type(item) is list:
            route = self._route
            for event in item:
                route(event)
        else:
            self._route(item)  # type: ignore[arg-type]

    # -- membership -------------------------------------------------------------

    def connect(self, conn: Subscriber) -> None:
        self._users.setdefault(conn.user_id, {})[conn] = None

    def disconnect(self, conn: Subscriber, joined: Iterable[str]) -> None:
        for cid in list(joined):
            self.leave(conn, cid)
        conns = self._users.get(conn.user_id)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._users[conn.user_id]

    def join(self, conn: Subscriber, cid: str) -> None:
        """Route the conversation's events to ``conn`` from now on."""
        self._joined.setdefault(cid, {})[conn] = None

    def leave(self, conn: Subscriber, cid: str) -> None:
        conns = self._joined.get(cid)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._joined[cid]

    def joined(self, cid: str) -> Iterable[Subscriber]:
        return tuple(self._joined.get(cid, ()))

    def user_connections(self, user_id: str) -> int:
        return len(self._users.get(user_id, ()))

    def learn_owner(self, cid: str, owner: str) -> None:
        self.owners[cid] = owner

    # -- routing ------------------------------------------------------------------

    def _route(self, event: Event) -> None:
        self.routed += 1
        cid = event.conversation_id
        joined = self._joined.get(cid)
        if type(event) is StreamContent:  # the hot path: one per token
            self._count_chunk(event)
            if joined:
                for conn in tuple(joined) if len(joined) > 1 else joined:
                    conn.deliver(event, cid)
            return
        self._count(event)
        if isinstance(event, ConversationState):
            return
        if isinstance(event, ConversationUpdated):
            self.owners[cid] = event.conversation.owner
        if joined:
            for conn in tuple(joined):
                conn.deliver(event, cid)
        if isinstance(event, ConversationDeleted):
            self._user_level(cid, event)
            self.owners.pop(cid, None)
            for conn in tuple(joined or ()):
                self.leave(conn, cid)
        elif isinstance(event, ConversationUpdated | MessageReceived | StreamComplete):
            self._user_level(cid, event)

    def _user_level(self, cid: str, event: Event) -> None:
        if not self._users:
            return
        owner = self.owners.get(cid)
        if owner is None:
            pending = self._pending_owner.get(cid)
            if pending is None:
                self._pending_owner[cid] = [event]
                gevent.spawn(self._lookup_owner, cid)
            else:
                pending.append(event)
            return
        self._to_owner(owner, cid, event)

    def _to_owner(self, owner: str, cid: str, event: Event) -> None:
        conns = self._users.get(owner)
        if not conns:
            return
        if isinstance(event, ConversationUpdated):
            label = "conversation_created" if event.created else "conversation_updated"
        elif isinstance(event, ConversationDeleted):
            label = "conversation_deleted"
        elif isinstance(event, StreamComplete):
            if event.message is None:
                return  # nothing was stored: nothing was added
            # A finished reply is added as a message: {message}, like any other.
            event = MessageReceived(cid, event.message)
            label = "message_added"
        else:
            label = "message_added"
        joined = self._joined.get(cid, {})
        entry = Relabeled(label, event)
        for conn in tuple(conns):
            if conn not in joined:
                conn.deliver(entry, cid)

    def _lookup_owner(self, cid: str) -> None:
        owner: str | None = None
        try:
            store = self.chat.store
            conv = store.get_conversation(cid) if store is not None else None
            owner = conv.owner if conv is not None else None
        except Exception:
            log.warning("owner lookup for conversation %s failed", cid, exc_info=True)
        # Everything routed for this conversation meanwhile was parked in
        # order; an owner learnt meanwhile (from an event) wins.
        events = self._pending_owner.pop(cid, [])
        owner = self.owners.get(cid) or owner
        if owner is None:
            return
        self.owners.setdefault(cid, owner)
        for event in events:
            self._to_owner(owner, cid, event)

    # -- metrics ------------------------------------------------------------------------

    def _count_chunk(self, event: StreamContent) -> None:
        self.metrics.hot.stream_events["stream_content"] += 1
        first = event.index if event.first_index is None else event.first_index
        if first == 0:
            info = self._streams.pop(event.message_id, None)
            if info is not None:
                self.metrics.ttft.observe(time.monotonic() - info[1])

    def _count(self, event: Event) -> None:
        m = self.metrics
        if isinstance(event, StreamStart):
            self._streams[event.message_id] = (event.model, time.monotonic())
            m.hot.stream_events["stream_start"] += 1
        elif isinstance(event, StreamComplete):
            self._streams.pop(event.message_id, None)
            m.finished.labels(event.finish_reason).inc()
            m.hot.stream_events["stream_complete"] += 1
        elif isinstance(event, ErrorEvent):
            m.errors.labels(event.code).inc()
        elif isinstance(event, ConversationUpdated) and event.created:
            m.conversations_created.inc()
