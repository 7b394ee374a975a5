"""One WebSocket connection: a reader, a writer, and the protocol's handlers.

The route greenlet that flask-sock hands the socket to is the *reader*: it
takes one frame at a time with ``ws.receive(timeout=...)``, validates it,
and calls the ``ChatSystem`` API. Everything the client must receive goes
through the connection's ``Outbox``: a frame with nothing queued before it
is written at once with a non-blocking send (the common case, when the
client keeps up); anything else waits in the outbox for the *writer*
greenlet, which exists only while there is a backlog. Actors never touch
sockets, and nothing the reader or the fan-out does ever blocks on this
client.

simple-websocket 1.1.0 writes each frame with a single ``sock.send()``.
Under gevent a large frame can then go out partly and the stream is
corrupted (upstream issue #45), and its background thread writes pings,
pongs and close frames on its own. ``_LockedSocket`` therefore stands in
for the socket inside the simple-websocket object: every write, ours or
its thread's, is one ``sendall`` under one lock, bounded by
``send_timeout`` (a write that stalls that long means a dead or hopeless
peer; the socket is shut down).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from itertools import chain
from typing import Any, cast

import gevent
from gevent.lock import Semaphore
from simple_websocket import ConnectionClosed
from wsproto.utilities import LocalProtocolError

from actorchat._events import (
    ConversationDeleted,
    ConversationUpdated,
    Event,
    MessageReceived,
    StreamContent,
    StreamStart,
)
from actorchat._records import Conversation, Message, Usage
from actorchat.errors import (
    ActorchatError,
    AuthError,
    AuthRequired,
    InvalidRequest,
    MessageTooLong,
    NotFound,
    Overloaded,
    RateLimited,
    error_code,
)
from actorchat.server._auth import Identity
from actorchat.server._context import ServerContext
from actorchat.server._outbox import PING, Close, Entry, Outbox, Relabeled
from actorchat.server._protocol import (
    CLIENT_TYPES,
    Request,
    encode,
    error_frame,
    frame,
    load,
    parse,
    request_id,
)

__all__ = ["Connection"]

log = logging.getLogger("actorchat.server")

#: Frames handed to one ``sendall`` at most (batching under load).
_WRITE_BATCH = 64
#: Longest conversation title accepted.
MAX_TITLE = 1000
#: How long a closing connection waits for the peer's closing handshake.
_CLOSE_WAIT = 5.0


class _WriteStalled(Exception):
    """A write did not finish within ``send_timeout`` (raised by our own timer)."""


class _LockedSocket:
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


def _text_frame(text: str) -> bytes:
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


_PING_FRAME = b"\x89\x00"
_STREAM_CONTENT = (
    '{"type":"stream_content","data":{"message_id":%s,"conversation_id":%s,'
    '"content":%s,"is_complete":false,"index":%d}}'
)
_dumps = json.JSONEncoder(ensure_ascii=False).encode


def _message_id_of(event: Event) -> str | None:
    if isinstance(event, MessageReceived):
        return event.message.id
    return getattr(event, "message_id", None)


class Connection:
    """A client's WebSocket session; ``run()`` is the reader, for its whole life."""

    def __init__(self, ctx: ServerContext, ws: Any, peer: str = "") -> None:
        self.ctx = ctx
        self.ws = ws
        self.id = ctx.next_id()
        self.peer = peer
        self.user_id = ""
        self.identity: Identity | None = None
        self.outbox = Outbox(ctx.config.outbound_queue, self._kick)
        self.joined: set[str] = set()
        self._pending: dict[str, list[Event]] = {}
        try:
            # Stream deltas are small frames sent one after another: with
            # Nagle's algorithm each would wait for the previous one's ACK,
            # which the peer delays (up to 40 ms on Linux).
            ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (a test double, a Unix socket)
        self._sock = _LockedSocket(ws.sock, ctx.config.send_timeout)
        # From here on every write of simple-websocket goes through the lock.
        ws.sock = self._sock
        self._writer: gevent.Greenlet[Any, Any] | None = None
        self._ping_written: float | None = None
        self._opened = time.monotonic()
        self.frames_in = 0
        self.close_code: int | None = None

    # -- life cycle ---------------------------------------------------------------

    def run(self) -> None:
        """Serve the connection until it closes; never raises."""
        ctx = self.ctx
        ctx.connections[self] = None
        ctx.metrics.connections.inc()
        ctx.metrics.connections_total.inc()
        log.info("ws.open conn=%d peer=%s", self.id, self.peer)
        try:
            if len(ctx.connections) > ctx.config.max_connections:
                self._refuse(Overloaded("the server is at its connection limit"), 1013)
            elif ctx.draining:
                self._refuse(Overloaded("the server is shutting down"), 1001)
            elif self._authenticate():
                self._serve()
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("ws.error conn=%d user=%s", self.id, self.user_id)
        finally:
            self._finish()

    def _finish(self) -> None:
        ctx = self.ctx
        if self.user_id:
            ctx.hub.disconnect(self, self.joined)
        self._pending.clear()
        # Whatever ended the session, the writer flushes what is queued,
        # closes politely if nobody has, and stops.
        self.outbox.close(1000, "")
        writer = self._writer
        if writer is not None:
            writer.join(ctx.config.send_timeout + 1.0)
            if not writer.dead:
                writer.kill(block=False)
        thread = getattr(self.ws, "thread", None)
        if thread is not None:
            # Give the peer a moment to answer the closing handshake, then
            # make sure simple-websocket's thread and gevent's request
            # handler both see the end of the stream.
            thread.join(_CLOSE_WAIT)
        if thread is None or not thread.is_alive():
            self._sock.finish(_CLOSE_WAIT)
        else:
            # A peer that never answered the close: its thread still reads,
            # and only one greenlet may; a shutdown wakes it with EOF.
            self._sock.release()
        ctx.connections.pop(self, None)
        ctx.metrics.connections.dec()
        log.info(
            "ws.close conn=%d user=%s code=%s frames_in=%d secs=%.1f",
            self.id,
            self.user_id or "-",
            self.close_code if self.close_code is not None else "peer",
            self.frames_in,
            time.monotonic() - self._opened,
        )

    def close(self, code: int, reason: str, *, drop: bool = False) -> None:
        """Close after the queued frames (or instead of them, with ``drop``)."""
        if self.close_code is None:
            self.close_code = code
        self.outbox.close(code, reason, drop=drop)

    def _refuse(self, exc: ActorchatError, code: int) -> None:
        self.send(error_frame(error_code(exc), str(exc)))
        self.close(code, "Try again later" if code == 1013 else "Server shutting down")

    # -- the writer -------------------------------------------------------------------

    def _kick(self) -> None:
        """Something can be written: start the writer unless it runs.

        A running writer needs no wake-up: it only stops once it finds the
        outbox empty, and between that check and its end nothing can yield.
        """
        if self._writer is None:
            self._writer = gevent.spawn(self._write_loop)

    def _write_loop(self) -> None:
        """Drain the outbox, then stop: idle connections hold no writer greenlet."""
        ws = self.ws
        outbox = self.outbox
        sendall = self._sock.sendall
        hot = self.ctx.metrics.hot
        ended = True
        try:
            while True:
                entries = outbox.take(_WRITE_BATCH)
                if not entries:
                    ended = outbox.closed
                    return
                chunks: list[bytes] = []
                closing: Close | None = None
                for entry in entries:
                    if type(entry) is Close:
                        closing = entry
                        break
                    if not ws.connected:
                        return
                    if type(entry) is bytes:
                        chunks.append(entry)  # the rest of a frame sent in part
                    elif entry is PING:
                        self._ping_written = time.monotonic()
                        chunks.append(_PING_FRAME)
                    else:
                        chunks.append(_text_frame(self._text(entry)))
                if chunks:
                    sendall(chunks[0] if len(chunks) == 1 else b"".join(chunks))
                    hot.frames_out += len(chunks)
                if closing is not None:
                    if ws.connected:
                        ws.close(closing.code, closing.reason)
                    return
        except (OSError, ConnectionClosed, LocalProtocolError):
            pass
        except Exception:
            log.exception("ws.writer conn=%d failed", self.id)
            self._sock.abort()
        finally:
            self._writer = None
            if ended:
                # Wake the reader: it may wait in receive() for a frame that
                # will never come now.
                ws.event.set()

    def heartbeat(self, now: float, interval: float) -> None:
        """Ping, or close a peer that left the last ping unanswered (``Heartbeat``).

        The deadline runs from when the ping was *written*, not queued: on
        a swamped hub a ping can wait long for its turn, and a check made
        right after it finally went out would close healthy peers. (This is
        also why simple-websocket's own pinger is not used: it checks from
        when it meant to ping.)
        """
        ws = self.ws
        if self.outbox.closed:
            return
        if ws.pong_received:
            ws.pong_received = False
            self._ping_written = None
            if not self.outbox.put(PING):
                self._too_slow()
            return
        written = self._ping_written
        if written is not None and now - written >= interval:
            log.info("ws.ping_timeout conn=%d user=%s", self.id, self.user_id or "-")
            self.close(1008, "Ping timeout", drop=True)

    @staticmethod
    def _text(entry: Entry) -> str:
        if type(entry) is StreamContent and entry.first_index is None:
            # The one frame sent per token per client: formatted directly
            # (the same object ``frame()`` gives, a third of the cost).
            return _STREAM_CONTENT % (
                _dumps(entry.message_id),
                _dumps(entry.conversation_id),
                _dumps(entry.content),
                entry.index,
            )
        if type(entry) is str:
            return entry
        if type(entry) is Relabeled:
            return encode({"type": entry.type, "data": entry.event.to_dict()})
        assert isinstance(entry, Event), entry
        return encode(entry.frame())

    def send(self, text: str) -> None:
        """Queue an encoded frame for this client (or write it at once)."""
        self._push(text)

    def deliver(self, entry: Entry, cid: str) -> None:
        """Queue a routed event (the hub's side); buffered while a join is in flight."""
        pending = self._pending.get(cid) if self._pending else None
        if pending is not None and isinstance(entry, Event):
            if len(pending) >= self.outbox.maxsize:
                self._too_slow()
                return
            pending.append(entry)
            return
        self._push(entry)

    def _push(self, entry: Entry) -> None:
        """Write a frame right away when nothing waits before it, else queue it.

        The direct write is non-blocking and skips the hop to the writer
        greenlet, which is most of a delta's cost when clients keep up. If
        the kernel takes only part of the frame, the rest is queued first
        and the writer finishes it; so order holds and nothing blocks.
        """
        outbox = self.outbox
        if (
            self._writer is None
            and outbox.idle()
            and type(entry) is not Close
            and entry is not PING
        ):
            data = _text_frame(self._text(entry))
            try:
                sent = self._sock.try_send(data)
            except OSError:
                self._sock.abort()
                self.ws.event.set()
                return
            if sent >= 0:
                self.ctx.metrics.hot.frames_out += 1
                if sent < len(data):
                    outbox.put(data[sent:])
                return
        if not outbox.put(entry):
            self._too_slow()

    def _too_slow(self) -> None:
        if self.outbox.closed:
            return
        self.ctx.metrics.slow_clients.inc()
        log.warning(
            "ws.too_slow conn=%d user=%s queued=%d", self.id, self.user_id, len(self.outbox)
        )
        self.close(1008, "Too slow", drop=True)

    # -- the reader ---------------------------------------------------------------------

    def _authenticate(self) -> bool:
        """The first frame must be a valid ``auth`` (PROTOCOL.md lifecycle 1-3)."""
        ctx = self.ctx
        data = self.ws.receive(timeout=ctx.config.auth_timeout)
        if data is None:
            self._fail_auth(AuthRequired("no auth frame within the auth timeout"), None)
            return False
        self.frames_in += 1
        rid: str | int | None = None
        try:
            obj = load(data)
            rid = request_id(obj)
            if obj.get("type") != "auth":
                raise AuthRequired("the first frame must be auth")
            req = parse(obj)
        except AuthRequired as exc:
            self._fail_auth(exc, rid)
            return False
        except InvalidRequest as exc:
            self._fail_auth(AuthRequired(str(exc)), rid)
            return False
        try:
            identity = ctx.auth.verify(req["token"])
        except AuthError as exc:
            self._fail_auth(exc, req.id)
            return False
        self.identity = identity
        self.user_id = identity.user_id
        ctx.hub.connect(self)
        self.send(frame("auth_success", {"user_id": self.user_id}, req.id, user_id=self.user_id))
        log.info("ws.auth conn=%d user=%s", self.id, self.user_id)
        return True

    def _fail_auth(self, exc: AuthError, rid: str | int | None, reason: str = "") -> None:
        code = error_code(exc)
        self.ctx.metrics.errors.labels(code).inc()
        self.send(error_frame(code, str(exc), rid))
        if not reason:
            reason = "Authentication required" if code == "AUTH_REQUIRED" else "Invalid token"
        log.info("ws.auth_failed conn=%d code=%s", self.id, code)
        self.close(4001, reason)

    def _serve(self) -> None:
        receive = self.ws.receive
        while not self.outbox.closed:
            assert self.identity is not None
            left = self.identity.expires_at - time.time()
            if left <= 0:
                exc = AuthError("the token has expired; send a fresh auth frame before it does")
                self._fail_auth(exc, None, "Token expired")
                return
            data = receive(timeout=max(left, 0.01))
            if data is None:
                continue
            self.frames_in += 1
            self._handle(data)

    def _handle(self, data: str | bytes) -> None:
        """Answer one frame; every failure becomes an ``error`` frame."""
        started = time.perf_counter()
        rid: str | int | None = None
        kind = "invalid"
        fields: dict[str, Any] = {}
        m = self.ctx.metrics
        try:
            obj = load(data)
            rid = request_id(obj)
            req = parse(obj)
            kind = req.type
            fields = req.fields
            _HANDLERS[kind](self, req)
        except ActorchatError as exc:
            if isinstance(exc, AuthError):
                self._fail_auth(exc, rid)
            else:
                self._error(exc, rid, fields)
        except Exception:
            ref = f"{self.id}-{self.frames_in}"
            log.exception("ws.internal_error conn=%d ref=%s type=%s", self.id, ref, kind)
            self._error(RuntimeError(), rid, fields, f"internal error (ref {ref})")
        finally:
            m.frames_in.labels(kind if kind in CLIENT_TYPES else "invalid").inc()
            m.latency.labels("ws:" + kind if kind in CLIENT_TYPES else "ws:invalid").observe(
                time.perf_counter() - started
            )

    def _error(
        self,
        exc: BaseException,
        rid: str | int | None,
        fields: dict[str, Any],
        message: str | None = None,
    ) -> None:
        code = error_code(exc)
        self.ctx.metrics.errors.labels(code).inc()
        details: dict[str, Any] = {
            "conversation_id": fields.get("conversation_id"),
            "message_id": fields.get("message_id"),
        }
        if isinstance(exc, RateLimited):
            details["retry_after"] = exc.retry_after
        text = message if message is not None else str(exc) or code.lower()
        self.send(error_frame(code, text, rid, **details))

    # -- helpers the handlers share -------------------------------------------------------

    def _owned(self, cid: str) -> None:
        self.ctx.check_owner(cid, self.user_id)

    def _subscribe(self, cid: str) -> list[Event]:
        """Join ``cid`` now; returns the reply in progress so far (its replay).

        Runs without yielding: ``pump`` routes what was published before,
        the replay buffer covers exactly that, and from ``join`` on the hub
        routes the rest.
        """
        hub = self.ctx.hub
        hub.leave(self, cid)
        hub.pump()
        replay = self.ctx.chat.in_progress(cid)
        hub.join(self, cid)
        self.joined.add(cid)
        return replay

    def _implicit_join(self, cid: str) -> None:
        if cid not in self.joined:
            for event in self._subscribe(cid):
                self.deliver(event, cid)

    def _answer_from_bus(
        self,
        call: Callable[[], Any],
        match: Callable[[Any, Event], bool],
        render: Callable[[Any, Event | None], str],
    ) -> Any:
        """Run a request whose answer the bus also carries, answering once.

        The writer is held while ``call`` runs; afterwards the bus event that
        ``match``\\ es the result is replaced, in place, by ``render``'s frame
        (which carries ``reply_to``). If no such event reached this client,
        the answer is queued at the end.
        """
        outbox = self.outbox
        outbox.hold()
        try:
            result = call()
            self.ctx.hub.pump()
            if not outbox.tag(lambda e: match(result, e), lambda e: render(result, e)):
                self.send(render(result, None))
            return result
        finally:
            outbox.release()


