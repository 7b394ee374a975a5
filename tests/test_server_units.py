"""The server's pieces alone: one route on a bare Flask app, one handler on one connection.

No listening server here. A route is a function of the ``ServerContext``;
a handler is a function of a real ``Connection`` whose socket is one end of
a ``socketpair``, the frames read back from the other end. What stands in
for simple-websocket's object is only the few attributes the connection
reads of it.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from gevent.event import Event as GEvent

from actorchat import ChatSystem
from actorchat._events import StreamContent
from actorchat._validate import MAX_TITLE, check_content, check_content_length, check_title
from actorchat.errors import (
    HTTP_STATUS,
    ActorchatError,
    AuthError,
    InvalidRequest,
    MessageTooLong,
    NotFound,
    code_for_status,
)
from actorchat.server._api import ROUTES, make_api
from actorchat.server._auth import Authenticator
from actorchat.server._connection import Connection
from actorchat.server._context import ServerContext
from actorchat.server._handlers import HANDLERS
from actorchat.server._heartbeat import Heartbeat
from actorchat.server._http import exception_response
from actorchat.server._hub import Hub
from actorchat.server._limits import RateLimiter
from actorchat.server._metrics import ServerMetrics
from actorchat.server._protocol import Request
from actorchat.server._routes_conversations import create_conversation
from actorchat.server._routes_health import readyz
from actorchat.server._routes_messages import list_messages
from actorchat.server._transport import frame_bytes, text_frame

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ctx(system: ChatSystem) -> Iterator[ServerContext]:
    """A server's shared state over a running system, as ``create_app`` builds it."""
    cfg = system.config
    metrics = ServerMetrics(system)
    connections: dict[Any, None] = {}
    context = ServerContext(
        config=cfg,
        chat=system,
        hub=Hub(system, metrics),
        auth=Authenticator("", cfg.jwt_leeway, cfg.dev_token_ttl),
        limiter=RateLimiter(cfg.rate_limit_messages, cfg.rate_limit_window),
        metrics=metrics,
        heartbeat=Heartbeat(connections, cfg.ping_interval),
        connections=connections,
    )
    context.start()
    try:
        yield context
    finally:
        context.stop()


# -- one home per fact: errors, titles, content ------------------------------------------------


