"""End to end: streams across tabs, resumable joins, disconnects, slow clients, big frames."""

from __future__ import annotations

import socket
from pathlib import Path

import requests

from actorchat import ModelConfig, StreamComplete
from tests.server_support import WAIT, Client, Closed, dev_token, reply_of, running_server

#: The embedded mock, allowed replies long enough to fill any socket buffer.
LONG_MOCK = {"mock": ModelConfig("mock", provider="mock", model="mock", max_tokens=50_000)}


def history(c: Client, cid: str) -> list[dict[str, object]]:
    r = requests.get(
        f"{c.server.url}/api/v1/conversations/{cid}/messages",
        headers={"Authorization": f"Bearer {dev_token(c.server, c.user or 'alice')}"},
        timeout=WAIT,
    )
    r.raise_for_status()
    messages: list[dict[str, object]] = r.json()["messages"]
    return messages


def test_multi_tab_delivery_and_sidebar_sync(tmp_path: Path) -> None:
    with running_server(tmp_path) as srv:
        tab1, tab2, sidebar = Client(srv), Client(srv), Client(srv)
        cid = tab1.create(title="shared")
        assert sidebar.expect("conversation_created")["data"]["conversation"]["id"] == cid
        tab2.send("join_conversation", {"conversation_id": cid})
        tab2.expect("conversation_joined")

        rid = tab1.send("send_message", {"conversation_id": cid, "content": "hello tabs"})
        mine = tab1.until("stream_complete")
        theirs = tab2.until("stream_complete")
        assert mine[0]["type"] == theirs[0]["type"] == "message_received"
        assert mine[0]["reply_to"] == rid and "reply_to" not in theirs[0]
        reply_id = mine[1]["data"]["message_id"]
        assert reply_of(mine, reply_id) == reply_of(theirs, reply_id)
        # exactly once each, in the same order
        assert [f["type"] for f in mine] == [f["type"] for f in theirs]

        # The unjoined tab gets rule 9's message_added for both messages.
        added = [sidebar.expect("message_added")["data"]["message"] for _ in range(2)]
        assert [m["message_type"] for m in added] == ["user", "assistant"]
        assert added[1]["id"] == reply_id


def test_resumable_join_replays_the_reply_in_progress(tmp_path: Path) -> None:
    # 200 tokens 10 ms apart: the joins below happen well within the 2 s reply.
    with running_server(tmp_path, mock_tokens=200, mock_delay_ms=10.0) as srv:
        writer = Client(srv)
        cid = writer.create()
        writer.send("send_message", {"conversation_id": cid, "content": "stream slowly"})
        user_id = writer.expect("message_received")["data"]["message"]["id"]
        reply_id = writer.expect("stream_start")["data"]["message_id"]
        for _ in range(5):
            writer.expect("stream_content")

        late, resumed = Client(srv), Client(srv)
        rid = late.send("join_conversation", {"conversation_id": cid})
        resumed.send("join_conversation", {"conversation_id": cid, "after_index": 3})
        joined = late.expect("conversation_joined")
        assert joined["reply_to"] == rid
        # completed messages only: the reply in progress comes as a replay
        assert [m["id"] for m in joined["data"]["messages"]] == [user_id]
        replay = late.until("stream_complete")
        assert replay[0]["type"] == "stream_start"
        assert replay[0]["data"]["message_id"] == reply_id
        assert replay[1]["data"]["index"] == 0

        resumed.expect("conversation_joined")
        rest = resumed.until("stream_complete")
        assert rest[0]["type"] == "stream_start"
        assert rest[1]["data"]["index"] == 4  # chunks up to after_index skipped

        writer.until("stream_complete")
        full = reply_of(writer.seen, reply_id)
        assert reply_of(replay, reply_id) == full
        assert history(writer, cid)[-1]["content"] == full


def test_disconnect_mid_stream_then_history_is_complete(tmp_path: Path) -> None:
    with running_server(tmp_path, mock_tokens=60, mock_delay_ms=10.0) as srv:
        leaver, watcher = Client(srv), Client(srv)
        cid = leaver.create()
        watcher.send("join_conversation", {"conversation_id": cid})
        watcher.expect("conversation_joined")
        leaver.send("send_message", {"conversation_id": cid, "content": "finish without me"})
        leaver.expect("stream_content")
        leaver.close()

        frames = watcher.until("stream_complete")
        reply_id = frames[-1]["data"]["message_id"]
        assert frames[-1]["data"]["finish_reason"] == "stop"
        last = history(watcher, cid)[-1]
        assert last["id"] == reply_id
        assert last["content"] == reply_of(frames, reply_id)
        assert last["finish_reason"] == "stop"


def test_messages_sent_while_streaming_are_queued_in_order(tmp_path: Path) -> None:
    with running_server(tmp_path, mock_tokens=40, mock_delay_ms=10.0) as srv:
        c = Client(srv)
        cid = c.create()
        c.send("send_message", {"conversation_id": cid, "content": "first"})
        c.expect("stream_content")
        c.send("send_message", {"conversation_id": cid, "content": "second"})
        frames = c.until("stream_complete")
        frames += c.until("stream_complete")
        kinds = [(f["type"], f["data"].get("message", {}).get("content")) for f in frames]
        second_received = kinds.index(("message_received", "second"))
        first_complete = [k for k, _ in kinds].index("stream_complete")
        assert second_received < first_complete  # durable and acknowledged at once
        contents = [(m["message_type"], m["content"]) for m in history(c, cid)]
        assert [t for t, _ in contents] == ["user", "assistant", "user", "assistant"]
        assert contents[0][1] == "first" and contents[2][1] == "second"


