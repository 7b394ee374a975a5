"""End to end over HTTP: REST, Server-Sent Events, operations, errors, origins."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import websocket
from gevent.event import Event as GEvent

from actorchat import ModelConfig, StreamComplete
from actorchat.server import Server
from tests.pg_support import STORES, store_settings
from tests.server_support import WAIT, Client, dev_token, free_port, running_server


@pytest.fixture(scope="module", params=STORES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = store_settings(request, request.param)
    with running_server(
        tmp_path_factory.mktemp("http"), rate_limit_messages=1000, **settings
    ) as srv:
        yield srv


class Api:
    """requests with a user's bearer token and the server's base URL."""

    def __init__(self, server: Server, user: str = "alice") -> None:
        self.base = server.url
        self.s = requests.Session()
        self.s.headers["Authorization"] = f"Bearer {dev_token(server, user)}"

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.s, method)
        return lambda path, **kw: call(self.base + path, timeout=WAIT, **kw)


def sse_events(response: requests.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of an SSE response, read to its end."""
    events = []
    kind = ""
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
    return events


def test_health_readiness_metrics(server: Server) -> None:
    r = requests.get(f"{server.url}/healthz", timeout=WAIT)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = requests.get(f"{server.url}/readyz", timeout=WAIT)
    assert r.status_code == 200 and r.json()["checks"]["store"] is True
    c = Client(server)
    cid = c.create()
    c.send("send_message", {"conversation_id": cid, "content": "count me"})
    c.until("stream_complete")
    text = requests.get(f"{server.url}/metrics", timeout=WAIT).text
    for series in (
        "actorchat_ws_connections ",
        "actorchat_conversations_live ",
        "actorchat_conversations_stored ",
        "actorchat_messages_total ",
        'actorchat_stream_events_total{type="stream_content"}',
        "actorchat_tokens_total ",
        "actorchat_time_to_first_token_seconds_bucket",
        "actorchat_request_duration_seconds_bucket",
        "actorchat_restarts_total ",
        'actorchat_model_in_flight{model="mock"}',
        'actorchat_model_queued{model="mock"}',
    ):
        assert series in text, series
    c.close()