# -- handlers: one per client frame type ---------------------------------------------------


def _auth(self: Connection, req: Request) -> None:
    identity = self.ctx.auth.verify(req["token"])
    if identity.user_id != self.user_id:
        raise AuthError("the token is for another user; open a new connection for it")
    self.identity = identity
    self.send(frame("auth_success", {"user_id": self.user_id}, req.id, user_id=self.user_id))


def _ping(self: Connection, req: Request) -> None:
    self.send(frame("pong", {}, req.id))


def _create_conversation(self: Connection, req: Request) -> None:
    ctx = self.ctx
    ctx.check_open()
    cap = ctx.config.max_conversations_per_user
    if ctx.chat.count_conversations(self.user_id) >= cap:
        raise Overloaded(f"you have {cap} conversations, the most allowed; delete some first")
    title = req.get("title", "")
    if len(title) > MAX_TITLE:
        raise InvalidRequest(f"title is longer than {MAX_TITLE} characters")
    rid = req.id

    def render(cid: str, event: Event | None) -> str:
        conv = (
            event.conversation
            if isinstance(event, ConversationUpdated)
            else ctx.chat.get_conversation(cid)
        )
        return frame("conversation_created", {"conversation": conv.to_dict()}, rid)

    cid = self._answer_from_bus(
        lambda: ctx.chat.start_conversation(
            owner=self.user_id,
            title=title,
            model=req.get("model"),
            system_prompt=req.get("system_prompt", ""),
        ),
        lambda cid, e: (
            isinstance(e, ConversationUpdated) and e.created and e.conversation_id == cid
        ),
        render,
    )
    ctx.hub.learn_owner(cid, self.user_id)
    # The creator is joined (PROTOCOL.md); nothing has happened in it yet.
    self._subscribe(cid)


