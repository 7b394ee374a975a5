"""Wiring: the Flask app factory, the server's life cycle, and ``actorchat serve``.

Start order (stop is the reverse, in ``finally``): the ``ChatSystem``
(store -> providers -> actors) -> the fan-out hub -> the Flask app ->
gevent's ``pywsgi.WSGIServer`` listening, all in one monkey-patched
process. Shutdown (SIGTERM/SIGINT): refuse new work and new WebSockets
(``/readyz`` answers 503 with ``draining: true``, health checks are still
answered), let replies finish for ``shutdown_grace`` seconds, stop
accepting, cancel the rest (partial text is kept and stored), deliver those
last events, close every WebSocket with 1001, flush and close the store,
exit 0.
"""

from __future__ import annotations

import errno
import logging
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
from flask import Flask, Response, request
from flask_sock import Sock
from gevent.event import Event as GEvent
from gevent.pywsgi import WSGIServer
from werkzeug.exceptions import HTTPException

from actorchat._gevent import ensure_patched
from actorchat._system import ChatSystem
from actorchat._version import __version__
from actorchat.config import Config, load_config
from actorchat.errors import ActorchatError, ConfigurationError, code_for_status, error_code
from actorchat.server._api import make_api
from actorchat.server._auth import DEV_KEY_FILE, Authenticator, load_dev_key
from actorchat.server._connection import Connection
from actorchat.server._context import ServerContext
from actorchat.server._handlers import HANDLERS
from actorchat.server._heartbeat import Heartbeat
from actorchat.server._http import error_response, exception_response, timed
from actorchat.server._hub import Hub
from actorchat.server._limits import RateLimiter
from actorchat.server._logs import configure_logging
from actorchat.server._metrics import ServerMetrics
from actorchat.server._web import default_web_dir, serve_web
from actorchat.stores import store_kind

__all__ = ["WS_PATH", "Server", "create_app", "serve"]

log = logging.getLogger("actorchat.server")

#: The WebSocket endpoint (PROTOCOL.md, Transport).
WS_PATH = "/api/v1/chat/ws"
#: How long shutdown waits for connections to finish their closing handshake.
_CLOSE_GRACE = 2.0


class _GreenThread:
    """simple-websocket's background "thread" as a bare greenlet.

    A monkey-patched ``threading.Thread`` is a greenlet too, plus the
    threading module's bookkeeping (locks, events, a registry entry) per
    connection; this skips that. It also keeps the library's rare
    ``ConnectionClosed`` from a race between its ping timer and a close from
    being printed as an unhandled error.
    """

    def __init__(self, target: Callable[[], None]) -> None:
        self.name = "simple_websocket"
        self._target = target
        self._greenlet: gevent.Greenlet[Any, Any] | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            self._target()
        except Exception as exc:  # noqa: BLE001 - the connection is over either way
            log.debug("websocket thread ended: %r", exc)

    def join(self, timeout: float | None = None) -> None:
        if self._greenlet is not None:
            self._greenlet.join(timeout)

    def is_alive(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead


def _origin_allowed(origin: str, host: str, allowed: list[str]) -> bool:
    """Browsers send ``Origin``; other clients do not and are not checked.

    With no allow-list only same-origin pages may connect; ``*`` allows all.
    """
    if "*" in allowed:
        return True
    if origin in allowed:
        return True
    return not allowed and urlsplit(origin).netloc.lower() == host.lower()


def _listen(host: str, port: int, send_buffer: int = 0) -> socket.socket:
    """A listening socket, or a ``ConfigurationError`` that says what to change.

    ``send_buffer`` (bytes; 0: the kernel's autotuning) bounds each accepted
    connection's kernel send buffer, which it inherits: with autotuning a
    client that stops reading can hold megabytes of kernel memory before the
    outbox even notices it is slow.
    """
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by every accepted socket: an HTTP response is written as
        # headers then body, and with Nagle's algorithm the small body waited
        # for the client's delayed ACK, ~40 ms on every kept-alive request.
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if send_buffer:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        listener.bind((host, port))
        listener.listen(4096)
    except OSError as exc:
        listener.close()
        hint = (
            "another program is listening there; choose another port (--port, ACTORCHAT_PORT)"
            if exc.errno == errno.EADDRINUSE
            else "check --host/--port (ACTORCHAT_HOST, ACTORCHAT_PORT)"
        )
        msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}; {hint}"
        raise ConfigurationError(msg) from exc
    return listener


class _ClientErrorLog:
    """pywsgi's error log, as one WARNING line per report, without a socket repr.

    What gevent's WSGI server writes here is a client's fault: a chunked
    body cut short, a malformed request line. An ERROR with the socket's
    repr sent operators looking for a bug; the app's own failures are
    logged by its error handler.
    """

    _SOCKET = re.compile(r"^<gevent\._socket3\.socket [^>]*>: ")

    def write(self, message: str) -> None:
        text = self._SOCKET.sub("", message.strip())
        if text:
            log.warning("http.client_error %s", " ".join(text.split()))

    def flush(self) -> None:
        """Nothing is buffered."""