def test_each_code_has_one_status_and_the_readme_table_says_the_same() -> None:
    assert HTTP_STATUS["MESSAGE_TOO_LONG"] == MessageTooLong.http_status == 413
    assert HTTP_STATUS["NOT_FOUND"] == NotFound("x").http_status == 404
    documented: dict[str, int] = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([A-Z_]+)` \|.*\| (\d{3})\b[^|]*\|$", line)
        if m:
            documented[m.group(1)] = int(m.group(2))
    assert documented == HTTP_STATUS


def test_framework_statuses_take_their_codes_from_the_same_table() -> None:
    assert code_for_status(404) == "NOT_FOUND"
    assert code_for_status(413) == "MESSAGE_TOO_LONG"
    assert code_for_status(400) == "INVALID_MESSAGE"  # the most general of the 400s
    assert code_for_status(405) == "INVALID_MESSAGE"  # a 4xx no class has
    assert code_for_status(500) == "INTERNAL_ERROR"
    assert code_for_status(599) == "INTERNAL_ERROR"


def test_the_title_and_content_rules() -> None:
    assert check_title("x" * MAX_TITLE) == "x" * MAX_TITLE
    with pytest.raises(InvalidRequest, match=f"longer than {MAX_TITLE} characters"):
        check_title("x" * (MAX_TITLE + 1))
    with pytest.raises(InvalidRequest, match="title must be a string"):
        check_title(3)
    check_content_length("abc", 3)
    with pytest.raises(MessageTooLong, match="content is 4 characters; the limit is 3"):
        check_content_length("abcd", 3)
    with pytest.raises(InvalidRequest, match="must not be empty"):
        check_content("  ", 3)


def test_the_python_api_refuses_a_long_title_as_the_server_does(system: ChatSystem) -> None:
    with pytest.raises(InvalidRequest, match="longer than"):
        system.start_conversation(title="x" * (MAX_TITLE + 1))
    cid = system.start_conversation(title="ok")
    with pytest.raises(InvalidRequest, match="longer than"):
        system.rename_conversation(cid, "x" * (MAX_TITLE + 1))
    with pytest.raises(InvalidRequest, match="longer than"):
        system.update_conversation(cid, title="x" * (MAX_TITLE + 1))
    assert system.get_conversation(cid).title == "ok"


# -- routes alone ------------------------------------------------------------------------------


def _one_route_app(ctx: ServerContext, route: Any, methods: list[str]) -> Flask:
    app = Flask("one_route")
    app.add_url_rule("/r", "r", partial(route, ctx), methods=methods)
    app.register_error_handler(ActorchatError, exception_response)
    return app


def test_create_conversation_route_alone(ctx: ServerContext) -> None:
    client = _one_route_app(ctx, create_conversation, ["POST"]).test_client()
    auth = {"Authorization": f"Bearer {ctx.auth.issue('alice')}"}
    r = client.post("/r", json={"title": "alone"}, headers=auth)
    assert r.status_code == 201
    conv = r.get_json()
    assert conv["title"] == "alone"
    assert ctx.chat.get_conversation(conv["id"]).owner == "alice"
    assert ctx.hub.owners[conv["id"]] == "alice"
    r = client.post("/r", json={"title": "x" * (MAX_TITLE + 1)}, headers=auth)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "INVALID_MESSAGE"
    r = client.post("/r", json={"title": "no token"})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


def test_route_functions_called_in_a_request_context(ctx: ServerContext) -> None:
    app = Flask("bare")
    with app.test_request_context("/readyz"):
        r = readyz(ctx)
        checks = r.get_json()["checks"]
        assert r.status_code == 200 and checks["store"] is True and "schema" in checks
    token = ctx.auth.issue("alice")
    auth = {"Authorization": f"Bearer {token}"}
    with app.test_request_context(headers=auth), pytest.raises(NotFound):
        list_messages(ctx, "x" * 300)  # no conversation could have that id


def test_the_route_table_is_what_the_blueprint_serves(ctx: ServerContext) -> None:
    assert len({(method, path) for method, path, _, _ in ROUTES}) == len(ROUTES)
    app = Flask("api", static_folder=None)
    app.register_blueprint(make_api(ctx))
    served = {
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert served == {(method, path) for method, path, _, _ in ROUTES}


# -- handlers alone ----------------------------------------------------------------------------


class _Ws:
    """The attributes a ``Connection`` reads of simple-websocket's server object."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connected = True
        self.pong_received = False
        self.event = GEvent()

    def close(self, code: int, reason: str) -> None:
        self.connected = False


class _Peer:
    """The client's end of a socket pair: reads the server's text frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(10.0)

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the connection closed"
            out += chunk
        return out

    def recv(self) -> dict[str, Any]:
        head = self._read(2)
        assert head[0] == 0x81  # a final text frame
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(self._read(2), "big")
        elif n == 127:
            n = int.from_bytes(self._read(8), "big")
        frame: dict[str, Any] = json.loads(self._read(n))
        return frame


@pytest.fixture
def conn(ctx: ServerContext) -> Iterator[tuple[Connection, _Peer]]:
    """A connection authenticated as alice, as after its first ``auth`` frame."""
    server_end, client_end = socket.socketpair()
    c = Connection(ctx, _Ws(server_end), HANDLERS)
    c.identity = ctx.auth.verify(ctx.auth.issue("alice"))
    c.user_id = "alice"
    ctx.hub.connect(c)
    try:
        yield c, _Peer(client_end)
    finally:
        ctx.hub.disconnect(c, c.joined)
        server_end.close()
        client_end.close()


def test_ping_handler_alone(conn: tuple[Connection, _Peer]) -> None:
    c, peer = conn
    HANDLERS["ping"](c, Request("ping", {}, 7))
    assert peer.recv() == {"type": "pong", "data": {}, "reply_to": 7}


def test_create_conversation_handler_answers_once_and_joins(
    conn: tuple[Connection, _Peer],
) -> None:
    c, peer = conn
    HANDLERS["create_conversation"](c, Request("create_conversation", {"title": "t"}, "r1"))
    created = peer.recv()
    assert created["type"] == "conversation_created" and created["reply_to"] == "r1"
    cid = created["data"]["conversation"]["id"]
    assert created["data"]["conversation"]["title"] == "t"
    assert cid in c.joined
    with pytest.raises(InvalidRequest, match="longer than"):
        HANDLERS["rename_conversation"](
            c, Request("rename_conversation", {"conversation_id": cid, "title": "x" * 1001})
        )


def test_auth_handler_refuses_another_users_token(
    ctx: ServerContext, conn: tuple[Connection, _Peer]
) -> None:
    c, peer = conn
    with pytest.raises(AuthError, match="another user"):
        HANDLERS["auth"](c, Request("auth", {"token": ctx.auth.issue("bob")}))
    HANDLERS["auth"](c, Request("auth", {"token": ctx.auth.issue("alice")}, 2))
    assert peer.recv()["type"] == "auth_success"


# -- transport ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_text_frame_header_lengths(size: int) -> None:
    data = text_frame("a" * size)
    header = {125: 2, 126: 4, 65535: 4, 65536: 10, 0: 2}[size]
    assert len(data) == header + size and data[0] == 0x81


def test_a_delta_frame_is_the_events_own_frame() -> None:
    event = StreamContent("c1", "m1", 'say "hi"\n\u00e9', 3)
    data = frame_bytes(event)
    assert data[:2] == b"\x81\x7e" and int.from_bytes(data[2:4], "big") == len(data) - 4
    assert json.loads(data[4:]) == event.frame()
