"""Resuming a named reply: ``join_conversation`` with ``after_index`` and ``message_id``.

The skip applies to the named reply only. If it ended while the client was
away, the join says how (its ``stream_complete``); a reply a crash
interrupted ends ``error`` and ``superseded``, and the new answer then
comes from index 0, so a client that rejoins with the index it reached
loses none of it.
"""

from __future__ import annotations

from pathlib import Path

import requests

from actorchat.server import Server
from tests.server_support import WAIT, Client, Frame, dev_token, reply_of, running_server

SLOW = {"mock_tokens": 200, "mock_delay_ms": 10.0}


def _start_reply(writer: Client, cid: str, upto: int) -> str:
    """Send a message; read the reply's stream up to chunk ``upto``; its id."""
    writer.send("send_message", {"conversation_id": cid, "content": "stream slowly"})
    reply_id: str = writer.expect("stream_start")["data"]["message_id"]
    writer.expect("stream_content", lambda f: f["data"]["index"] >= upto)
    return reply_id


def _rejoin(server: Server, cid: str, message_id: str, after_index: int) -> Client:
    c = Client(server)
    c.send(
        "join_conversation",
        {"conversation_id": cid, "after_index": after_index, "message_id": message_id},
    )
    c.expect("conversation_joined")
    return c


def _indices(frames: list[Frame], message_id: str) -> list[int]:
    out = []
    for f in frames:
        if f["type"] == "stream_content" and f["data"]["message_id"] == message_id:
            first = f["data"].get("first_index", f["data"]["index"])
            out += range(first, f["data"]["index"] + 1)
    return out


def test_the_named_reply_in_progress_skips_what_the_client_has(tmp_path: Path) -> None:
    with running_server(tmp_path, **SLOW) as srv:
        writer = Client(srv)
        cid = writer.create()
        reply_id = _start_reply(writer, cid, 5)
        resumed = _rejoin(srv, cid, reply_id, 3)
        rest = resumed.until("stream_complete")
        assert rest[0]["type"] == "stream_start" and rest[0]["data"]["message_id"] == reply_id
        got = _indices(rest, reply_id)
        assert got[0] == 4 and got == list(range(4, got[-1] + 1))
        assert rest[-1]["data"]["finish_reason"] == "stop"


def test_a_named_reply_that_ended_while_away_is_told_how(tmp_path: Path) -> None:
    with running_server(tmp_path, **SLOW) as srv:
        writer = Client(srv)
        cid = writer.create()
        reply_id = _start_reply(writer, cid, 3)
        done = writer.until("stream_complete")[-1]
        resumed = Client(srv)
        resumed.send(
            "join_conversation",
            {"conversation_id": cid, "after_index": 3, "message_id": reply_id},
        )
        joined = resumed.expect("conversation_joined")
        assert joined["data"]["messages"][-1]["id"] == reply_id
        end = resumed.recv()
        assert end["type"] == "stream_complete"
        assert end["data"]["message_id"] == reply_id
        assert end["data"]["finish_reason"] == "stop"
        assert end["data"]["usage"] == done["data"]["usage"]
        assert "superseded" not in end["data"]
        # Nothing else follows: no reply is in progress.
        resumed.send("ping")
        assert resumed.recv()["type"] == "pong"


def test_a_named_reply_a_crash_interrupted_ends_superseded_then_the_new_answer_from_0(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, **SLOW) as srv:
        writer, watcher = Client(srv), Client(srv)
        cid = writer.create()
        watcher.send("join_conversation", {"conversation_id": cid})
        watcher.expect("conversation_joined")
        reply_id = _start_reply(writer, cid, 5)
        reached = max(_indices(writer.seen, reply_id))
        writer.close()  # the client goes away mid-reply ...
        token = dev_token(srv, "alice")
        r = requests.post(  # ... and the conversation crashes meanwhile
            f"{srv.url}/api/v1/admin/kill",
            json={"conversation_ids": [cid]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=WAIT,
        )
        assert r.json()["killed"] == [cid]
        interrupted = watcher.expect(
            "stream_complete", lambda f: f["data"]["message_id"] == reply_id
        )
        assert interrupted["data"]["finish_reason"] == "error"

        resumed = _rejoin(srv, cid, reply_id, reached)
        end = resumed.recv()
        assert end["type"] == "stream_complete" and end["data"]["message_id"] == reply_id
        assert end["data"]["finish_reason"] == "error" and end["data"]["superseded"] is True
        # The new answer to the same message, whole, from index 0.
        start = resumed.expect("stream_start")
        new_id = start["data"]["message_id"]
        assert new_id != reply_id
        rest = resumed.until("stream_complete", lambda f: f["data"]["message_id"] == new_id)
        got = _indices([start, *rest], new_id)
        assert got == list(range(len(got))) and len(got) > reached
        assert rest[-1]["data"]["finish_reason"] == "stop"
        watcher.until("stream_complete", lambda f: f["data"]["message_id"] == new_id)
        assert reply_of(resumed.seen, new_id) == reply_of(watcher.seen, new_id)


def test_a_named_reply_the_server_never_stored_ends_superseded(tmp_path: Path) -> None:
    with running_server(tmp_path, **SLOW) as srv:
        writer = Client(srv)
        cid = writer.create()
        resumed = _rejoin(srv, cid, "never-stored", 7)
        end = resumed.recv()
        assert end["type"] == "stream_complete"
        assert end["data"]["message_id"] == "never-stored"
        assert end["data"]["finish_reason"] == "error" and end["data"]["superseded"] is True


def test_without_message_id_after_index_applies_to_the_reply_in_progress(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path, **SLOW) as srv:
        writer = Client(srv)
        cid = writer.create()
        reply_id = _start_reply(writer, cid, 5)
        old = Client(srv)
        old.send("join_conversation", {"conversation_id": cid, "after_index": 3})
        old.expect("conversation_joined")
        rest = old.until("stream_complete")
        assert _indices(rest, reply_id)[0] == 4
        assert not [f for f in rest if f["type"] == "stream_complete"][:-1]


def test_a_client_that_stayed_sees_the_interrupted_reply_superseded_too(tmp_path: Path) -> None:
    with running_server(tmp_path, **SLOW) as srv:
        writer = Client(srv)
        cid = writer.create()
        reply_id = _start_reply(writer, cid, 3)
        token = dev_token(srv, "alice")
        requests.post(
            f"{srv.url}/api/v1/admin/kill",
            json={"conversation_ids": [cid]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=WAIT,
        )
        end = writer.expect("stream_complete", lambda f: f["data"]["message_id"] == reply_id)
        assert end["data"]["finish_reason"] == "error" and end["data"]["superseded"] is True
        # A normal end says nothing of the kind.
        new = writer.expect("stream_complete")
        assert new["data"]["finish_reason"] == "stop" and "superseded" not in new["data"]