def create_app(chat: ChatSystem, config: Config | None = None) -> Flask:
    """The Flask app speaking PROTOCOL.md over ``chat`` (which must be started).

    Starts the fan-out hub (one bus subscription); ``app.extensions
    ["actorchat"]`` holds the ``ServerContext`` for the wiring to stop it.
    """
    cfg = config or chat.config
    # Dev tokens outlive the process where the data does: with a store on
    # disk, the key sits beside it (the memory store forgets everything anyway).
    dev_key = None
    if not cfg.jwt_secret:
        # A store that many processes share keeps the key for all of them;
        # otherwise it lives beside the data, in the data dir.
        if chat.store is not None:
            dev_key = chat.store.shared_secret("dev-auth-key", lambda: secrets.token_urlsafe(32))
        if dev_key is None and store_kind(cfg.store).durable:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            dev_key = load_dev_key(cfg.data_dir / DEV_KEY_FILE)
    metrics = ServerMetrics(chat)
    hub = Hub(chat, metrics)
    connections: dict[Any, None] = {}
    ctx = ServerContext(
        config=cfg,
        chat=chat,
        hub=hub,
        auth=Authenticator(cfg.jwt_secret, cfg.jwt_leeway, cfg.dev_token_ttl, dev_key),
        limiter=RateLimiter(cfg.rate_limit_messages, cfg.rate_limit_window),
        metrics=metrics,
        heartbeat=Heartbeat(connections, cfg.ping_interval),
        connections=connections,
    )
    app = Flask("actorchat")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_frame_bytes
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": None,  # our Heartbeat pings (see _heartbeat.py)
        "max_message_size": cfg.max_frame_bytes,
        "receive_bytes": 65536,
        "thread_class": _GreenThread,
    }
    app.extensions["actorchat"] = ctx
    allowed = [o.strip() for o in cfg.allowed_origins.split(",") if o.strip()]

    before, after = timed(ctx)
    app.before_request(before)
    app.after_request(after)

    @app.before_request
    def websocket_gate() -> Response | None:
        if request.path != WS_PATH:
            return None
        origin = request.headers.get("Origin")
        if origin and not _origin_allowed(origin, request.host, allowed):
            log.info("ws.refused origin=%s", origin)
            return error_response("FORBIDDEN", "this origin may not connect")
        # simple-websocket would accept permessage-deflate whenever offered:
        # a zlib context per connection costs far more memory than idle
        # chat needs, so the offer is hidden from it.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return None

    sock = Sock(app)

    @sock.route(WS_PATH)  # type: ignore[untyped-decorator]
    def chat_ws(ws: Any) -> None:
        peer = request.environ.get("REMOTE_ADDR", "")
        Connection(ctx, ws, HANDLERS, peer).run()

    app.register_blueprint(make_api(ctx))
    web_dir = Path(cfg.web_dir) if cfg.web_dir else default_web_dir()
    if web_dir is not None and cfg.web_dir != "off":
        serve_web(app, web_dir)

    @app.errorhandler(ActorchatError)
    def on_error(exc: ActorchatError) -> Response:
        metrics.errors.labels(error_code(exc)).inc()
        return exception_response(exc)

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = code_for_status(status)
        description = exc.description or exc.name
        if status == 413:
            description = f"the request body is larger than {cfg.max_frame_bytes} bytes"
        elif status == 404 and request.path == WS_PATH:
            # flask-sock routes only upgrade requests: a plain GET lands here.
            status, code = 400, "INVALID_MESSAGE"
            description = f"{WS_PATH} speaks WebSocket: send an upgrade request"
        response = error_response(code, description)
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def on_crash(exc: Exception) -> Response:
        log.exception("http.internal_error path=%s", request.path)
        metrics.errors.labels("INTERNAL_ERROR").inc()
        return error_response("INTERNAL_ERROR", "internal error")

    ctx.start()
    return app