def _join_conversation(self: Connection, req: Request) -> None:
    ctx = self.ctx
    cid: str = req["conversation_id"]
    conv = ctx.chat.get_conversation(cid, owner=self.user_id)
    ctx.hub.learn_owner(cid, conv.owner)
    limit = min(req.get("history_limit", ctx.config.history_limit), ctx.config.max_page)
    after_index: int | None = req.get("after_index")
    if cid in self._pending:
        raise InvalidRequest(f"already joining conversation {cid!r}")
    # Subscribe first, buffering, then read history: a reply that completes
    # meanwhile is either in the history or in the buffer, never in neither.
    replay = self._subscribe(cid)
    self._pending[cid] = []
    try:
        history = ctx.chat.get_history(cid, limit)
        ctx.hub.pump()
    finally:
        buffered = self._pending.pop(cid, [])
    self.send(
        frame(
            "conversation_joined",
            {"conversation": conv.to_dict(), "messages": [m.to_dict() for m in history]},
            req.id,
        )
    )
    done = {m.id for m in history}
    live = replay[0].message_id if replay and isinstance(replay[0], StreamStart) else None
    named: str | None = req.get("message_id")
    # Resuming a named reply (PROTOCOL.md, lifecycle 6): the skip applies to
    # it alone; any other reply in progress (the new answer after a crash)
    # is replayed from index 0. Without a name, it applies to the live one.
    skip = named if named is not None else live
    if named is not None and named != live:
        # It ended while the client was away (or during this join): say how.
        ended = next((m for m in history if m.id == named), None)
        if ended is None:
            ended = next((m for m in ctx.chat.messages(cid, versions=True) if m.id == named), None)
        self.send(_resumed_end(cid, named, ended))
    for event in chain(replay, buffered):
        if _message_id_of(event) in done:
            continue  # completed during the join: it is in `messages`
        if (
            after_index is not None
            and isinstance(event, StreamContent)
            and event.message_id == skip
            and event.index <= after_index
        ):
            continue
        self.deliver(event, cid)


