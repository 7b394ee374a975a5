"""Chaos, briefly: the promises of ``bench/faults.py`` with real parts, in seconds.

A real ``actorchat serve`` process on 127.0.0.1 (SQLite in a temporary data
directory), real WebSocket clients (websocket-client, one greenlet each), and
real faults: conversations crashed at random through ``POST
/api/v1/admin/kill``, clients that drop their connection mid-stream and
resume (``join_conversation`` with ``after_index`` and ``message_id``), and a
``kill -9`` of the server process followed by a restart on the same data
directory. After each, the store is read back through the public API
(``GET /api/v1/conversations/<id>/messages``) and must hold every
acknowledged message exactly once and in order, each answered, with the
text clients saw; no followed stream may have a gap, a repeated chunk or no
end, and conversations no fault aimed at see no error.

Random choices use fixed seeds. Every wait is on a frame or an event with a
deadline (``WAIT`` per frame), never a sleep.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests
import websocket
from gevent.queue import Queue

from tests.server_support import WAIT, Client, Frame, free_port

#: The embedded mock under several names, each its own pace (tokens, ms before each).
MODELS = {
    "quick": (12, 10),  # kills land while it streams
    "slow": (20, 20),  # a drop and a reconnect fit well inside one reply
    "long": (60, 20),  # still streaming after a reconnect, whatever the machine
    "fast": (300, 2),  # a new answer streams while a client joins
}


@dataclass
class Served:
    """An ``actorchat serve`` process (what ``tests.server_support.Client`` needs of a server)."""

    proc: subprocess.Popen[str]
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/chat/ws"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)


def serve(tmp: Path, port: int | None = None) -> Served:
    """Start ``actorchat serve`` on ``tmp/data`` and wait for its banner's last line."""
    config = tmp / "models.toml"
    if not config.exists():
        lines = ['default_model = "quick"']
        for name, (tokens, delay) in MODELS.items():
            lines += [f"[models.{name}]", 'provider = "mock"', f"tokens = {tokens}"]
            lines.append(f"delay_ms = {delay}")
        config.write_text("\n".join(lines) + "\n")
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}
    env.update(
        {
            "ACTORCHAT_IDLE_TIMEOUT": "0",
            "ACTORCHAT_PING_INTERVAL": "0",
            "ACTORCHAT_SHUTDOWN_GRACE": "0",
            "ACTORCHAT_LOG_LEVEL": "WARNING",
        }
    )
    cmd = [sys.executable, "-m", "actorchat", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(tmp / "data"), "--config", str(config)]
    log = tmp / "server.log"
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    with gevent.Timeout(WAIT, AssertionError("the server did not start")):
        while True:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line, f"the server exited: {log.read_text()[-3000:]}"
            if line.startswith("  store:"):  # the banner's last line: it is serving
                break
    return Served(proc, port, tmp / "data")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = serve(tmp_path_factory.mktemp("chaos"))
    yield s
    s.stop()


# -- a client's view of one conversation -----------------------------------------------------


@dataclass
class Reply:
    uid: str | None
    chunks: list[tuple[int, int, str]] = field(default_factory=list)
    finish: str | None = None
    superseded: bool = False
    error_code: str | None = None
    away: bool = False  # its end was learned on a resume, not seen chunk by chunk

    @property
    def text(self) -> str:
        return "".join(c for _, _, c in self.chunks)

    @property
    def crashed(self) -> bool:
        return self.finish == "error" and (self.superseded or self.error_code == "INTERNAL_ERROR")