def test_auth_errors_are_json(server: Server) -> None:
    r = requests.get(f"{server.url}/api/v1/conversations", timeout=WAIT)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "AUTH_REQUIRED"
    r = requests.get(
        f"{server.url}/api/v1/conversations",
        headers={"Authorization": "Bearer nope"},
        timeout=WAIT,
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "AUTH_FAILED"
    r = requests.get(f"{server.url}/no/such/route", timeout=WAIT)
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


def test_conversation_crud_and_ownership(server: Server) -> None:
    api, bob = Api(server), Api(server, "bob")
    r = api.post("/api/v1/conversations", json={"title": "rest"})
    assert r.status_code == 201
    conv = r.json()
    cid = conv["id"]
    assert conv["title"] == "rest" and conv["message_count"] == 0
    assert cid in [c["id"] for c in api.get("/api/v1/conversations").json()["conversations"]]
    assert api.get(f"/api/v1/conversations/{cid}").json()["id"] == cid
    r = api.patch(f"/api/v1/conversations/{cid}", json={"title": "renamed"})
    assert r.status_code == 200 and r.json()["title"] == "renamed"
    r = api.patch(f"/api/v1/conversations/{cid}", json={"color": "red"})
    assert r.status_code == 400 and "unknown fields color" in r.json()["error"]["message"]
    # The object as GET gives it may come back whole: read-only keys are ignored.
    whole = {**api.get(f"/api/v1/conversations/{cid}").json(), "title": "whole"}
    r = api.patch(f"/api/v1/conversations/{cid}", json=whole)
    assert r.status_code == 200 and r.json()["title"] == "whole"
    r = bob.get(f"/api/v1/conversations/{cid}")
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    assert bob.delete(f"/api/v1/conversations/{cid}").status_code == 403
    assert api.delete(f"/api/v1/conversations/{cid}").status_code == 204
    assert api.get(f"/api/v1/conversations/{cid}").status_code == 404


def test_post_message_waits_for_the_reply_and_pages(server: Server) -> None:
    api = Api(server)
    cid = api.post("/api/v1/conversations", json={}).json()["id"]
    ids = []
    for text in ("one", "two", "three"):
        r = api.post(f"/api/v1/conversations/{cid}/messages", json={"content": text})
        assert r.status_code == 200
        body = r.json()
        assert body["message"]["content"] == text
        assert body["reply"]["message_type"] == "assistant"
        assert body["reply"]["finish_reason"] == "stop"
        ids += [body["message"]["id"], body["reply"]["id"]]
    msgs = api.get(f"/api/v1/conversations/{cid}/messages").json()["messages"]
    assert [m["id"] for m in msgs] == ids
    page = api.get(f"/api/v1/conversations/{cid}/messages?limit=2&before={ids[4]}").json()
    assert [m["id"] for m in page["messages"]] == ids[2:4]
    # The oldest message ends the paging; an id that is not there is an error.
    assert api.get(f"/api/v1/conversations/{cid}/messages?before={ids[0]}").json() == {
        "messages": []
    }
    r = api.get(f"/api/v1/conversations/{cid}/messages?before=zzz")
    assert r.status_code == 400 and "before: no message 'zzz'" in r.json()["error"]["message"]
    r = api.get(f"/api/v1/conversations/{cid}/messages?limit=zero")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_MESSAGE"


def test_versions_after_regenerate(server: Server) -> None:
    api = Api(server)
    cid = api.post("/api/v1/conversations", json={}).json()["id"]
    first = api.post(f"/api/v1/conversations/{cid}/messages", json={"content": "again"}).json()
    c = Client(server)
    c.send("stream_response", {"conversation_id": cid})
    c.until("stream_complete")
    active = api.get(f"/api/v1/conversations/{cid}/messages").json()["messages"]
    assert first["reply"]["id"] not in [m["id"] for m in active]
    every = api.get(f"/api/v1/conversations/{cid}/messages?versions=true").json()["messages"]
    old = [m for m in every if m["id"] == first["reply"]["id"]]
    assert old and old[0]["superseded"] is True
    c.close()


def test_post_message_as_server_sent_events(server: Server) -> None:
    api = Api(server)
    cid = api.post("/api/v1/conversations", json={}).json()["id"]
    r = api.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"content": "stream it"},
        headers={"Accept": "text/event-stream"},
        stream=True,
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(r)
    kinds = [k for k, _ in events]
    assert kinds[0] == "message_received" and kinds[1] == "stream_start"
    assert kinds[-1] == "stream_complete" and set(kinds[2:-1]) == {"stream_content"}
    # the data is the whole {type, data} object, as on the WebSocket
    assert all(obj["type"] == kind for kind, obj in events)
    text = "".join(obj["data"]["content"] for kind, obj in events if kind == "stream_content")
    msgs = api.get(f"/api/v1/conversations/{cid}/messages").json()["messages"]
    assert msgs[-1]["content"] == text


def test_rest_messages_reach_websocket_tabs(server: Server) -> None:
    api = Api(server)
    joined, sidebar = Client(server), Client(server)
    cid = joined.create()
    joined.send("join_conversation", {"conversation_id": cid})
    joined.expect("conversation_joined")
    api.post(f"/api/v1/conversations/{cid}/messages", json={"content": "from REST"})
    assert joined.expect("message_received")["data"]["message"]["content"] == "from REST"
    assert joined.expect("stream_complete")["data"]["finish_reason"] == "stop"
    added = sidebar.expect(
        "message_added", lambda f: f["data"]["message"]["conversation_id"] == cid
    )
    assert added["data"]["message"]["content"] == "from REST"
    joined.close()
    sidebar.close()