def _resumed_end(cid: str, message_id: str, message: Message | None) -> str:
    """The ``stream_complete`` of a named reply that ended while its client was away.

    A reply a crash interrupted is stored superseded (its user message was
    answered again), and one the server never stored (it restarted
    mid-reply) is answered the same way: ``finish_reason: "error"``,
    ``superseded: true``. A reply replaced by a regeneration keeps its own
    finish reason and says it was superseded.
    """
    usage = message.usage if message is not None and message.usage is not None else Usage()
    data: dict[str, Any] = {
        "message_id": message_id,
        "conversation_id": cid,
        "usage": usage.to_dict(),
        "finish_reason": (message.finish_reason if message is not None else None) or "error",
    }
    if message is None or message.superseded:
        data["superseded"] = True
    return frame("stream_complete", data)


def _leave_conversation(self: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    if cid not in self.joined:  # leaving one it joined always works, even if deleted since
        self._owned(cid)  # NOT_FOUND / FORBIDDEN like every other conversation request
    self.ctx.hub.leave(self, cid)
    self.joined.discard(cid)
    self.send(frame("conversation_left", {"conversation_id": cid}, req.id))


def _send_message(self: Connection, req: Request) -> None:
    ctx = self.ctx
    cid: str = req["conversation_id"]
    content: str = req["content"]
    limit = ctx.config.max_content_chars
    if len(content) > limit:
        raise MessageTooLong(f"content is {len(content)} characters; the limit is {limit}")
    self._owned(cid)
    ctx.check_open()
    ctx.limiter.take(self.user_id)
    self._implicit_join(cid)
    rid = req.id

    def render(msg: Any, _event: Event | None) -> str:
        return frame("message_received", {"message": msg.to_dict()}, rid)

    self._answer_from_bus(
        lambda: ctx.chat.post_message(cid, content, sender_id=self.user_id),
        lambda msg, e: isinstance(e, MessageReceived) and e.message.id == msg.id,
        render,
    )


def _stream_response(self: Connection, req: Request) -> None:
    ctx = self.ctx
    cid: str = req["conversation_id"]
    self._owned(cid)
    ctx.check_open()
    ctx.limiter.take(self.user_id)
    self._implicit_join(cid)
    ctx.chat.regenerate(cid, req.get("message_id"), req.get("assistant_id"))


def _cancel_stream(self: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    self._owned(cid)
    mid: str = req["message_id"]
    if not self.ctx.chat.cancel(cid, mid):
        raise NotFound(f"no reply {mid!r} is being generated in conversation {cid!r}")


def _typing(self: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    self._owned(cid)
    is_typing = req["is_typing"] if req.type == "typing" else req.type == "typing_start"
    text = frame(
        "typing_indicator",
        {"conversation_id": cid, "user_id": self.user_id, "is_typing": is_typing},
    )
    for conn in self.ctx.hub.joined(cid):
        if conn is not self and isinstance(conn, Connection):
            conn.send(text)


def _list_conversations(self: Connection, req: Request) -> None:
    cfg = self.ctx.config
    limit = min(req.get("limit", 50), cfg.max_page)
    convs = self.ctx.chat.list_conversations(self.user_id, limit, req.get("before"))
    self.send(frame("conversations", {"conversations": [c.to_dict() for c in convs]}, req.id))


def _rename_conversation(self: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    title: str = req["title"]
    if len(title) > MAX_TITLE:
        raise InvalidRequest(f"title is longer than {MAX_TITLE} characters")
    self._owned(cid)
    rid = req.id

    def render(conv: Conversation, _event: Event | None) -> str:
        return frame("conversation_updated", {"conversation": conv.to_dict()}, rid)

    self._answer_from_bus(
        lambda: self.ctx.chat.rename_conversation(cid, title),
        lambda conv, e: isinstance(e, ConversationUpdated) and e.conversation is conv,
        render,
    )


def _delete_conversation(self: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    self._owned(cid)
    rid = req.id

    def delete() -> bool:
        if not self.ctx.chat.delete_conversation(cid):
            raise NotFound(f"no conversation {cid!r}")
        return True

    self._answer_from_bus(
        delete,
        lambda _ok, e: isinstance(e, ConversationDeleted) and e.conversation_id == cid,
        lambda _ok, _e: frame("conversation_deleted", {"conversation_id": cid}, rid),
    )
    self.joined.discard(cid)


_HANDLERS: dict[str, Callable[[Connection, Request], None]] = {
    "auth": _auth,
    "ping": _ping,
    "create_conversation": _create_conversation,
    "join_conversation": _join_conversation,
    "leave_conversation": _leave_conversation,
    "send_message": _send_message,
    "stream_response": _stream_response,
    "cancel_stream": _cancel_stream,
    "typing": _typing,
    "typing_start": _typing,
    "typing_stop": _typing,
    "list_conversations": _list_conversations,
    "rename_conversation": _rename_conversation,
    "delete_conversation": _delete_conversation,
}
assert set(_HANDLERS) == CLIENT_TYPES, "every protocol type needs a handler"
