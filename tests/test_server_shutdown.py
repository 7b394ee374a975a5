"""``actorchat serve`` as a process: start-up banner, SIGTERM drain, 1001, exit 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gevent
import requests
import websocket

from actorchat import ChatSystem, load_config
from tests.server_support import WAIT, Closed, free_port


class _Proc:
    def __init__(self, proc: subprocess.Popen[str], port: int, banner: str) -> None:
        self.proc = proc
        self.port = port
        self.banner = banner
        self.url = f"http://127.0.0.1:{port}"


@contextmanager
def serve_process(data_dir: Path, *flags: str, **env: str) -> Iterator[_Proc]:
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}
    environ.update({f"ACTORCHAT_{k.upper()}": v for k, v in env.items()})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "actorchat",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        lines = []
        with gevent.Timeout(WAIT, AssertionError("the server did not start")):
            while not any(line.startswith("  store:") for line in lines):  # the banner's end
                line = proc.stdout.readline() if proc.stdout else ""
                assert line, f"server exited: {proc.stderr.read() if proc.stderr else ''}"
                lines.append(line)
        yield _Proc(proc, port, "".join(lines))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)


def connect(p: _Proc, user: str = "alice") -> websocket.WebSocket:
    token = requests.post(
        f"{p.url}/api/v1/auth/token", json={"user_id": user}, timeout=WAIT
    ).json()["token"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{p.port}/api/v1/chat/ws", timeout=WAIT)
    ws.send(json.dumps({"type": "auth", "token": token}))
    return ws


def frames(ws: websocket.WebSocket) -> Iterator[dict[str, Any]]:
    """Frames until the server closes; the last item is the close, as a Closed."""
    while True:
        opcode, abnf = ws.recv_data_frame(control_frame=False)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(abnf.data[:2], "big") if len(abnf.data) >= 2 else None
            raise Closed(code, abnf.data[2:].decode())
        yield json.loads(abnf.data)


def start_reply(ws: websocket.WebSocket) -> tuple[str, str]:
    ws.send(json.dumps({"type": "create_conversation", "data": {}}))
    stream = frames(ws)
    cid = next(f for f in stream if f["type"] == "conversation_created")["data"]["conversation"][
        "id"
    ]
    ws.send(json.dumps({"type": "send_message", "data": {"conversation_id": cid, "content": "go"}}))
    mid = next(f for f in stream if f["type"] == "stream_start")["data"]["message_id"]
    next(f for f in stream if f["type"] == "stream_content")
    return cid, mid


def until_close(ws: websocket.WebSocket) -> tuple[list[dict[str, Any]], Closed]:
    seen: list[dict[str, Any]] = []
    try:
        for f in frames(ws):
            seen.append(f)
    except Closed as closed:
        return seen, closed
    raise AssertionError("unreachable")


def stored(data_dir: Path, cid: str) -> Any:
    with ChatSystem(load_config(env={}, data_dir=data_dir, idle_timeout=0.0)) as chat:
        return chat.messages(cid)[-1]


def test_sigterm_lets_replies_finish_then_closes_1001(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_process(data, mock_tokens="40", mock_delay_ms="20") as p:
        assert f"serving on {p.url}" in p.banner
        assert "/api/v1/auth/token" in p.banner  # how to get a token, in dev mode
        ws = connect(p)
        cid, mid = start_reply(ws)
        p.proc.send_signal(signal.SIGTERM)
        seen, closed = until_close(ws)
        complete = [f for f in seen if f["type"] == "stream_complete"]
        assert complete and complete[0]["data"]["finish_reason"] == "stop"
        assert (closed.code, closed.reason) == (1001, "Server shutting down")
        assert p.proc.wait(WAIT) == 0
    last = stored(data, cid)
    assert last.id == mid and last.finish_reason == "stop"


def test_sigterm_past_the_grace_cancels_and_keeps_partial_text(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_process(
        data, "--shutdown-grace", "0.2", mock_tokens="1000", mock_delay_ms="20"
    ) as p:
        ws = connect(p)
        cid, mid = start_reply(ws)
        p.proc.send_signal(signal.SIGTERM)
        seen, closed = until_close(ws)
        complete = [f for f in seen if f["type"] == "stream_complete"]
        assert complete and complete[0]["data"]["finish_reason"] == "cancelled"
        assert closed.code == 1001
        assert p.proc.wait(WAIT) == 0
        assert "Traceback" not in (p.proc.stderr.read() if p.proc.stderr else "")
    last = stored(data, cid)
    assert last.id == mid and last.finish_reason == "cancelled" and last.content


def test_while_draining_readyz_is_503_and_health_checks_are_answered(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve_process(data, mock_tokens="60", mock_delay_ms="50") as p:
        assert requests.get(f"{p.url}/readyz", timeout=WAIT).status_code == 200
        ws = connect(p)
        cid, mid = start_reply(ws)
        p.proc.send_signal(signal.SIGTERM)
        # The signal is handled on the server's own time: ask until it shows.
        deadline = time.monotonic() + WAIT
        while True:
            r = requests.get(f"{p.url}/readyz", timeout=WAIT)
            if r.status_code == 503 or time.monotonic() > deadline:
                break
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["draining"] is True and body["status"] == "unavailable"
        assert body["checks"]["store"] is True
        health = requests.get(f"{p.url}/healthz", timeout=WAIT)
        assert health.status_code == 200
        # The reply in progress still finishes, then the socket closes with 1001.
        seen, closed = until_close(ws)
        complete = [f for f in seen if f["type"] == "stream_complete"]
        assert complete and complete[0]["data"]["finish_reason"] == "stop"
        assert closed.code == 1001
        assert p.proc.wait(WAIT) == 0
    assert stored(data, cid).id == mid


def test_the_stop_log_tells_the_drain_from_peers_slow_to_answer_the_close(tmp_path: Path) -> None:
    with serve_process(tmp_path / "data", "--log-level", "info", mock_tokens="5") as p:
        reader, silent = connect(p), connect(p, "bob")
        for ws in (reader, silent):
            start_reply(ws)
            for f in frames(ws):
                if f["type"] == "stream_complete":
                    break
        # `silent` stops reading: it never answers the server's close frame.
        p.proc.send_signal(signal.SIGTERM)
        _, closed = until_close(reader)
        assert closed.code == 1001
        assert p.proc.wait(WAIT) == 0
        err = p.proc.stderr.read() if p.proc.stderr else ""
    drain = next(line for line in err.splitlines() if "server.drain" in line)
    stop = next(line for line in err.splitlines() if "server.stop" in line)
    assert "replies=0 finished=True" in drain
    assert "1 of 2 peers did not answer the close" in stop, stop
    assert "(drain 0.0," in stop
    silent.close()