class Server:
    """One actorchat server: the actor system, the app, the listener.

    Example (tests, embedding)::

        server = Server(load_config(port=0)).start()
        print(server.url)
        ...
        server.stop()
    """

    def __init__(self, config: Config | None = None, *, chat: ChatSystem | None = None) -> None:
        self.config = config or (chat.config if chat is not None else load_config())
        self._own_chat = chat is None
        self.chat = chat
        self.app: Flask | None = None
        self.ctx: ServerContext | None = None
        self._wsgi: WSGIServer | None = None
        self.port = self.config.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}{WS_PATH}"

    def start(self) -> Server:
        """Start everything in dependency order; undo it all if a step fails."""
        ensure_patched()
        cfg = self.config
        try:
            if self.chat is None:
                self.chat = ChatSystem(cfg)
            self.chat.start()
            self.app = create_app(self.chat, cfg)
            self.ctx = self.app.extensions["actorchat"]
            listener = _listen(cfg.host, cfg.port, cfg.socket_send_buffer)
            self.port = listener.getsockname()[1]
            self._wsgi = WSGIServer(
                listener,
                self.app,
                log=None,
                error_log=_ClientErrorLog(),
            )
            self._wsgi.start()
        except BaseException:
            self._teardown()
            raise
        log.info("server.start url=%s", self.url)
        return self

    def stop(self, grace: float | None = None) -> None:
        """Shut down gracefully (see the module docstring); safe to call twice."""
        ctx, chat = self.ctx, self.chat
        if ctx is None or chat is None:
            return
        grace = self.config.shutdown_grace if grace is None else grace
        started = time.monotonic()
        # Draining: new WebSockets and new work are refused, /readyz says 503
        # (draining: true) so that a balancer moves traffic away, /healthz
        # still answers, and the replies in progress finish. The listener
        # stays open for those health checks until the drain is over.
        ctx.draining = True
        generating = chat.metrics.generating
        finished = chat.drain(grace) if grace > 0 else generating == 0
        drained = time.monotonic()
        log.info(
            "server.drain replies=%d finished=%s secs=%.1f",
            generating,
            finished,
            drained - started,
        )
        if self._wsgi is not None:
            self._wsgi.close()  # stop accepting; open connections carry on
        try:
            if self._own_chat:
                # Cancels what is still generating, keeping and storing the
                # partial text, then flushes and closes the store.
                chat.stop()
            closing = time.monotonic()
            unanswered = self._close_connections(ctx)
        finally:
            self._teardown()
        done = time.monotonic()
        # Each phase on its own: a stop that took 4.5 s was read as a slow
        # drain when the replies had finished at 1.6 s and the rest was
        # clients slow to answer the close.
        log.info(
            "server.stop secs=%.1f (drain %.1f, stopping actors %.1f, closing sockets %.1f: "
            "%d of %d peers did not answer the close within %.0f s)",
            done - started,
            drained - started,
            closing - drained,
            done - closing,
            unanswered[0],
            unanswered[1],
            _CLOSE_GRACE,
        )

    @staticmethod
    def _close_connections(ctx: ServerContext) -> tuple[int, int]:
        """Close every socket with 1001; (peers that did not answer in time, all)."""
        conns = list(ctx.connections)
        for conn in conns:
            conn.close(1001, "Server shutting down")
        deadline = time.monotonic() + _CLOSE_GRACE
        while ctx.connections and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return len(ctx.connections), len(conns)

    def _teardown(self) -> None:
        if self._wsgi is not None:
            self._wsgi.stop(timeout=1.0)
            self._wsgi = None
        if self.ctx is not None:
            self.ctx.stop()
            self.ctx = None
        if self._own_chat and self.chat is not None:
            self.chat.stop()


def _banner(server: Server) -> str:
    cfg = server.config
    lines = [
        f"actorchat {__version__} serving on {server.url}",
        f"  WebSocket: {server.ws_url}",
    ]
    if server.app is not None and any(r.rule == "/" for r in server.app.url_map.iter_rules()):
        lines.append(f"  web app: open {server.url}/ (chat) or {server.url}/dashboard.html (swarm)")
    assert server.ctx is not None
    if server.ctx.auth.dev_mode:
        lines += [
            "  dev auth is on (set ACTORCHAT_JWT_SECRET to turn it off); get a token with:",
            f"    curl -s -X POST {server.url}/api/v1/auth/token "
            "-H 'Content-Type: application/json' -d '{\"user_id\": \"alice\"}'",
        ]
    else:
        lines.append("  auth: HS256 JWTs signed with the configured secret")
    store = store_kind(cfg.store).describe(cfg)
    lines.append(f"  store: {store}; default model: {cfg.default_model}")
    return "\n".join(lines)


def serve(config: Config | None = None) -> int:
    """Run a server until SIGTERM or SIGINT, then shut down gracefully; returns 0.

    The process must already be monkey-patched (``actorchat.patch()``, which
    the ``actorchat`` command does first).
    """
    cfg = config or load_config()
    configure_logging(cfg.log_level, cfg.log_format)
    stopping = GEvent()
    server = Server(cfg)
    handlers = [
        gevent.signal_handler(signal.SIGTERM, stopping.set),
        gevent.signal_handler(signal.SIGINT, stopping.set),
    ]
    try:
        server.start()
        print(_banner(server), flush=True)
        stopping.wait()
        print("actorchat: shutting down", file=sys.stderr, flush=True)
    finally:
        for handler in handlers:
            handler.cancel()
        server.stop()
    return 0
