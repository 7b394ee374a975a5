"""Fake model servers: real HTTP on 127.0.0.1, speaking the real SSE formats.

One module of ~700 lines: a small HTTP/1.1 server and the two wire formats
it speaks, which share every failure knob; a test tool, not product code.

Tests, benches and users point a provider's ``base_url`` at one of these
and get the bytes a real backend would send, including the ways real
backends fail. Each server is a gevent ``StreamServer`` with a small
HTTP/1.1 implementation of its own (keep-alive, chunked responses), so
that it can do what a framework hides: wait before the status line, drop
the connection between two chunks, hang, and notice at once when a client
goes away.

What a response looks like is a ``Behavior``: the server's ``default``
one, or the next one queued with ``script()``. Every request is recorded
(``RecordedRequest``) with its headers, body, what was sent, and whether
the client disconnected before the stream ended, which is how tests prove
that a cancel really closed the upstream request.

``interrupts=True`` makes a server behave like llama.cpp's: a new streaming
request cuts short every one in progress, which ends as ``cut_after`` says.
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

__all__ = [
    "Behavior",
    "FakeAnthropicServer",
    "FakeOpenAIServer",
    "FakeServer",
    "RecordedRequest",
]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}
_MAX_HEADER_BYTES = 65536


@dataclass(slots=True)
class Behavior:
    """How the server answers one streaming request. Times are in seconds.

    Attributes:
        tokens: The text deltas to stream, or a count (``"w0"``, ``" w1"``, ...).
        delay: Wait before each token after the first.
        first_token_delay: Wait after the headers, before the first token.
        ttfb: Wait before the status line (time to first byte).
        status: HTTP status; anything but 200 sends an error body instead.
        retry_after: ``Retry-After`` header value for an error status.
        error_type: The error's ``type`` in error bodies and mid-stream errors.
        error_message: The error's message.
        disconnect_after: Drop the connection after this many tokens.
        hang_after: Stop sending after this many tokens and hold the
            connection open until the client leaves (or the server stops).
        error_after: Send a mid-stream error event after this many tokens,
            then end the response.
        finish_reason: OpenAI ``finish_reason`` / Anthropic ``stop_reason``
            (default ``stop`` / ``end_turn``).
        usage: Send token usage (OpenAI: only if the request asked for it).
        usage_style: OpenAI only: where usage goes: ``"empty"`` (a last
            chunk with ``choices: []``), ``"null"`` (``choices: null``) or
            ``"final"`` (in the chunk carrying ``finish_reason``).
        role_chunk: OpenAI only: begin with a role-only delta.
        end_marker: Send ``[DONE]`` (OpenAI) or ``message_stop`` (Anthropic).
        finish: Send the finishing chunk (OpenAI ``finish_reason``,
            Anthropic ``message_delta``); without it and without the end
            marker, the stream just stops, like a broken one.
        cut_after: End the stream cleanly after this many tokens, but cut
            short: OpenAI ``[DONE]`` with no ``finish_reason`` (what
            llama.cpp's server sends for a request a newer one interrupted),
            Anthropic ``content_block_stop`` and no ``message_stop``.
        ping: Anthropic only: send ``ping`` events (first, then every 5 tokens).
        prompt_tokens: The prompt token count reported in usage.
        stamp: Make every token the send time (``time.monotonic()``, as
            text with a leading space), so a client can measure latency.
    """

    tokens: int | Sequence[str] = 5
    delay: float = 0.0
    first_token_delay: float = 0.0
    ttfb: float = 0.0
    status: int = 200
    retry_after: str | float | None = None
    error_type: str = ""
    error_message: str = "simulated failure"
    disconnect_after: int | None = None
    hang_after: int | None = None
    error_after: int | None = None
    cut_after: int | None = None
    finish_reason: str | None = None
    usage: bool = True
    usage_style: str = "empty"
    role_chunk: bool = True
    end_marker: bool = True
    finish: bool = True
    ping: bool = True
    prompt_tokens: int = 11
    stamp: bool = False

    def token_list(self) -> list[str]:
        """The tokens as strings (``stamp`` replaces them at send time)."""
        if isinstance(self.tokens, int):
            return ["w0"] + [f" w{i}" for i in range(1, self.tokens)] if self.tokens else []
        return list(self.tokens)


@dataclass(slots=True, eq=False)
class RecordedRequest:
    """One request the server received, and what became of its response.

    ``done`` is set when the server has finished with the response, whether
    it completed, failed on purpose, or the client went away; wait on it
    before asserting ``disconnected``.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    behavior: Behavior | None = None
    #: The client's ``(host, port)``: requests on one connection share it.
    peer: tuple[str, int] = ("", 0)
    status: int = 0
    tokens_sent: int = 0
    completed: bool = False
    disconnected: bool = False
    #: Cut short by a newer request (a server made with ``interrupts=True``).
    interrupted: bool = False
    done: Event = field(default_factory=Event)
    #: Set with ``interrupted``: ends the response's current wait at once.
    wake: Event = field(default_factory=Event)

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        """A request header, by case-insensitive name."""
        return self.headers.get(name.lower())


class _ClientGone(Exception):
    """The client closed the connection."""


class _Abort(Exception):
    """The behaviour says: drop the connection now."""


class FakeServer:
    """Base of the fake servers: HTTP/1.1, keep-alive, chunked SSE.

    Use as a context manager (or ``start()`` / ``stop()``). ``base_url`` is
    what a model's ``base_url`` should be set to. Subclasses implement
    ``stream_path``, ``base_path``, ``events`` and ``error_body``.
    """

    #: Path of the streaming endpoint.
    stream_path = ""
    #: What ``base_url`` ends with (``/v1`` for OpenAI-style clients).
    base_path = ""

    def __init__(
        self,
        default: Behavior | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        interrupts: bool = False,
    ) -> None:
        self.default = default or Behavior()
        self.interrupts = interrupts
        self._streaming: set[RecordedRequest] = set()
        self.host = host
        self.port = port
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        #: Streaming responses in progress now, and the most seen at once.
        self.active = 0
        self.max_active = 0
        self._script: deque[Behavior] = deque()
        self._arrived = Event()
        self._pool = Pool()
        self._server: StreamServer | None = None
        self._stopping = Event()

    # Life cycle ---------------------------------------------------------------

    def start(self) -> FakeServer:
        """Listen on ``host:port`` (port 0: any free port, see ``port``)."""
        # A deep accept queue: a bench opens a thousand connections at once,
        # and a dropped SYN costs the client a one-second retransmit.
        server = StreamServer((self.host, self.port), self._handle, backlog=4096, spawn=self._pool)
        server.start()
        self._server = server
        self.port = int(server.server_port)
        return self

    def stop(self) -> None:
        """Stop listening and end every connection now (hanging ones too)."""
        self._stopping.set()
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None
        self._pool.kill(block=True, timeout=5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to configure as a model's ``base_url``."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    # Knobs and records -----------------------------------------------------------

    def reset(self, default: Behavior | None = None) -> None:
        """Forget requests and queued behaviours (for a server shared by tests)."""
        self.default = default or Behavior()
        self._script.clear()
        self.requests.clear()
        self.max_active = self.active

    def script(self, *behaviors: Behavior) -> None:
        """Queue behaviours for the next streaming requests, in order.

        When the queue is empty, ``default`` answers.
        """
        self._script.extend(behaviors)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Wait until ``n`` streaming requests arrived; return them all.

        Raises ``TimeoutError`` when they do not arrive within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = f"{len(self.requests)} of {n} requests arrived within {timeout}s"
                raise TimeoutError(msg)
            self._arrived.clear()
            if len(self.requests) >= n:
                break
            self._arrived.wait(remaining)
        return list(self.requests)

    @property
    def disconnects(self) -> int:
        """How many responses the client abandoned before they ended."""
        return sum(1 for r in self.requests if r.disconnected)

    # Format-specific parts -----------------------------------------------------------

    def events(self, behavior: Behavior, request: RecordedRequest) -> Iterator[tuple[str, bytes]]:
        """The response's SSE frames as ``(kind, bytes)``.

        ``kind`` is ``"token"`` for a frame carrying one text delta (the
        server applies delays and disconnect/hang/error knobs around those),
        ``"error"`` for the mid-stream error frame, ``"other"`` otherwise.
        """
        raise NotImplementedError

    def error_body(self, behavior: Behavior) -> dict[str, Any]:
        """The JSON body sent with an error status."""
        raise NotImplementedError

    def cut_short(self) -> Iterator[tuple[str, bytes]]:
        """The frames that end a stream cleanly but without its finish."""
        raise NotImplementedError

    def check_auth(self, request: RecordedRequest) -> bool:
        """Whether the request carries ``api_key`` (always, when none is set)."""
        return self.api_key is None

    # HTTP -----------------------------------------------------------------------

    def _handle(self, sock: socket.socket, addr: Any) -> None:
        # Every SSE frame is its own small write: without this, Nagle's
        # algorithm holds each one back until the client's delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = sock.makefile("rb")
        try:
            while not self._stopping.is_set():
                request = self._read_request(rfile)
                if request is None:
                    return
                request.peer = (str(addr[0]), int(addr[1]))
                if not self._respond(sock, request):
                    return
        except (OSError, _ClientGone, _Abort):
            return
        finally:
            try:
                rfile.close()
                sock.close()
            except OSError:
                pass

    @staticmethod
    def _read_request(rfile: Any) -> RecordedRequest | None:
        line = rfile.readline(_MAX_HEADER_BYTES)
        if not line:
            return None
        try:
            method, target, _version = line.decode("latin-1").split(" ", 2)
        except ValueError:
            return None
        headers: dict[str, str] = {}
        while True:
            raw = rfile.readline(_MAX_HEADER_BYTES)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        body = rfile.read(length) if length else b""
        return RecordedRequest(method, target.split("?", 1)[0], headers, body, time.monotonic())

    def _respond(self, sock: socket.socket, request: RecordedRequest) -> bool:
        """Answer one request; False when the connection must close."""
        if request.method == "GET" and request.path in (self.base_path + "/models", "/v1/models"):
            body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]})
            self._send_simple(sock, 200, body.encode(), {})
            return True
        if request.method != "POST" or request.path != self.stream_path:
            self._send_simple(sock, 404, b'{"error": {"message": "not found"}}', {})
            return True

        behavior = self._script.popleft() if self._script else self.default
        request.behavior = behavior
        if self.interrupts:
            for running in self._streaming:
                running.interrupted = True
                running.wake.set()
        self.requests.append(request)
        self._arrived.set()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        watch = _Watch(sock)
        self._streaming.add(request)
        try:
            return self._stream(sock, request, behavior)
        except (OSError, _ClientGone):
            request.disconnected = True
            return False
        except _Abort:
            return False
        finally:
            self._streaming.discard(request)
            watch.close()
            self.active -= 1
            request.done.set()

    def _stream(self, sock: socket.socket, request: RecordedRequest, behavior: Behavior) -> bool:
        if behavior.ttfb:
            self._linger(behavior.ttfb)
        if not self.check_auth(request):
            unauthorized = replace(
                behavior,
                status=401,
                error_type="authentication_error",
                error_message="invalid api key",
            )
            request.status = 401
            self._send_simple(sock, 401, json.dumps(self.error_body(unauthorized)).encode(), {})
            request.completed = True
            return True
        if behavior.status != 200:
            extra: dict[str, str] = {}
            if behavior.retry_after is not None:
                extra["Retry-After"] = str(behavior.retry_after)
            request.status = behavior.status
            body = json.dumps(self.error_body(behavior)).encode()
            self._send_simple(sock, behavior.status, body, extra)
            request.completed = True
            return True

        request.status = 200
        sock.sendall(
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"Connection: keep-alive\r\n\r\n"
        )
        send = sock.sendall
        first = True
        for kind, frame in self.events(behavior, request):
            if kind == "token":
                n = request.tokens_sent
                if n == behavior.disconnect_after:
                    raise _Abort
                if n == behavior.hang_after:
                    self._linger(None)
                wait = behavior.first_token_delay if first else behavior.delay
                first = False
                if wait:
                    self._linger(wait, request)
                if request.interrupted:  # a newer request came (before or while it waited)
                    for _, end in self.cut_short():
                        send(b"%x\r\n%s\r\n" % (len(end), end))
                    break
                if behavior.stamp:
                    frame = frame.replace(b"@STAMP@", f" {time.monotonic():.6f}".encode())
                request.tokens_sent = n + 1
            send(b"%x\r\n%s\r\n" % (len(frame), frame))
            if kind == "error":
                break
        send(b"0\r\n\r\n")
        request.completed = True
        return True

    @staticmethod
    def _send_simple(sock: socket.socket, status: int, body: bytes, extra: dict[str, str]) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        head += [f"{k}: {v}" for k, v in extra.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _linger(self, seconds: float | None, request: RecordedRequest | None = None) -> None:
        """Wait ``seconds`` (None: until the server stops).

        A client that leaves meanwhile interrupts the wait (see ``_Watch``),
        and so does a newer request on a server that ``interrupts``.
        """
        if seconds is None:
            self._stopping.wait()
            raise _ClientGone
        if request is not None:
            request.wake.wait(seconds)
        else:
            gevent.sleep(seconds)


class _Watch:
    """Raises ``_ClientGone`` in a handler as soon as its client hangs up.

    One read watcher per response, started once: the handler sleeps and
    writes as it pleases, and a cancelled client is noticed at once, even
    in the middle of a long delay or a hang.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._raw = getattr(sock, "_sock", sock)  # the real socket, for a non-blocking peek
        self._handler = gevent.getcurrent()
        self._io = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._io.start(self._readable)

    def _readable(self) -> None:
        try:
            data = self._raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._io.stop()
        if not data:
            gevent.kill(self._handler, _ClientGone)
        # else: the client sent bytes (a pipelined request): nothing to watch.

    def close(self) -> None:
        self._io.stop()
        self._io.close()


def _sse(data: Any, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


class FakeOpenAIServer(FakeServer):
    """Speaks ``POST /v1/chat/completions`` with ``stream: true``, as OpenAI does.

    Usage is sent only when the request sets ``stream_options.include_usage``
    (and ``Behavior.usage``), in the place ``Behavior.usage_style`` says.
    With ``api_key`` set, requests need ``Authorization: Bearer <key>``.
    """

    stream_path = "/v1/chat/completions"
    base_path = "/v1"

    def check_auth(self, request: RecordedRequest) -> bool:
        return self.api_key is None or request.header("authorization") == f"Bearer {self.api_key}"

    def error_body(self, behavior: Behavior) -> dict[str, Any]:
        kind = behavior.error_type or (
            "rate_limit_exceeded" if behavior.status == 429 else "server_error"
        )
        return {"error": {"message": behavior.error_message, "type": kind, "code": None}}

    def events(self, behavior: Behavior, request: RecordedRequest) -> Iterator[tuple[str, bytes]]:
        body = request.json if isinstance(request.json, dict) else {}
        model = str(body.get("model", "fake"))
        options = body.get("stream_options") or {}
        want_usage = behavior.usage and bool(options.get("include_usage"))
        # Real servers send "usage": null on every chunk once usage is asked for.
        null_usage = ', "usage": null' if want_usage else ""
        head = (
            '{"id": "chatcmpl-fake", "object": "chat.completion.chunk", '
            f'"created": {int(time.time())}, "model": {json.dumps(model)}, '
        )
        if behavior.role_chunk:
            chunk = head + (
                '"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, '
                f'"finish_reason": null}}]{null_usage}}}'
            )
            yield "other", _sse(chunk)
        tokens = behavior.token_list()
        for i, token in enumerate(tokens):
            if i == behavior.error_after:
                yield "error", _sse(self.error_body(behavior))
                return
            if i == behavior.cut_after:
                yield from self.cut_short()
                return
            content = '"@STAMP@"' if behavior.stamp else json.dumps(token)
            chunk = head + (
                f'"choices": [{{"index": 0, "delta": {{"content": {content}}}, '
                f'"finish_reason": null}}]{null_usage}}}'
            )
            yield "token", _sse(chunk)
        if behavior.error_after is not None and behavior.error_after >= len(tokens):
            yield "error", _sse(self.error_body(behavior))
            return
        if behavior.cut_after is not None and behavior.cut_after >= len(tokens):
            yield from self.cut_short()
            return
        usage = {
            "prompt_tokens": behavior.prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": behavior.prompt_tokens + len(tokens),
        }
        if behavior.finish:
            final: dict[str, Any] = json.loads(head + '"choices": []}')
            final["choices"] = [
                {"index": 0, "delta": {}, "finish_reason": behavior.finish_reason or "stop"}
            ]
            if want_usage:
                final["usage"] = usage if behavior.usage_style == "final" else None
            yield "other", _sse(final)
        if want_usage and behavior.usage_style in ("empty", "null"):
            last: dict[str, Any] = json.loads(head + '"choices": []}')
            last["choices"] = [] if behavior.usage_style == "empty" else None
            last["usage"] = usage
            yield "other", _sse(last)
        if behavior.end_marker:
            yield "other", _sse("[DONE]")

    def cut_short(self) -> Iterator[tuple[str, bytes]]:
        yield "other", _sse("[DONE]")


class FakeAnthropicServer(FakeServer):
    """Speaks ``POST /v1/messages`` with ``stream: true``, as Anthropic does.

    Sends ``message_start``, ``content_block_start``, ``ping``,
    ``content_block_delta`` (``text_delta``) per token, ``content_block_stop``,
    ``message_delta`` (stop reason, cumulative usage) and ``message_stop``;
    a mid-stream failure is an ``error`` event, as Anthropic sends for
    ``overloaded_error``. With ``api_key`` set, requests need ``x-api-key``.
    """

    stream_path = "/v1/messages"
    base_path = ""

    def check_auth(self, request: RecordedRequest) -> bool:
        return self.api_key is None or request.header("x-api-key") == self.api_key

    def error_body(self, behavior: Behavior) -> dict[str, Any]:
        kind = behavior.error_type or {
            429: "rate_limit_error",
            529: "overloaded_error",
            401: "authentication_error",
            400: "invalid_request_error",
        }.get(behavior.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": behavior.error_message}}

    def events(self, behavior: Behavior, request: RecordedRequest) -> Iterator[tuple[str, bytes]]:
        body = request.json if isinstance(request.json, dict) else {}
        model = str(body.get("model", "fake"))
        usage_start = {"input_tokens": behavior.prompt_tokens, "output_tokens": 1}
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_start if behavior.usage else {},
        }
        yield "other", _sse({"type": "message_start", "message": message}, "message_start")
        yield (
            "other",
            _sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            ),
        )
        if behavior.ping:
            yield "other", _sse({"type": "ping"}, "ping")
        tokens = behavior.token_list()
        error = {
            "type": "error",
            "error": {
                "type": behavior.error_type or "overloaded_error",
                "message": behavior.error_message,
            },
        }
        for i, token in enumerate(tokens):
            if i == behavior.error_after:
                yield "error", _sse(error, "error")
                return
            if i == behavior.cut_after:
                yield from self.cut_short()
                return
            if behavior.ping and i and i % 5 == 0:
                yield "other", _sse({"type": "ping"}, "ping")
            text = '"@STAMP@"' if behavior.stamp else json.dumps(token)
            frame = (
                'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                f'"delta": {{"type": "text_delta", "text": {text}}}}}\n\n'
            )
            yield "token", frame.encode()
        if behavior.error_after is not None and behavior.error_after >= len(tokens):
            yield "error", _sse(error, "error")
            return
        if behavior.cut_after is not None and behavior.cut_after >= len(tokens):
            yield from self.cut_short()
            return
        yield "other", _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        if behavior.finish:
            delta: dict[str, Any] = {
                "type": "message_delta",
                "delta": {
                    "stop_reason": behavior.finish_reason or "end_turn",
                    "stop_sequence": None,
                },
            }
            delta["usage"] = {"output_tokens": len(tokens)} if behavior.usage else {}
            yield "other", _sse(delta, "message_delta")
        if behavior.end_marker:
            yield "other", _sse({"type": "message_stop"}, "message_stop")

    def cut_short(self) -> Iterator[tuple[str, bytes]]:
        yield "other", _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")


#: The server classes by provider name, for the command line.
SERVERS: dict[str, Callable[..., FakeServer]] = {
    "openai": FakeOpenAIServer,
    "anthropic": FakeAnthropicServer,
}
