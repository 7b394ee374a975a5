"""``actorchat chat --url``: the real command, as a subprocess, against a real server.

The server runs in this (monkey-patched) process on a free loopback port,
so the tests read what it stored and watch its events; the command is the
installed CLI (``python -m actorchat``), its output read as a user sees it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import gevent
import jwt
import pytest

from actorchat import ModelConfig, StreamComplete
from actorchat.server import Server
from tests.server_support import WAIT, free_port, running_server

#: The environment of the command: none of the caller's ACTORCHAT_* settings.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}

MODELS = {
    "flaky": ModelConfig("flaky", provider="mock", model="mock", options={"failure_rate": 1.0}),
    # Long enough to be interrupted: 100 tokens, 10 ms apart.
    "slow": ModelConfig(
        "slow", provider="mock", model="mock", options={"tokens": 100, "delay_ms": 10}
    ),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("remote")
    with running_server(tmp, rate_limit_messages=1000, models=MODELS) as srv:
        yield srv


def chat(
    url: str, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``actorchat chat --url URL ARGS``, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "actorchat", "chat", "--url", url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**ENV, **env},
    )


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The command's only stderr line (an error is one line, never a traceback)."""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def conversation_of(stderr: str) -> str:
    """The id in ``[conversation ID, finish_reason=...]``."""
    line = next(x for x in stderr.splitlines() if x.startswith("[conversation "))
    return line.removeprefix("[conversation ").split(",")[0]


def history(server: Server, cid: str) -> list[tuple[str, str, str | None]]:
    assert server.chat is not None
    return [(m.role, m.content, m.finish_reason) for m in server.chat.messages(cid)]


def test_a_reply_streams_and_the_conversation_continues(server: Server) -> None:
    out = chat(server.url, "--user", "alice", "Hello", "remote")
    assert out.returncode == 0, out.stderr
    cid = conversation_of(out.stderr)
    assert out.stderr == f"[conversation {cid}, finish_reason=stop]\n"
    [(_, asked, _), (role, reply, reason)] = history(server, cid)
    assert asked == "Hello remote" and role == "assistant" and reason == "stop"
    assert out.stdout == reply + "\n" and "“Hello remote”" in reply
    assert server.chat is not None and server.chat.get_conversation(cid).owner == "alice"

    # Continued, the message from stdin: its id is known, and printed only with -v.
    out = chat(server.url, "--user", "alice", "--conversation", cid, "-", stdin="And again")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    turns = history(server, cid)
    assert [(r, c) for r, c, _ in turns[:3]] == [
        ("user", "Hello remote"),
        ("assistant", reply),
        ("user", "And again"),
    ]
    assert turns[3][0] == "assistant" and out.stdout == turns[3][1] + "\n"


def test_a_dev_token_is_fetched_for_the_login_name(server: Server) -> None:
    out = chat(server.url, "hi", LOGNAME="carol")
    assert out.returncode == 0, out.stderr
    assert server.chat is not None
    assert server.chat.get_conversation(conversation_of(out.stderr)).owner == "carol"


def test_a_server_without_dev_auth_needs_a_token(tmp_path: Path) -> None:
    secret = "a-secret-long-enough-for-hs256-0123456789"
    with running_server(tmp_path, jwt_secret=secret) as srv:
        out = chat(srv.url, "hi")
        assert out.returncode == 1
        assert one_line(out) == (
            f"actorchat: {srv.url} requires a token (it has no dev auth): "
            "pass --token TOKEN or set ACTORCHAT_TOKEN"
        )
        claims = {"sub": "dave", "exp": int(time.time()) + 600}
        good = jwt.encode(claims, secret, algorithm="HS256")
        out = chat(srv.url, "hi", ACTORCHAT_TOKEN=good)
        assert out.returncode == 0, out.stderr
        assert srv.chat is not None
        assert srv.chat.get_conversation(conversation_of(out.stderr)).owner == "dave"
        # --token wins over the environment, and a bad one is one line.
        forged = jwt.encode(claims, "another-secret-long-enough-0123456789", algorithm="HS256")
        out = chat(srv.url, "--token", forged, "hi", ACTORCHAT_TOKEN=good)
        assert out.returncode == 1 and out.stdout == ""
        assert one_line(out) == (
            f"actorchat: {srv.url} refused the token from --token (the token is invalid); "
            "pass a valid --token or ACTORCHAT_TOKEN"
        )