class Chat:
    """One user and one conversation: what was sent, acknowledged and seen.

    ``feed`` takes every frame the client reads; the waits read frames until
    what they wait for has arrived (each frame within ``WAIT``).
    """

    def __init__(
        self, served: Served, user: str, model: str = "quick", join: str | None = None
    ) -> None:
        self.served = served
        self.user = user
        self.acked: list[str] = []  # acknowledged user message ids, in order
        self.content: dict[str, str] = {}  # user message id -> its content
        self.replies: dict[str, Reply] = {}
        self.errors: list[Frame] = []
        self.follow: str | None = None
        self.client = Client(served, user)  # type: ignore[arg-type]
        if join is None:
            self.cid = self.client.create(model=model)
        else:  # another connection of the same user, watching the conversation
            self.cid = join
            rid = self.client.send("join_conversation", {"conversation_id": join})
            self.client.expect("conversation_joined", lambda f: f.get("reply_to") == rid)
        self.token = self._token()

    def _token(self) -> str:
        r = requests.post(
            f"{self.served.url}/api/v1/auth/token", json={"user_id": self.user}, timeout=WAIT
        )
        r.raise_for_status()
        token: str = r.json()["token"]
        return token

    def reply(self, mid: str, uid: str | None = None) -> Reply:
        r = self.replies.setdefault(mid, Reply(uid))
        r.uid = r.uid or uid
        return r

    def feed(self, f: Frame) -> None:
        kind, d = f["type"], f.get("data", {})
        if kind == "message_received" and d["message"]["message_type"] == "user":
            m = d["message"]
            if m["id"] not in self.content:
                self.acked.append(m["id"])
                self.content[m["id"]] = m["content"]
        elif kind == "stream_start":
            self.reply(d["message_id"], d.get("user_message_id"))
            self.follow = d["message_id"]
        elif kind == "stream_content":
            self.reply(d["message_id"]).chunks.append(
                (d.get("first_index", d["index"]), d["index"], d["content"])
            )
        elif kind == "stream_complete":
            r = self.reply(d["message_id"])
            r.finish = d["finish_reason"]
            r.superseded = bool(d.get("superseded"))
            if self.follow == d["message_id"]:
                self.follow = None
        elif kind == "error":
            self.errors.append(f)
            if d.get("message_id") in self.replies:
                self.replies[d["message_id"]].error_code = d["code"]
        elif kind == "conversation_joined":
            history = d["messages"]
            for i, m in enumerate(history):
                if m["message_type"] != "assistant":
                    continue
                answers = history[i - 1]["id"] if i else None
                if m["id"] in self.replies or answers in self.content:
                    r = self.reply(m["id"], answers if answers in self.content else None)
                    if r.finish is None:  # it ended while the client was away
                        r.finish, r.away = m["finish_reason"], True
                    if self.follow == m["id"]:
                        self.follow = None

    def read(self) -> Frame:
        try:
            f = self.client.recv()
        except websocket.WebSocketTimeoutException:
            last = [json.dumps(f)[:160] for f in self.client.seen[-6:]]
            raise AssertionError(f"{self.user}: no frame in {WAIT}s; the last: {last}") from None
        self.feed(f)
        return f

    def until(self, pred: Callable[[Frame], bool]) -> list[Frame]:
        """Every frame read up to and including the first matching ``pred``."""
        frames = [self.read()]
        while not pred(frames[-1]):
            frames.append(self.read())
        return frames

    def send(self, content: str) -> str:
        """Send a user message; returns its id once acknowledged."""
        rid = self.client.send("send_message", {"conversation_id": self.cid, "content": content})
        while True:
            f = self.read()
            if f["type"] == "message_received" and f.get("reply_to") == rid:
                mid: str = f["data"]["message"]["id"]
                return mid

    def answer(self, uid: str) -> Reply | None:
        """The reply that settled ``uid`` (not one a crash interrupted), if any yet."""
        for r in self.replies.values():
            if r.uid == uid and r.finish is not None and not r.crashed:
                return r
        return None

    def wait_answer(self, uid: str, on_chunk: Callable[[Reply, int], None] | None = None) -> Reply:
        """Read until ``uid`` is answered (or failed); ``on_chunk`` sees each chunk."""
        while (done := self.answer(uid)) is None:
            f = self.read()
            if on_chunk is not None and f["type"] == "stream_content":
                r = self.replies[f["data"]["message_id"]]
                if r.uid == uid:
                    on_chunk(r, f["data"]["index"])
        return done

    def drop(self) -> None:
        """Lose the connection at once, without a close frame."""
        self.client.ws.shutdown()

    def resume(self, served: Served | None = None) -> list[Frame]:
        """Reconnect and join, naming the reply followed and the last chunk seen.

        Returns the frames up to and including ``conversation_joined``.
        """
        if served is not None:
            self.served = served
        self.client.close()
        self.client = Client(self.served, self.user)  # type: ignore[arg-type]
        data: dict[str, Any] = {"conversation_id": self.cid, "history_limit": 10}
        r = self.replies.get(self.follow) if self.follow else None
        if r is not None and r.chunks:
            data["after_index"] = r.chunks[-1][1]
            data["message_id"] = self.follow
        rid = self.client.send("join_conversation", data)
        start = len(self.client.seen)
        while not (
            (f := self.read())["type"] == "conversation_joined" and f.get("reply_to") == rid
        ):
            pass
        return self.client.seen[start:]

    def stored(self) -> list[Frame]:
        r = requests.get(
            f"{self.served.url}/api/v1/conversations/{self.cid}/messages",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=WAIT,
        )
        r.raise_for_status()
        messages: list[Frame] = r.json()["messages"]
        return messages

    def audit(self, targeted: bool) -> None:
        """The promises, against the store."""
        history = self.stored()
        where = {m["id"]: i for i, m in enumerate(history)}
        users = [m["content"] for m in history if m["message_type"] == "user"]
        for uid in self.acked:
            assert uid in where, f"{self.user}: acknowledged {uid} is not stored"
            assert users.count(self.content[uid]) == 1, f"{self.user}: {uid} stored twice"
            nxt = history[where[uid] + 1] if where[uid] + 1 < len(history) else None
            assert nxt is not None and nxt["message_type"] == "assistant", (
                f"{self.user}: {uid} unanswered"
            )
            assert nxt["finish_reason"] == "stop", f"{self.user}: {uid}: {nxt['finish_reason']}"
        order = [where[uid] for uid in self.acked]
        assert order == sorted(order), f"{self.user}: stored out of order"
        for mid, r in self.replies.items():
            expected = 0
            for lo, hi, _ in r.chunks:
                assert lo == expected, f"{self.user}: reply {mid}: {lo} after {expected - 1}"
                expected = hi + 1
            assert r.finish is not None or not r.chunks, f"{self.user}: reply {mid} has no end"
            if r.finish == "stop":
                stored = history[where[mid]]["content"]
                if r.away:
                    assert stored.startswith(r.text), f"{self.user}: reply {mid} differs"
                else:
                    assert stored == r.text, f"{self.user}: reply {mid} differs from the store"
        if not targeted:
            assert not self.errors, f"{self.user}: errors without a fault: {self.errors}"
            assert not any(r.finish == "error" for r in self.replies.values())

    def close(self) -> None:
        self.client.close()


