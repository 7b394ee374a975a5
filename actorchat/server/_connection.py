"""One WebSocket connection: its reader, its writer, and its session.

The route greenlet that flask-sock hands the socket to is the *reader*: it
takes one frame at a time with ``ws.receive(timeout=...)``, validates it,
and hands it to the handler of its type (``_handlers.py``, given to the
connection by the app). Everything the client must receive goes through the
connection's ``Outbox``: a frame with nothing queued before it is written
at once with a non-blocking send (the common case, when the client keeps
up); anything else waits in the outbox for the *writer* greenlet, which
exists only while there is a backlog. Actors never touch sockets, and
nothing the reader or the fan-out does ever blocks on this client. The
bytes themselves, and why every write goes through one lock, are
``_transport.py``'s.

The connection also keeps the session: who is authenticated (the first
frame, and re-auth before the token expires), which conversations it
joined, and the events held back while a join reads history.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import gevent
from simple_websocket import ConnectionClosed
from wsproto.utilities import LocalProtocolError

from actorchat._events import Event
from actorchat.errors import (
    ActorchatError,
    AuthError,
    AuthRequired,
    InvalidRequest,
    Overloaded,
    RateLimited,
    error_code,
)
from actorchat.server._auth import Identity
from actorchat.server._context import ServerContext
from actorchat.server._outbox import PING, Close, Entry, Outbox
from actorchat.server._protocol import (
    CLIENT_TYPES,
    Request,
    error_frame,
    frame,
    load,
    parse,
    request_id,
)
from actorchat.server._transport import PING_FRAME, LockedSocket, frame_bytes

__all__ = ["Connection", "Handler"]

log = logging.getLogger("actorchat.server")

T = TypeVar("T")

#: Frames handed to one ``sendall`` at most (batching under load).
_WRITE_BATCH = 64
#: How long a closing connection waits for the peer's closing handshake.
_CLOSE_WAIT = 5.0

#: What answers one client frame type (``_handlers.HANDLERS``).
Handler = Callable[["Connection", Request], None]


class Connection:
    """A client's WebSocket session; ``run()`` is the reader, for its whole life."""

    def __init__(
        self, ctx: ServerContext, ws: Any, handlers: Mapping[str, Handler], peer: str = ""
    ) -> None:
        self.ctx = ctx
        self.ws = ws
        self.id = ctx.next_id()
        self.peer = peer
        self.user_id = ""
        self.identity: Identity | None = None
        self.outbox = Outbox(ctx.config.outbound_queue, self._kick)
        self.joined: set[str] = set()
        self._handlers = handlers
        self._pending: dict[str, list[Event]] = {}
        try:
            # Stream deltas are small frames sent one after another: with
            # Nagle's algorithm each would wait for the previous one's ACK,
            # which the peer delays (up to 40 ms on Linux).
            ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP (a test double, a Unix socket)
        self._sock = LockedSocket(ws.sock, ctx.config.send_timeout)
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
                        chunks.append(PING_FRAME)
                    else:
                        chunks.append(frame_bytes(entry))
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
            data = frame_bytes(entry)
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
            self._handlers[kind](self, req)
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

    # -- the session, for the handlers -------------------------------------------------------

    def reauthenticate(self, identity: Identity) -> None:
        """Take a fresh token's identity (the same user's) for the rest of the session."""
        if identity.user_id != self.user_id:
            raise AuthError("the token is for another user; open a new connection for it")
        self.identity = identity

    def check_owned(self, cid: str) -> None:
        """``NotFound`` / ``Forbidden`` unless this connection's user owns ``cid``."""
        self.ctx.check_owner(cid, self.user_id)

    def subscribe(self, cid: str) -> list[Event]:
        """Join ``cid`` now; returns the reply in progress so far (its replay).

        Runs without yielding: the hub routed what was published before (it
        routes as events are published), the replay buffer covers exactly
        that, and from ``join`` on the hub routes the rest.
        """
        hub = self.ctx.hub
        hub.leave(self, cid)
        replay = self.ctx.chat.in_progress(cid)
        hub.join(self, cid)
        self.joined.add(cid)
        return replay

    def join_reading(
        self, cid: str, read: Callable[[list[Event]], T]
    ) -> tuple[list[Event], T, list[Event]]:
        """Join ``cid`` and run ``read(replay)`` while the events routed to it are held back.

        Returns the replay (as ``subscribe``), what ``read`` returned, and the
        events routed meanwhile: a reply that completes during the read is
        then either in what was read or in those events, never in neither.
        Everything ``read`` does happens before any of them is delivered.
        """
        if cid in self._pending:
            raise InvalidRequest(f"already joining conversation {cid!r}")
        replay = self.subscribe(cid)
        self._pending[cid] = []
        try:
            result = read(replay)
        finally:
            buffered = self._pending.pop(cid, [])
        return replay, result, buffered

    def implicit_join(self, cid: str) -> None:
        """Join ``cid`` unless joined already, delivering the reply in progress."""
        if cid not in self.joined:
            for event in self.subscribe(cid):
                self.deliver(event, cid)

    def leave(self, cid: str) -> None:
        """Stop receiving ``cid``'s events (joined or not)."""
        self.ctx.hub.leave(self, cid)
        self.joined.discard(cid)

    def answer_from_bus(
        self,
        call: Callable[[], T],
        match: Callable[[T, Event], bool],
        render: Callable[[T, Event | None], str],
    ) -> T:
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
            if not outbox.tag(lambda e: match(result, e), lambda e: render(result, e)):
                self.send(render(result, None))
            return result
        finally:
            outbox.release()
