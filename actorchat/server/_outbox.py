"""One connection's bounded outbound queue and its slow-client policy.

Actors and the fan-out never touch sockets: they put frames here and the
connection's writer greenlet takes them out. ``put`` never blocks, so one
slow client can never slow down a conversation or another client.

The policy (PROTOCOL.md rule 15): once more than ``merge_at`` entries
wait, a ``stream_content`` delta that follows a delta of the same reply is
merged into it (content joined, ``first_index`` kept, ``index`` advanced),
so a client that falls behind gets fewer, larger frames and still no gap.
A queue that reaches ``maxsize`` anyway belongs to a client that cannot keep
up: ``put`` returns False and the connection closes it (1008 ``Too slow``).

*Holding* pauses the writer while a request whose answer also arrives from
the bus is in flight (``send_message``: the sender's own
``message_received``). When the request returns, ``tag`` swaps that bus
event, at its place in the queue, for the same frame with ``reply_to``: the
client sees each frame once, in bus order, and the answer is correlated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from actorchat._events import Event, StreamContent

__all__ = ["PING", "Close", "Entry", "Outbox", "Relabeled"]


class Relabeled:
    """A bus event sent under another frame type (rule 9's user-level updates)."""

    __slots__ = ("event", "type")

    def __init__(self, kind: str, event: Event) -> None:
        self.type = kind
        self.event = event


class Close:
    """Close the WebSocket with ``code`` and ``reason`` once the frames before it are out."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _Ping:
    """A WebSocket ping, queued like any frame (so it never cuts into one)."""

    __slots__ = ()


PING = _Ping()

Entry = str | bytes | Event | Relabeled | Close | _Ping


def _event_of(entry: Entry) -> Event | None:
    if isinstance(entry, Event):
        return entry
    if type(entry) is Relabeled:
        return entry.event
    return None


class Outbox:
    """A bounded FIFO of frames for one connection; see the module docstring.

    Args:
        maxsize: entries at which the client counts as too slow.
        kick: called whenever there is something to take (the connection
            starts its writer then, if none is running).
        merge_at: entries waiting past which stream deltas are merged.
    """

    __slots__ = ("_held", "_kick", "_queue", "closed", "maxsize", "merge_at", "merged")

    def __init__(self, maxsize: int, kick: Callable[[], None], merge_at: int = 32) -> None:
        self.maxsize = maxsize
        self.merge_at = max(1, min(merge_at, maxsize // 2))
        self._queue: deque[Entry] = deque()
        self._kick = kick
        self._held = 0
        self.closed = False
        #: How many deltas were merged into an earlier one (for tests and stats).
        self.merged = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, entry: Entry) -> bool:
        """Queue a frame; False if the queue is full (the client is too slow).

        Frames put after ``close`` are dropped silently (True).
        """
        if self.closed:
            return True
        queue = self._queue
        n = len(queue)
        if n >= self.merge_at and type(entry) is StreamContent:
            merged = entry.merged_after(queue[-1])
            if merged is not None:
                queue[-1] = merged
                self.merged += 1
                return True
        if n >= self.maxsize:
            return False
        queue.append(entry)
        if not self._held:
            self._kick()
        return True

    def close(self, code: int, reason: str, *, drop: bool = False) -> None:
        """Queue the closing handshake after what is queued (or instead, with ``drop``).

        Releases any hold: nothing may stop a close from going out.
        """
        if self.closed:
            return
        if drop:
            self._queue.clear()
        self._queue.append(Close(code, reason))
        self.closed = True
        self._held = 0
        self._kick()

    def idle(self) -> bool:
        """Nothing queued, not held, not closed: a frame may be written at once."""
        return not self._queue and not self._held and not self.closed

    def hold(self) -> None:
        """Pause the writer until ``release`` (holds nest)."""
        if not self.closed:
            self._held += 1

    def release(self) -> None:
        if self._held:
            self._held -= 1
        if not self._held and self._queue:
            self._kick()

    def tag(self, match: Callable[[Event], bool], render: Callable[[Event], str]) -> bool:
        """Replace the first queued event that ``match``\\ es with ``render(event)``.

        Returns False when no queued event matched (the caller then queues
        its answer itself).
        """
        queue = self._queue
        for i, entry in enumerate(queue):
            event = _event_of(entry)
            if event is not None and match(event):
                queue[i] = render(event)
                return True
        return False

    def take(self, limit: int) -> list[Entry]:
        """Up to ``limit`` entries, without waiting ([] while held or empty)."""
        queue = self._queue
        if self._held or not queue:
            return []
        if len(queue) <= limit:
            out = list(queue)
            queue.clear()
            return out
        return [queue.popleft() for _ in range(limit)]