def admin_kill(served: Served, body: dict[str, Any]) -> list[str]:
    """Crash conversations through the operations API (open to every dev token)."""
    token = requests.post(
        f"{served.url}/api/v1/auth/token", json={"user_id": "chaos-admin"}, timeout=WAIT
    ).json()["token"]
    r = requests.post(
        f"{served.url}/api/v1/admin/kill",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=WAIT,
    )
    r.raise_for_status()
    killed: list[str] = r.json()["killed"]
    return killed


def end_of(mid: str) -> Callable[[Frame], bool]:
    """Matches the ``stream_complete`` of reply ``mid``."""
    return lambda f: f["type"] == "stream_complete" and f["data"]["message_id"] == mid


def in_greenlets(*jobs: Callable[[], None]) -> None:
    """Run ``jobs`` at once; the first failure fails the test."""
    greenlets = [gevent.spawn(job) for job in jobs]
    gevent.joinall(greenlets, timeout=WAIT * 6, raise_error=True)
    assert all(g.ready() for g in greenlets), "a client did not finish in time"


# -- faults under load -------------------------------------------------------------------------


def test_random_kills_lose_no_acknowledged_message(served: Served) -> None:
    rng = random.Random(1207)
    chats = [Chat(served, f"kills-{i}", "quick") for i in range(12)]
    by_cid = {c.cid: c for c in chats}
    triggers: Queue[str | None] = Queue()
    kills: dict[str, int] = {}
    killed: set[str] = set()

    def client(chat: Chat) -> None:
        def on_chunk(r: Reply, index: int) -> None:
            # Chosen at random, at most twice a conversation (its supervisor
            # fails it past three restarts within five seconds).
            if index == 2 and kills.get(chat.cid, 0) < 2 and rng.random() < 0.4:
                kills[chat.cid] = kills.get(chat.cid, 0) + 1
                triggers.put(chat.cid)

        for n in range(5):
            chat.wait_answer(chat.send(f"{chat.user} message {n}"), on_chunk)

    def killer() -> None:
        rounds = 0
        while (cid := triggers.get(timeout=WAIT)) is not None:
            rounds += 1
            # Once, a random fraction of every live conversation instead.
            body = {"fraction": 0.25} if rounds == 5 else {"conversation_ids": [cid]}
            killed.update(admin_kill(served, body))

    kill_job = gevent.spawn(killer)
    try:
        in_greenlets(*(lambda c=c: client(c) for c in chats))
    finally:
        triggers.put(None)
        kill_job.get(timeout=WAIT)
    crashes = sum(r.crashed for c in chats for r in c.replies.values())
    assert crashes, "no kill landed while a reply streamed: the test did not test"
    for c in chats:
        c.audit(targeted=c.cid in killed)
        if c.cid not in killed:
            assert not any(r.crashed for r in c.replies.values())
    assert killed & set(by_cid)
    for c in chats:
        c.close()