def test_slow_client_gets_merged_deltas_without_gaps(tmp_path: Path) -> None:
    # A small kernel send buffer, so that frames pile up in the outbox, not the kernel.
    with running_server(
        tmp_path,
        mock_tokens=20_000,
        outbound_queue=64,
        socket_send_buffer=8192,
        models=LONG_MOCK,
    ) as srv:
        assert srv.chat is not None
        small = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
        c = Client(srv, sockopt=small)
        cid = c.create()
        done = srv.chat.subscribe(cid, replay=False)
        c.send("send_message", {"conversation_id": cid, "content": "flood me"})
        # The reply is generated at full speed while this client reads nothing.
        while not isinstance(done.get(WAIT), StreamComplete):
            pass
        frames = c.until("stream_complete")
        reply_id = frames[-1]["data"]["message_id"]
        merged = [f for f in frames if "first_index" in f.get("data", {})]
        assert merged, "a backed-up client should get merged deltas"
        text = reply_of(frames, reply_id)  # asserts there is no gap
        assert history(c, cid)[-1]["content"] == text
        assert frames[-2]["data"]["index"] == 19_999


def test_client_that_stays_behind_is_closed_1008(tmp_path: Path) -> None:
    # A small kernel send buffer, so that frames pile up in the outbox, not the kernel.
    with running_server(
        tmp_path,
        mock_tokens=20_000,
        outbound_queue=64,
        socket_send_buffer=8192,
        models=LONG_MOCK,
    ) as srv:
        assert srv.chat is not None
        small = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),)
        stuck = Client(srv, sockopt=small)
        typist = Client(srv)
        cid = stuck.create()
        done = srv.chat.subscribe(cid, replay=False)
        stuck.send("send_message", {"conversation_id": cid, "content": "flood me"})
        while not isinstance(done.get(WAIT), StreamComplete):
            pass
        # Frames that cannot be merged pile up behind the blocked socket.
        for i in range(200):
            typist.send("typing", {"conversation_id": cid, "is_typing": i % 2 == 0})
        rid = typist.send("ping")
        typist.expect("pong", lambda f: f["reply_to"] == rid)
        closed = stuck.expect_close()
        assert (closed.code, closed.reason) == (1008, "Too slow")
        # The typist, and the server, are unaffected.
        typist.send("send_message", {"conversation_id": cid, "content": "still fine"})
        assert typist.until("stream_complete")[-1]["data"]["finish_reason"] == "stop"


def test_multi_megabyte_frames_arrive_intact(tmp_path: Path) -> None:
    # 6 MB frames, bigger than the socket buffers (a single send() would go
    # out partly), while the server's pings interleave (the test goes on
    # until it has seen some): every write to the socket, the library's and
    # ours, must go out whole and in one piece. The ping interval leaves
    # room for the mock, which reads the whole message on the hub.
    with running_server(
        tmp_path,
        max_content_chars=6_000_000,
        max_frame_bytes=16 * 1024 * 1024,
        ping_interval=1.5,
    ) as srv:
        # websocket-client validates UTF-8 in pure Python (seconds per
        # megabyte); equality with what was sent checks the text instead.
        small = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 65536),)
        c = Client(srv, skip_utf8_validation=True, sockopt=small)
        cid = c.create()
        body = ("élan ☃ 0123456789 " * 300_000)[:5_000_000]
        assert len(body.encode()) > 5_500_000
        c.send("send_message", {"conversation_id": cid, "content": body})
        assert c.expect("message_received")["data"]["message"]["content"] == body
        c.until("stream_complete")
        joins = 0
        while c.pings < 1 or joins < 3:
            c.send("join_conversation", {"conversation_id": cid, "history_limit": 2})
            joined = c.expect("conversation_joined")["data"]["messages"]
            assert joined[0]["content"] == body
            joins += 1
            assert joins < 500, "no pings seen"
        rid = c.send("ping")
        assert c.expect("pong")["reply_to"] == rid


def test_closed_is_reported_for_a_server_side_close(tmp_path: Path) -> None:
    # A guard on the helper itself: a close frame surfaces as Closed.
    with running_server(tmp_path) as srv:
        c = Client(srv)
        c.send_raw("x" * 2_000_000)
        try:
            c.recv()
        except Closed as closed:
            assert closed.code == 1009
        else:
            raise AssertionError("expected a close")


def test_rule_9_reaches_the_owner_of_a_conversation_from_an_earlier_process(
    tmp_path: Path,
) -> None:
    # The new process has seen no event about the conversation: its owner
    # comes from the store, looked up when the first event arrives.
    with running_server(tmp_path) as srv:
        cid = Client(srv).create(title="from before")
    with running_server(tmp_path) as srv:
        sidebar = Client(srv)  # alice, not joined
        other = Client(srv, user="bob")  # not the owner: nothing for bob
        assert srv.chat is not None
        reply = srv.chat.send_message(cid, "sent by the Python API", timeout=WAIT)
        added = [sidebar.expect("message_added")["data"]["message"] for _ in range(2)]
        assert [m["message_type"] for m in added] == ["user", "assistant"]
        assert added[1]["content"] == reply
        other.send("ping", {})  # answered after anything queued for bob before it
        assert other.expect("pong")
        assert not [f for f in other.seen if f["type"] == "message_added"]
