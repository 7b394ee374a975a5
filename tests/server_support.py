"""Shared by the server tests: a real server on a free loopback port, a real client.

The client is websocket-client, a library independent of the server's own
code; it runs in the test's greenlet (the process is monkey-patched), so
the in-process server keeps serving while a test waits on a frame. Every
wait has a deadline (``WAIT``): a failing test fails, it never hangs.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import websocket
from websocket import ABNF

from actorchat import load_config
from actorchat.server import Server

#: Generous bound for anything that should take milliseconds.
WAIT = 20.0

Frame = dict[str, Any]


def server_config(tmp_path: Path, **overrides: Any) -> Any:
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "port": 0,
        "mock_tokens": 12,
        "mock_delay_ms": 0.0,
        "idle_timeout": 0.0,
        "ping_interval": 0.0,
        "shutdown_grace": 0.0,
    }
    settings.update(overrides)
    return load_config(env={}, **settings)


#: Clients still open, by server: closed before their server stops, as a
#: browser closes its tabs, so that shutdown does not wait for silent peers.
_clients: dict[int, list[Client]] = {}


@contextmanager
def running_server(tmp_path: Path, **overrides: Any) -> Iterator[Server]:
    server = Server(server_config(tmp_path, **overrides)).start()
    try:
        yield server
    finally:
        for client in _clients.pop(id(server), []):
            client.close()
        server.stop(grace=0)


def dev_token(server: Server, user: str, **extra: Any) -> str:
    r = requests.post(
        f"{server.url}/api/v1/auth/token", json={"user_id": user, **extra}, timeout=WAIT
    )
    r.raise_for_status()
    token: str = r.json()["token"]
    return token


class Closed(Exception):
    """The server closed the connection: ``code`` and ``reason`` of its close frame."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class Client:
    """A protocol client over websocket-client, with deadline-bounded waits."""

    def __init__(self, server: Server, user: str | None = "alice", **options: Any) -> None:
        self.server = server
        self.ws = websocket.create_connection(server.ws_url, timeout=WAIT, **options)
        _clients.setdefault(id(server), []).append(self)
        self.user = user
        self.seen: list[Frame] = []
        self.pings = 0
        self._ids = 0
        if user is not None:
            self.auth(dev_token(server, user))

    def auth(self, token: str) -> Frame:
        self.send_raw(json.dumps({"type": "auth", "token": token}))
        return self.expect("auth_success")

    def send_raw(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            self.ws.send(text, ABNF.OPCODE_BINARY)
        else:
            self.ws.send(text)

    def send(self, kind: str, data: dict[str, Any] | None = None, **top: Any) -> str:
        """Send a frame with a fresh ``id``; returns the id."""
        self._ids += 1
        rid = f"r{self._ids}"
        frame: Frame = {"type": kind, "id": rid, **top}
        if data is not None:
            frame["data"] = data
        self.send_raw(json.dumps(frame))
        return rid

    def recv(self) -> Frame:
        while True:
            # websocket-client answers pings itself; they are counted here.
            opcode, abnf = self.ws.recv_data_frame(control_frame=True)
            if opcode == ABNF.OPCODE_PING:
                self.pings += 1
            elif opcode != ABNF.OPCODE_PONG:
                break
        payload = abnf.data
        if opcode == ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            raise Closed(code, payload[2:].decode("utf-8", "replace"))
        frame: Frame = json.loads(payload)
        self.seen.append(frame)
        return frame

    def expect(self, kind: str, pred: Callable[[Frame], bool] | None = None) -> Frame:
        """Read frames until one of ``kind`` (matching ``pred``) arrives."""
        while True:
            frame = self.recv()
            if frame["type"] == kind and (pred is None or pred(frame)):
                return frame

    def until(self, kind: str, pred: Callable[[Frame], bool] | None = None) -> list[Frame]:
        """Every frame read up to and including the first ``kind`` matching ``pred``."""
        start = len(self.seen)
        self.expect(kind, pred)
        return self.seen[start:]

    def expect_close(self) -> Closed:
        try:
            while True:
                self.recv()
        except Closed as closed:
            return closed
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return Closed(None, "")

    def create(self, **data: Any) -> str:
        rid = self.send("create_conversation", data)
        frame = self.expect("conversation_created", lambda f: f.get("reply_to") == rid)
        cid: str = frame["data"]["conversation"]["id"]
        return cid

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass


def reply_of(frames: list[Frame], message_id: str) -> str:
    """Concatenate the deltas of one reply, checking indices have no gap."""
    text = []
    expected = 0
    for f in frames:
        d = f.get("data", {})
        if f["type"] == "stream_content" and d["message_id"] == message_id:
            first = d.get("first_index", d["index"])
            assert first == expected, f"gap: expected {expected}, got {first}"
            expected = d["index"] + 1
            text.append(d["content"])
    return "".join(text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