def test_clients_that_drop_mid_stream_resume_without_gap(served: Served) -> None:
    rng = random.Random(2024)
    chats = [Chat(served, f"drops-{i}", "slow") for i in range(8)]
    resumed = []

    def client(chat: Chat) -> None:
        for n in range(3):
            uid = chat.send(f"{chat.user} message {n}")
            at = rng.randrange(1, 10) if rng.random() < 0.75 else None
            while chat.answer(uid) is None:
                f = chat.read()
                d = f.get("data", {})
                if f["type"] == "stream_content" and at is not None and d["index"] >= at:
                    at = None
                    chat.drop()
                    chat.resume()
                    resumed.append(chat.user)

    in_greenlets(*(lambda c=c: client(c) for c in chats))
    assert len(resumed) >= 8
    for c in chats:
        c.audit(targeted=False)
        c.close()


def test_kill_9_then_restart_on_the_same_data_dir(tmp_path: Path) -> None:
    first = serve(tmp_path)
    try:
        chats = [Chat(first, f"k9-{i}", "fast") for i in range(4)]
        lost: dict[str, str] = {}
        for c in chats:
            c.wait_answer(c.send(f"{c.user} before"))
        for c in chats:
            uid = c.send(f"{c.user} during")
            while not (r := c.replies.get(c.follow or "")) or len(r.chunks) < 3:
                c.read()
            lost[c.user] = uid
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(WAIT)
    second = serve(tmp_path, port=first.port)
    try:
        # Everything acknowledged before the kill is there at once.
        for c in chats:
            ids = {m["id"] for m in c.stored()}
            assert set(c.acked) <= ids, f"{c.user}: lost {set(c.acked) - ids}"
        for c in chats:
            old = c.follow
            assert old is not None
            c.resume(second)
            # First the end of the reply the server never stored (superseded);
            # then the new answer to the same message, from index 0 if it is
            # still streaming (the restarted server answers at once, so it
            # may be in the join's history already).
            frames = c.until(end_of(old))
            assert [f["type"] for f in frames if f["type"].startswith("stream_")] == [
                "stream_complete"
            ], "the named reply's end comes first"
            assert frames[-1]["data"]["finish_reason"] == "error"
            assert frames[-1]["data"].get("superseded") is True
            new = c.wait_answer(lost[c.user])
            assert new.finish == "stop"
            assert new.away or new.chunks[0][0] == 0
            c.wait_answer(c.send(f"{c.user} after"))
        for c in chats:
            c.audit(targeted=True)
            assert all(r.finish == "stop" for r in c.replies.values() if r.uid and not r.crashed)
            c.close()
    finally:
        second.stop()


# -- the resume cases ----------------------------------------------------------------------


def _stream_of(frames: list[Frame], mid: str) -> list[Frame]:
    return [f for f in frames if f.get("data", {}).get("message_id") == mid]