def test_export(server: Server) -> None:
    api = Api(server)
    cid = api.post("/api/v1/conversations", json={"title": "exported"}).json()["id"]
    api.post(f"/api/v1/conversations/{cid}/messages", json={"content": "export me"})
    r = api.get(f"/api/v1/conversations/{cid}/export?format=json")
    assert r.status_code == 200 and r.json()["conversation"]["id"] == cid
    assert "attachment" in r.headers["Content-Disposition"]
    r = api.get(f"/api/v1/conversations/{cid}/export?format=md")
    assert r.headers["Content-Type"].startswith("text/markdown") and "export me" in r.text
    r = api.get(f"/api/v1/conversations/{cid}/export?format=csv")
    assert r.headers["Content-Type"].startswith("text/csv") and "export me" in r.text
    assert api.get(f"/api/v1/conversations/{cid}/export?format=pdf").status_code == 400


def test_batch_and_broadcast(server: Server) -> None:
    api = Api(server)
    r = api.post("/api/v1/conversations/batch", json={"count": 50})
    assert r.status_code == 201
    ids = r.json()["conversation_ids"]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert server.chat is not None
    sub = server.chat.subscribe(None, replay=False, maxsize=100_000)
    r = api.post("/api/v1/conversations/broadcast", json={"conversation_ids": ids, "message": "hi"})
    assert r.status_code == 202 and r.json() == {"accepted": 50}
    finished: set[str] = set()
    while len(finished) < 50:
        event = sub.get(WAIT)
        assert event is not None, f"only {len(finished)} replies"
        if isinstance(event, StreamComplete) and event.conversation_id in ids:
            finished.add(event.conversation_id)
    sub.close()
    r = api.post("/api/v1/conversations/batch", json={"count": 10_001})
    assert r.status_code == 400
    foreign = Api(server, "bob").post("/api/v1/conversations", json={}).json()["id"]
    r = api.post(
        "/api/v1/conversations/broadcast", json={"conversation_ids": [foreign], "message": "x"}
    )
    assert r.status_code == 403


def test_operations(server: Server) -> None:
    api = Api(server)
    stats = api.get("/api/v1/admin/stats").json()
    assert {"live", "stored", "states", "tokens_per_s", "connections", "rss_bytes"} <= set(stats)
    with api.get("/api/v1/admin/stats", headers={"Accept": "text/event-stream"}, stream=True) as r:
        lines = r.iter_lines(decode_unicode=True)
        assert next(lines) == "event: stats"
        assert json.loads(next(lines)[6:])["data"]["live"] >= 0
    cid = api.post("/api/v1/conversations", json={}).json()["id"]
    listed = api.get("/api/v1/admin/conversations?state=idle").json()["conversations"]
    assert {"id": cid, "state": "idle"} in listed
    r = api.get("/api/v1/admin/conversations?state=passivated")
    assert (
        r.status_code == 200 and {"id": cid, "state": "passivated"} not in r.json()["conversations"]
    )
    r = api.get("/api/v1/admin/conversations?state=sleepy")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_MESSAGE"
    assert "state must be one of" in r.json()["error"]["message"]
    r = api.post("/api/v1/admin/kill", json={"conversation_ids": [cid]})
    assert r.status_code == 200 and r.json()["killed"] == [cid]
    assert api.post("/api/v1/admin/kill", json={}).status_code == 400