def test_a_server_that_is_down_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = chat(url, "hi")
    assert out.returncode == 1 and out.stdout == ""
    assert one_line(out) == (
        f"actorchat: cannot reach {url}: Connection refused (is `actorchat serve` running there?)"
    )


def test_unknown_and_foreign_conversations_are_refused(server: Server) -> None:
    out = chat(server.url, "--user", "alice", "--conversation", "nope", "hi")
    assert out.returncode == 1 and out.stdout == ""
    assert one_line(out) == "actorchat: no conversation 'nope'"
    assert server.chat is not None
    cid = server.chat.start_conversation(owner="alice")
    out = chat(server.url, "--user", "bob", "--conversation", cid, "hi")
    assert out.returncode == 1
    assert one_line(out) == (
        f"actorchat: conversation {cid!r} belongs to another user "
        "(signed in as 'bob'; --user names another)"
    )


def test_a_failing_model_says_why_as_the_embedded_mode_does(server: Server) -> None:
    out = chat(server.url, "--user", "alice", "--model-name", "flaky", "hi")
    assert out.returncode == 1
    cid = conversation_of(out.stderr)
    assert out.stderr == (
        "\nactorchat: PROVIDER_ERROR: simulated backend failure (mock failure_rate)\n"
        f"[conversation {cid}, finish_reason=error]\n"
    )
    assert out.stdout == "\n"
    assert [(r, reason) for r, _, reason in history(server, cid)] == [
        ("user", None),
        ("assistant", "error"),
    ]


class _NotActorchat(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b"<html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_server_that_is_not_actorchat_is_one_line() -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _NotActorchat)
    httpd.timeout = WAIT
    # It answers the one request the command makes.
    thread = threading.Thread(target=httpd.handle_request, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        out = chat(url, "hi")
        assert out.returncode == 1
        assert one_line(out) == (
            f"actorchat: {url} does not look like an actorchat server "
            "(HTTP 404, text/html, to POST /api/v1/auth/token); check --url"
        )
        thread.join(WAIT)
    finally:
        httpd.server_close()


def test_embedded_settings_are_refused_with_url(server: Server) -> None:
    out = chat(server.url, "--data-dir", "/tmp/elsewhere", "hi")
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        "actorchat chat: error: --data-dir sets up the embedded system; "
        "the server at --url has its own"
    )


def test_ctrl_c_mid_reply_exits_130_and_the_server_finishes_the_reply(server: Server) -> None:
    assert server.chat is not None
    events = server.chat.subscribe(None, replay=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorchat", "chat", "--url", server.url,
         "--user", "alice", "--model-name", "slow", "tell", "me"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        with gevent.Timeout(WAIT):  # the pipes are cooperative: a failing test fails, not hangs
            first = proc.stdout.read(8)  # text arrives while the reply streams
            assert len(first) == 8
            proc.send_signal(signal.SIGINT)
            err = proc.stderr.read().decode()
        assert proc.wait(WAIT) == 130
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        [line] = [x for x in err.splitlines() if x]
        assert line.startswith(
            "actorchat: interrupted; the server still finishes the reply and stores it "
            "in conversation "
        )
        cid = line.rsplit(" ", 1)[-1]
        deadline = time.monotonic() + WAIT
        while True:
            event = events.get(max(0.0, deadline - time.monotonic()))
            assert event is not None, "the reply never completed"
            if isinstance(event, StreamComplete) and event.conversation_id == cid:
                break
        assert event.finish_reason == "stop"
        [(_, _, _), (role, reply, reason)] = history(server, cid)
        assert role == "assistant" and reason == "stop"
        assert reply.encode().startswith(first) and len(reply.split()) > 8
    finally:
        events.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