def test_resume_a_reply_still_streaming(served: Served) -> None:
    chat = Chat(served, "resume-streaming", "long")
    uid = chat.send("tell me something long")
    while not (r := chat.replies.get(chat.follow or "")) or len(r.chunks) < 4:
        chat.read()
    mid = chat.follow
    assert mid is not None
    seen_before = len(chat.replies[mid].chunks)
    chat.drop()
    chat.resume()
    start = len(chat.client.seen)
    chat.wait_answer(uid)
    after = [f for f in _stream_of(chat.client.seen[start:], mid) if f["type"] == "stream_content"]
    assert after[0]["data"]["index"] == seen_before, "the live rest starts after the last seen"
    assert chat.replies[mid].finish == "stop"
    chat.audit(targeted=False)
    chat.close()


def test_resume_a_reply_that_ended_while_away(served: Served) -> None:
    chat = Chat(served, "resume-ended", "slow")
    obs = Chat(served, chat.user, join=chat.cid)
    uid = chat.send("a short one")
    while not (r := chat.replies.get(chat.follow or "")) or len(r.chunks) < 4:
        chat.read()
    mid = chat.follow
    assert mid is not None
    chat.drop()
    obs.until(end_of(mid))
    joined = chat.resume()
    history = joined[-1]["data"]["messages"]
    assert history[-1]["id"] == mid, "the ended reply is in the join's history"
    # Then the named reply's end, and nothing more of it.
    ping = chat.client.send("ping")
    start = len(chat.client.seen)
    chat.client.expect("pong", lambda f: f.get("reply_to") == ping)
    rest = _stream_of(chat.client.seen[start:], mid)
    assert [f["type"] for f in rest] == ["stream_complete"]
    assert rest[0]["data"]["finish_reason"] == "stop"
    assert not rest[0]["data"].get("superseded")
    assert chat.answer(uid) is chat.replies[mid]
    assert history[-1]["content"].startswith(chat.replies[mid].text)
    chat.audit(targeted=False)
    chat.close()
    obs.close()


def test_resume_a_reply_a_crash_interrupted(served: Served) -> None:
    chat = Chat(served, "resume-crashed", "fast")
    obs = Chat(served, chat.user, join=chat.cid)
    uid = chat.send("this one will crash")
    while not (r := chat.replies.get(chat.follow or "")) or len(r.chunks) < 3:
        chat.read()
    old = chat.follow
    assert old is not None
    chat.drop()
    assert admin_kill(served, {"conversation_ids": [chat.cid]}) == [chat.cid]
    # The observer sees the crash end the old reply and the new answer start.
    obs.until(end_of(old))
    new = obs.client.expect("stream_start", lambda f: f["data"]["message_id"] != old)["data"][
        "message_id"
    ]
    obs.client.expect("stream_content", lambda f: f["data"]["message_id"] == new)
    chat.resume()
    start = len(chat.client.seen)
    chat.wait_answer(uid)
    frames = [f for f in chat.client.seen[start:] if f["type"].startswith("stream_")]
    # In this order: the old reply's end (error, superseded), then the new
    # answer from its start, chunk 0, 1, 2, ... to its end.
    assert frames[0]["type"] == "stream_complete", [f["type"] for f in frames[:3]]
    assert frames[0]["data"]["message_id"] == old
    assert frames[0]["data"]["finish_reason"] == "error"
    assert frames[0]["data"].get("superseded") is True
    assert frames[1]["type"] == "stream_start" and frames[1]["data"]["message_id"] == new
    indices = [f["data"]["index"] for f in frames if f["type"] == "stream_content"]
    assert indices == list(range(len(indices))), f"indices as received: {indices[:12]}..."
    assert frames[-1]["type"] == "stream_complete"
    assert frames[-1]["data"]["finish_reason"] == "stop"
    chat.audit(targeted=True)
    chat.close()
    obs.close()


def test_the_audit_sees_a_lost_message(served: Served) -> None:
    """The audit itself fails when the store lacks an acknowledged message."""
    chat = Chat(served, "audit-check", "quick")
    chat.wait_answer(chat.send("kept"))
    chat.acked.append("never-acknowledged")
    chat.content["never-acknowledged"] = "never sent"
    with pytest.raises(AssertionError, match="not stored"):
        chat.audit(targeted=False)
    chat.close()