def test_http_limits(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_limit_messages=1, rate_limit_window=60.0) as srv:
        api = Api(srv)
        cid = api.post("/api/v1/conversations", json={}).json()["id"]
        path = f"/api/v1/conversations/{cid}/messages"
        r = api.post(path, json={"content": "x" * 100_001})
        assert r.status_code == 413 and r.json()["error"]["code"] == "MESSAGE_TOO_LONG"
        r = api.post(path, data="{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_JSON"
        assert r.json()["error"]["message"] == "the request body is not valid JSON"
        body = r'{"content": "\ud800"}'
        r = api.post(path, data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_JSON"
        assert "the request body is not valid text" in r.json()["error"]["message"]
        assert api.post(path, json={"content": "ok"}).status_code == 200
        r = api.post(path, json={"content": "too soon"})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "RATE_LIMITED"
        assert int(r.headers["Retry-After"]) >= 1
        r = api.post(path, data=b"x" * (2 * 1024 * 1024))
        assert r.status_code == 413
        assert r.json()["error"]["message"] == "the request body is larger than 1048576 bytes"
        # The same body sent chunked (no Content-Length) is refused the same way.
        r = api.post(path, data=iter([b"x" * 65536] * 32))
        assert r.status_code == 413 and r.json()["error"]["code"] == "MESSAGE_TOO_LONG"
        # The WebSocket route, asked without an upgrade, says what it wants.
        r = api.get("/api/v1/chat/ws")
        assert r.status_code == 400 and "send an upgrade request" in r.json()["error"]["message"]


def test_admin_needs_the_role_when_a_secret_is_set(tmp_path: Path) -> None:
    secret = "s" * 32
    with running_server(tmp_path, jwt_secret=secret) as srv:
        now = int(time.time())

        def get(claims: dict[str, Any]) -> requests.Response:
            tok = jwt.encode({"exp": now + 60, **claims}, secret, algorithm="HS256")
            return requests.get(
                f"{srv.url}/api/v1/admin/stats",
                headers={"Authorization": f"Bearer {tok}"},
                timeout=WAIT,
            )

        assert get({"sub": "user"}).status_code == 403
        assert get({"sub": "ops", "role": "admin"}).status_code == 200


def test_origin_allow_list(tmp_path: Path) -> None:
    with running_server(tmp_path, allowed_origins="https://chat.example") as srv:
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(srv.ws_url, origin="https://evil.example", timeout=WAIT)
        assert refused.value.status_code == 403
        ok = websocket.create_connection(srv.ws_url, origin="https://chat.example", timeout=WAIT)
        ok.close()
    with running_server(tmp_path) as srv:  # no list: same origin only
        host = srv.url.removeprefix("http://")
        ok = websocket.create_connection(srv.ws_url, origin=f"http://{host}", timeout=WAIT)
        ok.close()
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(srv.ws_url, origin="http://other.example", timeout=WAIT)


def test_web_app_is_served_at_root_with_a_strict_policy(server: Server) -> None:
    r = requests.get(f"{server.url}/", timeout=WAIT)
    assert r.status_code == 200 and "<html" in r.text.lower()
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert requests.get(f"{server.url}/dashboard.html", timeout=WAIT).status_code == 200
    assert requests.get(f"{server.url}/no-such-file.js", timeout=WAIT).status_code == 404


def test_models_lists_configured_models_and_the_default(server: Server) -> None:
    assert requests.get(f"{server.url}/api/v1/models", timeout=WAIT).status_code == 401
    body = Api(server).get("/api/v1/models").json()
    assert body["default"] == "mock"
    assert {"name": "mock", "provider": "mock", "model": "mock"} in body["models"]


def test_the_rate_limit_holds_in_every_window() -> None:
    # PROTOCOL.md rule 14: 30 per 10 s. A token bucket let through the burst
    # and then its refill: ~58 in 9.5 s, found by a conformance check.
    from actorchat.errors import RateLimited
    from actorchat.server._limits import RateLimiter

    now = [0.0]
    limiter = RateLimiter(30, 10.0, clock=lambda: now[0])
    accepted: list[float] = []
    for step in range(400):  # one try every 50 ms for 20 s
        now[0] = step * 0.05
        try:
            limiter.take("u")
            accepted.append(now[0])
        except RateLimited as exc:
            assert 0 < exc.retry_after <= 10.0
    for t in accepted:
        assert sum(1 for a in accepted if t <= a < t + 10.0) <= 30
    assert len(accepted) == 60  # 30 at once, 30 more once the first ones left the window
    limiter.take("someone else")  # per user


def test_an_unreachable_model_is_reported_but_never_gates_readiness(tmp_path: Path) -> None:
    # A remote model that is down is down for every instance: a balancer
    # must not take them all out for it.
    dead = ModelConfig(
        "remote",
        provider="openai",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="x",
    )
    with running_server(tmp_path, models={"remote": dead}) as srv:
        r = requests.get(f"{srv.url}/readyz", timeout=WAIT)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready" and body["draining"] is False
        assert body["checks"] == {"store": True, "schema": 2}  # the SQLite schema's version
        assert body["models"] == {"mock": True, "remote": False}


def test_fault_injection_over_the_operations_api(tmp_path: Path) -> None:
    with running_server(tmp_path, mock_tokens=6) as srv:
        api = Api(srv)
        assert api.get("/api/v1/admin/faults").json() == {
            "mock_crash_rate": 0.0,
            "mock_failure_rate": 0.0,
        }
        for bad in ({"mock_crash_rate": 2}, {"mock_crash_rate": "half"}, {"speed": 1}):
            r = api.put("/api/v1/admin/faults", json=bad)
            assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_MESSAGE", bad
        r = api.put("/api/v1/admin/faults", json={"mock_crash_rate": 1})
        assert r.status_code == 200 and r.json()["mock_crash_rate"] == 1.0
        assert api.get("/api/v1/admin/faults").json()["mock_crash_rate"] == 1.0
        # Every reply now crashes its conversation, and clients are told.
        c = Client(srv)
        cid = c.create()
        c.send("send_message", {"conversation_id": cid, "content": "crash please"})
        err = c.until("error")[-1]
        assert err["data"]["code"] == "INTERNAL_ERROR"
        assert api.get("/api/v1/admin/stats").json()["crashes_total"] >= 1
        # Turned off, replies are whole again.
        r = api.put("/api/v1/admin/faults", json={"mock_crash_rate": 0})
        assert r.status_code == 200 and r.json()["mock_crash_rate"] == 0.0
        r = api.post(f"/api/v1/conversations/{c.create()}/messages", json={"content": "hi"})
        assert r.status_code == 200 and r.json()["reply"]["finish_reason"] == "stop"


def test_an_unknown_paging_anchor_is_the_same_error_for_conversations_and_messages(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path) as srv:
        api, bob = Api(srv), Api(srv, "bob")
        ids = [api.post("/api/v1/conversations", json={}).json()["id"] for _ in range(3)]
        page = api.get(f"/api/v1/conversations?limit=1&before={ids[2]}").json()["conversations"]
        assert [c["id"] for c in page] == [ids[1]]
        # The oldest one ends the paging with an empty page.
        assert api.get(f"/api/v1/conversations?before={ids[0]}").json()["conversations"] == []
        # An anchor that names nothing (mistyped, deleted meanwhile, or another
        # user's) would read as "nothing older": a 400 that says so, as for messages.
        assert api.delete(f"/api/v1/conversations/{ids[1]}").status_code == 204
        bobs = bob.post("/api/v1/conversations", json={}).json()["id"]
        for anchor in ("zzz", ids[1], bobs):
            r = api.get(f"/api/v1/conversations?before={anchor}")
            assert r.status_code == 400, anchor
            err = r.json()["error"]
            assert err["code"] == "INVALID_MESSAGE"
            assert err["message"].startswith(f"before: no conversation {anchor!r}")
        r = api.get(f"/api/v1/conversations/{ids[0]}/messages?before=zzz")
        assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_MESSAGE"
        # Over the WebSocket too.
        c = Client(srv)
        rid = c.send("list_conversations", {"before": "zzz"})
        err = c.until("error")[-1]
        assert err["reply_to"] == rid and err["data"]["code"] == "INVALID_MESSAGE"


def test_a_truncated_chunked_body_is_one_warning_line(tmp_path: Path) -> None:
    records: list[logging.LogRecord] = []
    logged = GEvent()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                records.append(record)
                logged.set()

    handler = Catch()
    logger = logging.getLogger("actorchat")
    logger.addHandler(handler)
    try:
        with running_server(tmp_path) as srv:
            token = dev_token(srv, "alice")
            with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as s:
                # A client that vanishes mid-body: the close resets the connection.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(
                    b"POST /api/v1/conversations HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                    b"Authorization: Bearer " + token.encode() + b'\r\n\r\n5\r\n{"tit\r\n'
                )
            assert logged.wait(WAIT)
    finally:
        logger.removeHandler(handler)
    [record] = records
    assert record.levelno == logging.WARNING and record.exc_info is None
    message = record.getMessage()
    assert re.search("EOF before chunk end|reset", message) and "127.0.0.1" in message
    assert "socket" not in message and "\n" not in message


def test_a_failed_conversation_stays_readable_and_refuses_writes_with_409(tmp_path: Path) -> None:
    with running_server(tmp_path, mock_tokens=6, max_restarts=1) as srv:
        api = Api(srv)
        cid = api.post("/api/v1/conversations", json={"title": "doomed"}).json()["id"]
        c = Client(srv)
        c.send("join_conversation", {"conversation_id": cid})
        c.expect("conversation_joined")
        assert api.put("/api/v1/admin/faults", json={"mock_crash_rate": 1}).status_code == 200
        c.send("send_message", {"conversation_id": cid, "content": "crash me"})
        # Every answer crashes it; past one restart it is failed.
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            states = api.get("/api/v1/admin/conversations?state=failed").json()
            if {"id": cid, "state": "failed"} in states["conversations"]:
                break
        else:
            raise AssertionError("the conversation never failed")
        api.put("/api/v1/admin/faults", json={"mock_crash_rate": 0})
        r = api.get(f"/api/v1/conversations/{cid}")
        assert r.status_code == 200 and r.json()["title"] == "doomed"
        r = api.get(f"/api/v1/conversations/{cid}/messages")
        assert r.status_code == 200
        assert [m["content"] for m in r.json()["messages"]][:1] == ["crash me"]
        r = api.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hello?"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "CONVERSATION_FAILED"
        rid = c.send("send_message", {"conversation_id": cid, "content": "anyone?"})
        err = c.expect("error", lambda f: f.get("reply_to") == rid)
        assert err["data"]["code"] == "CONVERSATION_FAILED"


def test_kept_alive_http_requests_do_not_wait_for_delayed_acks(server: Server) -> None:
    # Nagle's algorithm held each response's small body back until the
    # client's delayed ACK (~40 ms a request on a kept-alive connection).
    # Accepted sockets inherit TCP_NODELAY from the listener (Linux).
    assert server._wsgi is not None
    listener = server._wsgi.socket
    assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_a_nul_character_is_a_clear_error_on_every_store(server: Server) -> None:
    # PostgreSQL's text cannot hold NUL: every store refuses it the same way,
    # and an id holding one names nothing (it never failed a conversation).
    api = Api(server)
    r = api.post("/api/v1/conversations", json={"title": "a\u0000b"})
    assert r.status_code == 400 and "NUL" in r.json()["error"]["message"]
    assert api.get("/api/v1/conversations/%00x/messages").status_code == 404
    assert api.get("/api/v1/conversations/%00x").status_code == 404
    r = api.get("/api/v1/conversations?before=%00")
    assert r.status_code == 400 and r.json()["error"]["code"] == "INVALID_MESSAGE"
    failed = api.get("/api/v1/admin/conversations?state=failed").json()["conversations"]
    assert not [c for c in failed if "\x00" in c["id"]]
    r = requests.post(
        f"{server.url}/api/v1/auth/token", json={"user_id": "al\u0000ice"}, timeout=WAIT
    )
    assert r.status_code == 400
