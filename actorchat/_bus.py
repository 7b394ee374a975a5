"""The in-process event bus: conversations publish, subscribers read.

Publishing never blocks and never fails for the publisher. Each subscriber
has its own bounded queue; the overflow policy, applied in ``publish``:

1. Past the high-water mark (half the queue), a ``StreamContent`` delta that
   follows a delta of the same reply is *merged* into it (content joined,
   ``first_index`` kept, ``index`` advanced): the subscriber gets fewer,
   larger deltas and the text stays whole and gap-free.
2. When the queue is full anyway, the subscription is *closed* with reason
   ``"overflow"``: its reader gets the events it has, then ``closed`` is
   true. A client can subscribe again and resume (replay below).

A *listener* (``listen``) is called with every event as it is published,
on the publisher's greenlet: for a reader that routes without waiting (the
server's fan-out), it saves a queue and a greenlet wake-up per event, which
under load cost a whole turn of the hub's loop before a chunk moved on. A
listener must never yield nor raise (one that raises is logged and skipped).

The bus also keeps a replay buffer for every reply in progress (its
``StreamStart`` and deltas so far), so a subscriber that joins mid-reply can
receive what it missed first, atomically with subscribing: everything runs
on one gevent hub, and ``subscribe`` does not yield.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from gevent.event import Event as GEvent

from actorchat._events import Event, StreamComplete, StreamContent, StreamStart

__all__ = ["EventBus", "Listener", "Subscription"]

log = logging.getLogger("actorchat.bus")

#: Called with each event as published, or with a list of one reply's deltas.
Listener = Callable[[Event | list[StreamContent]], None]


class Subscription:
    """A bounded queue of events for one reader.

    Iterate it (blocking the calling greenlet) or call ``get(timeout)``.
    Close it when done; a closed subscription receives nothing more.
    """

    __slots__ = ("_bus", "_queue", "_ready", "close_reason", "closed", "key", "maxsize")

    def __init__(self, bus: EventBus, key: str | None, maxsize: int) -> None:
        self._bus = bus
        self.key = key
        self.maxsize = maxsize
        self._queue: deque[Event] = deque()
        self._ready = GEvent()
        self.closed = False
        self.close_reason = ""

    def __len__(self) -> int:
        return len(self._queue)

    def _put(self, event: Event) -> None:
        queue = self._queue
        n = len(queue)
        if n >= self.maxsize // 2:
            if n and type(event) is StreamContent:
                merged = event.merged_after(queue[-1])
                if merged is not None:
                    queue[-1] = merged
                    return
            if n >= self.maxsize:
                self._close("overflow")
                return
        queue.append(event)
        if n == 0:
            self._ready.set()

    def _put_many(self, events: list[StreamContent]) -> None:
        """``_put`` each; one ``extend`` while the queue stays under half full."""
        queue = self._queue
        n = len(queue)
        if n + len(events) <= self.maxsize // 2:
            queue.extend(events)
            if n == 0:
                self._ready.set()
            return
        for event in events:
            self._put(event)

    def _close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._bus._remove(self)
            self._ready.set()

    def close(self) -> None:
        """Stop receiving; events already queued can still be read."""
        self._close("closed")

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or None on timeout or once closed and drained."""
        while True:
            if self._queue:
                return self._queue.popleft()
            if self.closed:
                return None
            self._ready.clear()
            if not self._ready.wait(timeout):
                return None

    def drain(self) -> list[Event]:
        """Every queued event, without waiting."""
        out = list(self._queue)
        self._queue.clear()
        return out

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Routes events by conversation id to subscribers.

    ``subscribe(None)`` receives every conversation's events (the server's
    user-level updates, the stats, the benches).
    """

    def __init__(self, default_queue: int = 1000) -> None:
        self.default_queue = default_queue
        self._by_key: dict[str, list[Subscription]] = {}
        self._all: list[Subscription] = []
        self._replay: dict[str, list[Event]] = {}
        self._listeners: list[Listener] = []
        self.published = 0

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event as it is published; returns the undo.

        Deltas published together come as one list. The listener runs on the
        publisher's greenlet, so it must not yield (see the module docstring).
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _tell_listeners(self, item: Event | list[StreamContent]) -> None:
        for listener in self._listeners:
            try:
                listener(item)
            except Exception:  # a listener's bug must not fail the publisher
                log.exception("a bus listener failed")

    def publish(self, event: Event) -> None:
        """Deliver to every subscriber of the event's conversation; never blocks."""
        cid = event.conversation_id
        self.published += 1
        kind = type(event)
        if kind is StreamContent:
            buf = self._replay.get(cid)
            if buf is not None:
                buf.append(event)
        elif kind is StreamStart:
            self._replay[cid] = [event]
        elif kind is StreamComplete:
            self._replay.pop(cid, None)
        subs = self._by_key.get(cid)
        if subs:
            for sub in tuple(subs) if len(subs) > 1 else subs:
                sub._put(event)
        if self._all:
            for sub in tuple(self._all):
                sub._put(event)
        if self._listeners:
            self._tell_listeners(event)

    def publish_deltas(self, events: list[StreamContent]) -> None:
        """``publish`` for consecutive deltas of one reply, in one step.

        A provider that has several tokens at once (the mock with no delay)
        hands them over together; each is still its own event.
        """
        cid = events[0].conversation_id
        self.published += len(events)
        buf = self._replay.get(cid)
        if buf is not None:
            buf.extend(events)
        subs = self._by_key.get(cid)
        if subs:
            for sub in tuple(subs) if len(subs) > 1 else subs:
                sub._put_many(events)
        if self._all:
            for sub in tuple(self._all):
                sub._put_many(events)
        if self._listeners:
            self._tell_listeners(events)

    def subscribe(
        self,
        conversation_id: str | None = None,
        *,
        replay: bool = True,
        after_index: int | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """A new subscription; with ``replay``, first the reply in progress.

        ``after_index`` skips replayed deltas up to and including it.
        """
        sub = Subscription(self, conversation_id, maxsize or self.default_queue)
        if conversation_id is None:
            self._all.append(sub)
            return sub
        self._by_key.setdefault(conversation_id, []).append(sub)
        if replay:
            for event in self._replay.get(conversation_id, ()):
                if (
                    after_index is not None
                    and type(event) is StreamContent
                    and event.index <= after_index
                ):
                    continue
                sub._put(event)
        return sub

    def in_progress(self, conversation_id: str) -> list[Event]:
        """The replay buffer of the reply in progress (a copy)."""
        return list(self._replay.get(conversation_id, ()))

    def subscriber_count(self, conversation_id: str | None = None) -> int:
        if conversation_id is None:
            return len(self._all)
        return len(self._by_key.get(conversation_id, ()))

    def _remove(self, sub: Subscription) -> None:
        if sub.key is None:
            if sub in self._all:
                self._all.remove(sub)
            return
        subs = self._by_key.get(sub.key)
        if subs is not None and sub in subs:
            subs.remove(sub)
            if not subs:
                del self._by_key[sub.key]

    def forget(self, conversation_id: str) -> None:
        """Drop a conversation's replay buffer (it was deleted or stopped)."""
        self._replay.pop(conversation_id, None)

    def stats(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "subscriptions": sum(len(v) for v in self._by_key.values()) + len(self._all),
            "replays_in_progress": len(self._replay),
        }
