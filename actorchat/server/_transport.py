"""The bytes on the wire: one locked socket, and server frames built by hand.

simple-websocket 1.1.0 writes each frame with a single ``sock.send()``.
Under gevent a large frame can then go out partly and the stream is
corrupted (upstream issue #45), and its background thread writes pings,
pongs and close frames on its own. ``LockedSocket`` therefore stands in
for the socket inside the simple-websocket object: every write, ours or
its thread's, is one ``sendall`` under one lock, bounded by
``send_timeout`` (a write that stalls that long means a dead or hopeless
peer; the socket is shut down).

``frame_bytes`` turns what a connection's outbox holds (an encoded frame,
an event, a relabelled event) into the bytes of one WebSocket text frame;
the delta sent once per token per client has a path of its own.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, cast

import gevent
from gevent.lock import Semaphore

from actorchat._events import Event, StreamContent
from actorchat.server._outbox import Entry, Relabeled
from actorchat.server._protocol import encode

__all__ = ["PING_FRAME", "LockedSocket", "frame_bytes", "text_frame"]


class _WriteStalled(Exception):
    """A write did not finish within ``send_timeout`` (raised by our own timer)."""


class LockedSocket:
    """The socket as simple-websocket sees it: each write a ``sendall`` under one lock.

    Reads and everything else are delegated to the real socket.
    """

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._lock = Semaphore()
        self._timeout = timeout
        self.broken = False
        self.released = False

    def send(self, data: bytes) -> int:
        # simple-websocket's own writes (handshake, pings, pongs, close).
        self.sendall(data)
        return len(data)

    def sendall(self, data: bytes) -> None:
        with self._lock:
            if self.broken:
                raise BrokenPipeError("the connection was aborted")
            try:
                # Almost always the kernel takes it all at once: no timer then.
                # (a gevent socket's send takes a timeout: 0 means "do not wait")
                sent = cast(Any, self._sock).send(data, 0, 0.0)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.broken = True
                raise
            if sent == len(data):
                return
            timer = gevent.Timeout(self._timeout, _WriteStalled())
            timer.start()
            try:
                self._sock.sendall(memoryview(data)[sent:])
            except _WriteStalled as exc:
                # Part of a frame may be out: the stream is unusable now.
                self.abort()
                raise BrokenPipeError("write stalled past send_timeout") from exc
            except OSError:
                self.broken = True
                raise
            finally:
                timer.cancel()

    def try_send(self, data: bytes) -> int:
        """Send what the kernel takes now, without waiting: bytes sent, or -1.

        -1 when another write holds the lock (the caller queues instead).
        """
        lock = self._lock
        if self.broken or not lock.acquire(blocking=False):
            return -1
        try:
            # (a gevent socket's send takes a timeout: 0 means "do not wait")
            sent: int = cast(Any, self._sock).send(data, 0, 0.0)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.broken = True
            raise
        finally:
            lock.release()
        return sent

    def finish(self, timeout: float, idle: float = 0.1, limit: int = 1 << 24) -> None:
        """End the TCP connection without losing what was sent last.

        Closing a socket with unread input makes the kernel answer with a
        reset, and a reset makes the peer drop what it had not read yet:
        the close frame (a 1009 after an oversized frame, for one). So
        half-close, then read and discard while the peer is still sending
        (until it closes, goes ``idle`` seconds without sending, or
        ``timeout`` or ``limit`` bytes are reached), then shut down.
        """
        if not self.broken:
            deadline = time.monotonic() + timeout
            try:
                with self._lock:
                    self._sock.shutdown(socket.SHUT_WR)
                while limit > 0:
                    wait = min(idle, deadline - time.monotonic())
                    if wait <= 0:
                        break
                    with gevent.Timeout(wait, _WriteStalled()):
                        data = self._sock.recv(65536)
                    if not data:
                        break
                    limit -= len(data)
            except (OSError, _WriteStalled):
                pass
        self.abort()
        self._sock.close()

    def abort(self) -> None:
        """Shut the TCP connection down: every reader and writer on it wakes up."""
        self.broken = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        # simple-websocket closes the socket as soon as its thread ends; the
        # connection closes it in ``finish`` instead, after lingering, unless
        # it has given up on the thread already (``release``).
        if self.released:
            self._sock.close()

    def release(self) -> None:
        """Shut down now and let the reading thread close the socket when it ends."""
        self.released = True
        self.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def text_frame(text: str) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends it.

    Built here rather than by wsproto: a frame header is three lines, and
    wsproto's general path costs more than the rest of a delta's delivery.
    """
    # A lone surrogate (from a provider, say) goes out as its JSON escape,
    # which is what ensure_ascii would write: valid UTF-8, valid JSON.
    payload = text.encode("utf-8", "backslashreplace")
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


#: A ping with no payload (the heartbeat's).
PING_FRAME = b"\x89\x00"
_STREAM_CONTENT = (
    '{"type":"stream_content","data":{"message_id":%s,"conversation_id":%s,'
    '"content":%s,"is_complete":false,"index":%d}}'
)
_dumps = json.JSONEncoder(ensure_ascii=False).encode


def frame_bytes(entry: Entry) -> bytes:
    """The text frame of an outbox entry (not a ``Close``, a ping or a frame's rest)."""
    if type(entry) is StreamContent and entry.first_index is None:
        # The one frame sent per token per client: formatted directly
        # (the same object ``frame()`` gives, a third of the cost).
        text = _STREAM_CONTENT % (
            _dumps(entry.message_id),
            _dumps(entry.conversation_id),
            _dumps(entry.content),
            entry.index,
        )
    elif type(entry) is str:
        text = entry
    elif type(entry) is Relabeled:
        text = encode({"type": entry.type, "data": entry.event.to_dict()})
    else:
        assert isinstance(entry, Event), entry
        text = encode(entry.frame())
    return text_frame(text)
