"""End to end over a real socket: auth, every client frame type, every error code.

One server per module and store (a real ``actorchat.server.Server`` on a free
loopback port, on SQLite, then on PostgreSQL); tests that need other settings
start their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from actorchat import ModelConfig
from actorchat.server import Server
from actorchat.testing import Behavior, FakeOpenAIServer
from tests.pg_support import STORES, store_settings
from tests.server_support import WAIT, Client, dev_token, reply_of, running_server

SECRET = "test-secret-0123456789-0123456789"


@pytest.fixture(scope="module", params=STORES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    settings = store_settings(request, request.param)
    with running_server(tmp_path_factory.mktemp("proto"), **settings) as srv:
        yield srv


@pytest.fixture
def alice(server: Server) -> Iterator[Client]:
    c = Client(server, "alice")
    yield c
    c.close()


def token(user: str = "alice", ttl: float = 3600, secret: str = SECRET, **claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "exp": now + ttl, **claims}, secret, algorithm="HS256")


def assert_alive(c: Client) -> None:
    rid = c.send("ping")
    assert c.expect("pong")["reply_to"] == rid


def error(c: Client, rid: str) -> dict[str, Any]:
    frame = c.expect("error", lambda f: f.get("reply_to") == rid)
    data: dict[str, Any] = frame["data"]
    return data


# -- auth ---------------------------------------------------------------------------


def test_auth_success_carries_user_id_at_both_levels(server: Server) -> None:
    c = Client(server, None)
    c.send_raw(json.dumps({"type": "auth", "id": 7, "data": {"token": dev_token(server, "u1")}}))
    frame = c.expect("auth_success")
    assert frame == {
        "type": "auth_success",
        "data": {"user_id": "u1"},
        "user_id": "u1",
        "reply_to": 7,
    }
    c.close()


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ("not json at all", "AUTH_REQUIRED", "Authentication required"),
        (json.dumps({"type": "ping"}), "AUTH_REQUIRED", "Authentication required"),
        (json.dumps({"type": "auth"}), "AUTH_REQUIRED", "Authentication required"),
        (json.dumps({"type": "auth", "token": "garbage"}), "AUTH_FAILED", "Invalid token"),
        (json.dumps({"type": "auth", "token": token()}), "AUTH_FAILED", "Invalid token"),
        (
            r'{"type": "auth", "id": "\udfff", "token": "x"}',
            "AUTH_REQUIRED",
            "Authentication required",
        ),
    ],
    ids=["invalid-json", "not-auth", "no-token", "garbage-token", "wrong-signature", "surrogate"],
)
def test_bad_first_frame_closes_4001(server: Server, first: str, code: str, reason: str) -> None:
    c = Client(server, None)
    c.send_raw(first)
    assert c.expect("error")["data"]["code"] == code
    closed = c.expect_close()
    assert (closed.code, closed.reason) == (4001, reason)


def test_expired_token_is_refused(tmp_path: Path) -> None:
    with running_server(tmp_path, jwt_secret=SECRET, jwt_leeway=0.0) as srv:
        c = Client(srv, None)
        c.send_raw(json.dumps({"type": "auth", "token": token(ttl=-10)}))
        data = c.expect("error")["data"]
        assert data["code"] == "AUTH_FAILED"
        assert "expired" in data["message"]
        assert c.expect_close().code == 4001
        # and dev auth is off once a secret is configured
        r = requests.post(f"{srv.url}/api/v1/auth/token", json={"user_id": "x"}, timeout=WAIT)
        assert r.status_code == 404
        # A token without its user says which claim is missing.
        c = Client(srv, None)
        no_sub = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
        c.send_raw(json.dumps({"type": "auth", "token": no_sub}))
        data = c.expect("error")["data"]
        assert data["code"] == "AUTH_FAILED"
        assert data["message"] == "the token has no 'sub' claim (sub and exp are required)"
        assert c.expect_close().code == 4001


def test_no_auth_within_timeout_closes_4001(tmp_path: Path) -> None:
    with running_server(tmp_path, auth_timeout=0.2) as srv:
        c = Client(srv, None)
        assert c.expect("error")["data"]["code"] == "AUTH_REQUIRED"
        assert c.expect_close().code == 4001


def test_token_expiry_closes_and_reauth_extends(tmp_path: Path) -> None:
    with running_server(tmp_path, jwt_secret=SECRET, jwt_leeway=0.0) as srv:
        # Without a fresh token: AUTH_FAILED, then 4001 "Token expired".
        lapsing = Client(srv, None)
        lapsing.auth(token(ttl=1))
        data = lapsing.expect("error")["data"]
        assert data["code"] == "AUTH_FAILED"
        closed = lapsing.expect_close()
        assert (closed.code, closed.reason) == (4001, "Token expired")

        # With one sent in band before expiry, the session goes on.
        renewed = Client(srv, None)
        first = token(ttl=1)
        renewed.auth(first)
        rid = renewed.send("auth", token=token(ttl=3600))
        assert renewed.expect("auth_success")["reply_to"] == rid
        old_exp = jwt.decode(first, options={"verify_signature": False})["exp"]
        while time.time() < old_exp + 0.5:  # let the first token lapse
            assert_alive(renewed)
        assert_alive(renewed)

        # A token for someone else is not a renewal.
        rid = renewed.send("auth", token=token("mallory"))
        assert error(renewed, rid)["code"] == "AUTH_FAILED"
        assert renewed.expect_close().code == 4001


# -- every client frame type ----------------------------------------------------------


def test_ping(alice: Client) -> None:
    assert_alive(alice)


def test_create_list_rename_delete(server: Server, alice: Client) -> None:
    other_tab = Client(server, "alice")
    cid = alice.create(title="first", system_prompt="be brief")
    created = alice.seen[-1]
    assert created["data"]["conversation"]["title"] == "first"
    assert set(created["data"]["conversation"]) == {
        "id",
        "title",
        "model",
        "created_at",
        "updated_at",
        "message_count",
    }
    # rule 9: the owner's other connection hears of it
    assert other_tab.expect("conversation_created")["data"]["conversation"]["id"] == cid

    rid = alice.send("list_conversations", {"limit": 10})
    listed = alice.expect("conversations", lambda f: f.get("reply_to") == rid)
    assert cid in [c["id"] for c in listed["data"]["conversations"]]
    rid = alice.send("list_conversations", {"limit": 0})  # as over HTTP: not the default page
    assert error(alice, rid)["code"] == "INVALID_MESSAGE"

    rid = alice.send("rename_conversation", {"conversation_id": cid, "title": "renamed"})
    updated = alice.expect("conversation_updated")
    assert updated["reply_to"] == rid
    assert updated["data"]["conversation"]["title"] == "renamed"
    assert not [
        f for f in alice.seen if f["type"] == "conversation_updated" and "reply_to" not in f
    ]
    assert other_tab.expect("conversation_updated")["data"]["conversation"]["title"] == "renamed"

    rid = alice.send("delete_conversation", {"conversation_id": cid})
    deleted = alice.expect("conversation_deleted")
    assert deleted == {
        "type": "conversation_deleted",
        "data": {"conversation_id": cid},
        "reply_to": rid,
    }
    assert other_tab.expect("conversation_deleted")["data"]["conversation_id"] == cid
    rid = alice.send("join_conversation", {"conversation_id": cid})
    assert error(alice, rid)["code"] == "NOT_FOUND"
    other_tab.close()


def test_send_message_stream_and_history(alice: Client) -> None:
    cid = alice.create()
    # A classic client's frame, unchanged: no id, message_type "user".
    alice.send_raw(
        json.dumps(
            {
                "type": "send_message",
                "data": {"conversation_id": cid, "content": "Hello, AI!", "message_type": "user"},
            }
        )
    )
    frames = alice.until("stream_complete")
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "message_received"
    assert kinds[1] == "stream_start"
    assert kinds[-1] == "stream_complete"
    message = frames[0]["data"]["message"]
    assert message["content"] == "Hello, AI!"
    assert message["message_type"] == "user"
    assert message["sender_id"] == "alice"
    assert message["created_at"].endswith("Z")
    start = frames[1]["data"]
    assert start["conversation_id"] == cid and start["model"] == "mock"
    complete = frames[-1]["data"]
    assert complete["finish_reason"] == "stop"
    assert set(complete["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    text = reply_of(frames, start["message_id"])
    assert all(f["data"]["is_complete"] is False for f in frames if f["type"] == "stream_content")

    rid = alice.send("join_conversation", {"conversation_id": cid, "history_limit": 10})
    joined = alice.expect("conversation_joined", lambda f: f.get("reply_to") == rid)
    msgs = joined["data"]["messages"]
    assert [m["message_type"] for m in msgs] == ["user", "assistant"]
    assert msgs[1]["content"] == text
    assert msgs[1]["id"] == start["message_id"]
    assert msgs[1]["sender_id"] == "mock"


def test_stream_response_regenerates(alice: Client) -> None:
    cid = alice.create()
    alice.send("send_message", {"conversation_id": cid, "content": "Tell me about actors"})
    first = alice.until("stream_complete")
    user_id = first[0]["data"]["message"]["id"]
    old_reply = first[1]["data"]["message_id"]
    alice.send(
        "stream_response",
        {"conversation_id": cid, "message_id": user_id, "assistant_id": "mock"},
    )
    again = alice.until("stream_complete")
    new_reply = again[0]["data"]["message_id"]
    assert again[0]["type"] == "stream_start" and new_reply != old_reply
    rid = alice.send("join_conversation", {"conversation_id": cid})
    msgs = alice.expect("conversation_joined", lambda f: f.get("reply_to") == rid)["data"][
        "messages"
    ]
    assert [m["id"] for m in msgs] == [user_id, new_reply]
    # A model that is not configured is a bad argument, as in create_conversation.
    rid = alice.send("stream_response", {"conversation_id": cid, "assistant_id": "nomodel"})
    assert error(alice, rid)["code"] == "INVALID_MESSAGE"
    # The replaced reply is no longer in history: the error says what to name.
    rid = alice.send("stream_response", {"conversation_id": cid, "message_id": old_reply})
    data = error(alice, rid)
    assert data["code"] == "NOT_FOUND" and "name its user message" in data["message"]


def test_leave_stops_events(alice: Client) -> None:
    cid = alice.create()
    rid = alice.send("leave_conversation", {"conversation_id": cid})
    assert alice.expect("conversation_left")["reply_to"] == rid
    rid = alice.send("leave_conversation", {"conversation_id": "nope"})
    assert error(alice, rid)["code"] == "NOT_FOUND"
    # The owner's connection, no longer joined, gets rule 9's message_added instead.
    alice.send("send_message", {"conversation_id": cid, "content": "hi"})
    received = alice.expect("message_received")
    assert received["data"]["message"]["content"] == "hi"


def test_typing_is_relayed_to_the_others_only(server: Server, alice: Client) -> None:
    cid = alice.create()
    tab = Client(server, "alice")
    tab.send("join_conversation", {"conversation_id": cid})
    tab.expect("conversation_joined")
    alice.send("typing", {"conversation_id": cid, "is_typing": True})
    alice.send_raw(json.dumps({"type": "typing_stop", "data": {"conversation_id": cid}}))
    shown = tab.expect("typing_indicator")
    assert shown["data"] == {"conversation_id": cid, "user_id": "alice", "is_typing": True}
    assert tab.expect("typing_indicator")["data"]["is_typing"] is False
    tab.send("typing_start", {"conversation_id": cid})
    assert alice.expect("typing_indicator")["data"]["is_typing"] is True
    assert_alive(alice)
    assert not [
        f for f in alice.seen if f["type"] == "typing_indicator" and f["data"]["is_typing"] is False
    ]
    tab.close()


@pytest.mark.parametrize("store", STORES)
def test_cancel_stream(request: pytest.FixtureRequest, tmp_path: Path, store: str) -> None:
    settings = store_settings(request, store)
    with running_server(tmp_path, mock_tokens=500, mock_delay_ms=10.0, **settings) as srv:
        c = Client(srv)
        cid = c.create()
        c.send("send_message", {"conversation_id": cid, "content": "a long one"})
        start = c.expect("stream_start")["data"]
        c.expect("stream_content")
        c.send("cancel_stream", {"conversation_id": cid, "message_id": start["message_id"]})
        frames = c.until("stream_complete")
        complete = frames[-1]["data"]
        assert complete["finish_reason"] == "cancelled"
        partial = reply_of(c.seen, start["message_id"])
        rid = c.send("join_conversation", {"conversation_id": cid})
        msgs = c.expect("conversation_joined", lambda f: f.get("reply_to") == rid)["data"][
            "messages"
        ]
        assert msgs[-1]["content"] == partial and msgs[-1]["finish_reason"] == "cancelled"
        # nothing left to cancel: NOT_FOUND
        rid = c.send("cancel_stream", {"conversation_id": cid, "message_id": start["message_id"]})
        assert error(c, rid)["code"] == "NOT_FOUND"


# -- every error code ----------------------------------------------------------------


def test_invalid_json_unknown_type_invalid_message(alice: Client) -> None:
    alice.send_raw("{nope")
    assert alice.expect("error")["data"]["code"] == "INVALID_JSON"
    # Half a UTF-16 pair, escaped: valid JSON syntax, but no text UTF-8 can
    # carry. Echoed back as reply_to or stored, it broke the connection.
    for frame in (
        r'{"type": "ping", "id": "\ud800"}',
        r'{"type": "create_conversation", "data": {"title": "bad \udc00 title"}}',
    ):
        alice.send_raw(frame)
        err = alice.expect("error")
        assert err["data"]["code"] == "INVALID_JSON" and "reply_to" not in err
        assert "lone UTF-16 surrogate" in err["data"]["message"]
    assert_alive(alice)
    rid = alice.send("create_conversation", {"title": "a pair is fine: \U0001f600"})
    assert alice.expect("conversation_created")["reply_to"] == rid
    alice.send_raw("[1, 2, 3]")
    assert alice.expect("error")["data"]["code"] == "INVALID_JSON"
    rid = alice.send("teleport", {})
    assert error(alice, rid)["code"] == "UNKNOWN_TYPE"
    rid = alice.send("send_message", {"content": "no conversation"})
    data = error(alice, rid)
    assert data["code"] == "INVALID_MESSAGE" and "conversation_id" in data["message"]
    rid = alice.send("typing", {"conversation_id": "x", "is_typing": "yes"})
    data = error(alice, rid)
    assert data["code"] == "INVALID_MESSAGE" and "is_typing" in data["message"]
    rid = alice.send("send_message", "not an object")
    assert error(alice, rid)["code"] == "INVALID_MESSAGE"
    assert_alive(alice)


def test_not_found_and_numeric_ids(alice: Client) -> None:
    rid = alice.send("join_conversation", {"conversation_id": 123})
    data = error(alice, rid)
    assert data["code"] == "NOT_FOUND"
    assert data["conversation_id"] == "123"  # matched as its decimal string (rule 16)


def test_forbidden(server: Server, alice: Client) -> None:
    cid = alice.create()
    bob = Client(server, "bob")
    for kind, data in [
        ("join_conversation", {"conversation_id": cid}),
        ("send_message", {"conversation_id": cid, "content": "hi"}),
        ("rename_conversation", {"conversation_id": cid, "title": "mine"}),
        ("typing", {"conversation_id": cid, "is_typing": True}),
        ("leave_conversation", {"conversation_id": cid}),
    ]:
        rid = bob.send(kind, data)
        assert error(bob, rid)["code"] == "FORBIDDEN"
    bob.close()


def test_message_too_long_keeps_the_connection(alice: Client) -> None:
    cid = alice.create()
    rid = alice.send("send_message", {"conversation_id": cid, "content": "x" * 1_000_000})
    data = error(alice, rid)
    assert data["code"] == "MESSAGE_TOO_LONG"
    assert data["conversation_id"] == cid
    assert_alive(alice)


def test_frame_over_the_limit_closes_1009(server: Server) -> None:
    c = Client(server)
    c.send_raw(json.dumps({"type": "ping", "pad": "y" * (2 * 1024 * 1024)}))
    assert c.expect_close().code == 1009


def test_a_thousand_invalid_frames_then_normal_service(alice: Client) -> None:
    bad = ["", "null", "{", '{"type": 5}', '{"type": "nope"}', '{"type":"join_conversation"}']
    for i in range(1000):
        alice.send_raw(bad[i % len(bad)])
    codes = [alice.expect("error")["data"]["code"] for _ in range(1000)]
    assert set(codes) == {"INVALID_JSON", "INVALID_MESSAGE", "UNKNOWN_TYPE"}
    cid = alice.create()
    alice.send("send_message", {"conversation_id": cid, "content": "still there?"})
    assert alice.until("stream_complete")[-1]["data"]["finish_reason"] == "stop"


def test_rate_limited_with_retry_after(tmp_path: Path) -> None:
    with running_server(tmp_path, rate_limit_messages=3, rate_limit_window=60.0) as srv:
        c = Client(srv)
        cid = c.create()
        for _ in range(3):
            c.send("send_message", {"conversation_id": cid, "content": "hi"})
            c.expect("message_received")
        rid = c.send("send_message", {"conversation_id": cid, "content": "one too many"})
        data = error(c, rid)
        assert data["code"] == "RATE_LIMITED"
        assert 0 < data["retry_after"] <= 60  # when the oldest of the 3 leaves the window
        assert_alive(c)


def test_overloaded_connections_queue_and_quota(tmp_path: Path) -> None:
    with running_server(
        tmp_path,
        max_connections=1,
        max_queued_messages=1,
        max_conversations_per_user=1,
        mock_tokens=200,
        mock_delay_ms=20.0,
    ) as srv:
        c = Client(srv)
        extra = Client(srv, None)
        assert extra.expect("error")["data"]["code"] == "OVERLOADED"
        assert extra.expect_close().code == 1013

        cid = c.create()
        rid = c.send("create_conversation", {})
        assert error(c, rid)["code"] == "OVERLOADED"  # one conversation per user here

        rids = [
            c.send("send_message", {"conversation_id": cid, "content": f"queue me {i}"})
            for i in range(4)
        ]
        answers: dict[str, str] = {}
        while len(answers) < len(rids):
            frame = c.recv()
            if frame.get("reply_to") in rids:
                kind = frame["type"]
                answers[frame["reply_to"]] = kind if kind != "error" else frame["data"]["code"]
        # one reply streams, one waits (max_queued_messages=1), the rest are refused
        assert [answers[r] for r in rids] == [
            "message_received",
            "message_received",
            "OVERLOADED",
            "OVERLOADED",
        ]


def test_provider_error(tmp_path: Path) -> None:
    with running_server(tmp_path, mock_failure_rate=1.0) as srv:
        c = Client(srv)
        cid = c.create()
        c.send("send_message", {"conversation_id": cid, "content": "fail please"})
        frames = c.until("stream_complete")
        errors = [f for f in frames if f["type"] == "error"]
        assert errors and errors[0]["data"]["code"] == "PROVIDER_ERROR"
        assert errors[0]["data"]["conversation_id"] == cid
        assert frames[-1]["data"]["finish_reason"] == "error"


def test_timeout(tmp_path: Path) -> None:
    with FakeOpenAIServer(Behavior(tokens=3, first_token_delay=30.0)) as fake:
        model = ModelConfig(
            "slow",
            provider="openai",
            base_url=fake.base_url,
            model="fake",
            first_token_timeout=0.3,
            max_attempts=1,
        )
        with running_server(tmp_path, models={"slow": model}) as srv:
            c = Client(srv)
            cid = c.create(model="slow")
            c.send("send_message", {"conversation_id": cid, "content": "hello?"})
            frames = c.until("stream_complete")
            errors = [f["data"]["code"] for f in frames if f["type"] == "error"]
            assert errors == ["TIMEOUT"]
            assert frames[-1]["data"]["finish_reason"] == "error"


def test_internal_error_when_a_conversation_crashes(tmp_path: Path) -> None:
    with running_server(tmp_path, mock_tokens=60, mock_delay_ms=10.0) as srv:
        c = Client(srv)
        cid = c.create()
        c.send("send_message", {"conversation_id": cid, "content": "crash mid-way"})
        first = c.expect("stream_start")["data"]["message_id"]
        c.expect("stream_content")
        assert srv.chat is not None and srv.chat.kill(cid)
        frames = c.until("stream_complete", lambda f: f["data"]["message_id"] == first)
        errors = [f["data"] for f in frames if f["type"] == "error"]
        assert errors[0]["code"] == "INTERNAL_ERROR"
        assert "Traceback" not in errors[0]["message"]
        assert frames[-1]["data"]["finish_reason"] == "error"
        # The restarted conversation answers the same user message again.
        again = c.expect("stream_start")["data"]["message_id"]
        assert again != first
        assert c.expect("stream_complete")["data"]["finish_reason"] == "stop"


def test_a_peer_that_never_answers_pings_is_closed(tmp_path: Path) -> None:
    with running_server(tmp_path, ping_interval=0.2) as srv:
        c = Client(srv)
        pings = 0
        while True:
            # recv_frame() is websocket-client's raw read: it answers nothing.
            frame = c.ws.recv_frame()
            if frame.opcode == 0x9:
                pings += 1
            elif frame.opcode == 0x8:
                code = int.from_bytes(frame.data[:2], "big")
                assert (code, frame.data[2:].decode()) == (1008, "Ping timeout")
                break
        assert pings >= 1
