"""Failure handling of the HTTP providers, against real fake servers.

Timeouts are tested with huge margins: a timeout of a fraction of a second
against a server that waits 30 s or more (or forever), and a timeout of
10 s or more against delays of a few milliseconds. Nothing here sleeps to
synchronise: tests wait on events with generous bounds.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
from gevent.event import Event

from actorchat import ChatSystem, ErrorEvent, StreamComplete, StreamContent
from actorchat.config import Config
from actorchat.errors import ConfigurationError, ProviderError, Timeout
from actorchat.providers import (
    ChatTurn,
    GenerationCancelled,
    OpenAIProvider,
    create_provider,
    fit_context,
)
from actorchat.providers._http import backoff_delay, parse_retry_after
from actorchat.testing import Behavior, FakeOpenAIServer
from tests.conftest import make_config
from tests.helpers import of_type, wait_for
from tests.provider_helpers import (
    WAIT,
    collect,
    fake_server_fixtures,
    model_for,
    read_partial,
    request,
)

server, _fresh = fake_server_fixtures(FakeOpenAIServer)


def provider(server: FakeOpenAIServer, **fields: Any) -> OpenAIProvider:
    return OpenAIProvider(model_for(server, "openai", **fields))


# -- retries ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 529, 429, 408])
def test_retryable_status_then_success(server: FakeOpenAIServer, status: int) -> None:
    server.script(Behavior(status=status))
    server.default = Behavior(tokens=["only", " once"])
    p = provider(server)
    deltas, end = collect(p.stream(request(p.model)))
    assert deltas == ["only", " once"]
    assert end.finish_reason == "stop"
    assert len(server.requests) == 2
    assert p.stats()["retries"] == 1


def test_gives_up_after_max_attempts(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(status=500, error_message="backend on fire"))
    p = provider(server, max_attempts=3)
    with pytest.raises(ProviderError, match="gave up after 3 attempts") as info:
        collect(p.stream(request(p.model)))
    assert "backend on fire" in str(info.value)
    assert not isinstance(info.value, Timeout)
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(server: FakeOpenAIServer, status: int) -> None:
    server.reset(Behavior(status=status, error_message="bad thing"))
    p = provider(server)
    with pytest.raises(ProviderError, match=f"HTTP {status}.*bad thing"):
        collect(p.stream(request(p.model)))
    assert len(server.requests) == 1


def test_retry_after_is_honoured(server: FakeOpenAIServer) -> None:
    server.script(Behavior(status=429, retry_after="0.4"))
    server.default = Behavior(tokens=["ok"])
    p = provider(server, options={"backoff_base": 0.001, "backoff_max": 0.001})
    collect(p.stream(request(p.model)))
    first, second = server.requests
    # A lower bound only: the retry cannot come earlier than asked.
    assert second.received_at - first.received_at >= 0.4


def test_retry_after_longer_than_allowed_fails_at_once(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(status=429, retry_after="3600"))
    p = provider(server, options={"max_retry_after": 5})
    started = time.monotonic()
    with pytest.raises(ProviderError, match="retry after 3600s"):
        collect(p.stream(request(p.model)))
    assert time.monotonic() - started < WAIT
    assert len(server.requests) == 1


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    when = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0)
    assert when == pytest.approx(10.0)


def test_backoff_is_exponential_with_jitter() -> None:
    import random

    rng = random.Random(1)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0), (9, 8.0)]:
        delays = [backoff_delay(retry, 0.5, 8.0, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


def test_connection_refused_is_retried_then_fails() -> None:
    with FakeOpenAIServer() as gone:
        p = OpenAIProvider(model_for(gone, "openai", max_attempts=2))
    with pytest.raises(ProviderError, match=r"connection failed.*gave up after 2 attempts") as err:
        collect(p.stream(request(p.model)))
    assert p.stats()["requests"] == 2
    # Chat clients see the reason, not the address or requests' classes.
    assert "connection failed: Connection refused" in str(err.value)
    assert "127.0.0.1" not in str(err.value) and "HTTPConnectionPool" not in str(err.value)


def test_other_connection_failures_keep_their_reason_but_not_the_address() -> None:
    from gevent.server import StreamServer

    def hang_up(sock: socket.socket, _addr: Any) -> None:
        # Read the whole request (closing with bytes unread would reset the
        # connection instead), then close without a response.
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)
        sock.close()

    def plain_http(sock: socket.socket, _addr: Any) -> None:
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        sock.close()

    slammer = StreamServer(("127.0.0.1", 0), hang_up)
    plain = StreamServer(("127.0.0.1", 0), plain_http)
    slammer.start()
    plain.start()
    try:
        cases = {
            f"http://127.0.0.1:{slammer.server_port}/v1": (
                "Remote end closed connection without response"
            ),
            f"https://127.0.0.1:{plain.server_port}/v1": "[SSL: ",  # TLS to plain HTTP
        }
        with FakeOpenAIServer() as fake:
            for url, reason in cases.items():
                p = OpenAIProvider(model_for(fake, "openai", base_url=url, max_attempts=1))
                with pytest.raises(ProviderError) as err:
                    collect(p.stream(request(p.model)))
                assert "connection failed: " in str(err.value) and reason in str(err.value)
                assert "127.0.0.1" not in str(err.value)
                assert "HTTPConnectionPool" not in str(err.value)
    finally:
        slammer.stop()
        plain.stop()


def test_connect_timeout() -> None:
    # A listening socket whose accept queue is full: SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        with FakeOpenAIServer() as srv:
            m = model_for(srv, "openai", connect_timeout=0.2, max_attempts=2)
        m.base_url = f"http://127.0.0.1:{port}/v1"
        p = OpenAIProvider(m)
        started = time.monotonic()
        with pytest.raises(ProviderError, match=r"could not connect within connect_timeout=0\.2s"):
            collect(p.stream(request(m)))
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < WAIT  # two attempts, each waited its timeout
        assert p.stats()["requests"] == 2
    finally:
        filler.close()
        listener.close()


def test_disconnect_before_first_token_is_retried(server: FakeOpenAIServer) -> None:
    server.script(Behavior(tokens=5, disconnect_after=0))
    server.default = Behavior(tokens=["fine"])
    deltas, _ = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert deltas == ["fine"]
    assert len(server.requests) == 2


def test_disconnect_after_text_is_an_error_without_duplicates(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=5, disconnect_after=2))
    got: list[str] = []
    with pytest.raises(ProviderError, match="broke"):
        read_partial(provider(server).stream(request(model_for(server, "openai"))), got)
    assert got == ["w0", " w1"]
    assert len(server.requests) == 1


# -- timeouts -----------------------------------------------------------------------


def test_time_to_first_byte_timeout(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(ttfb=60.0))
    p = provider(server, first_token_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(Timeout, match=r"first_token_timeout=0\.3s"):
        collect(p.stream(request(p.model)))
    assert time.monotonic() - started < WAIT
    assert len(server.requests) == 1  # a timeout is not retried
    assert server.requests[0].done.wait(WAIT) and server.requests[0].disconnected


def test_first_token_timeout_counts_from_the_request_not_from_pings(
    server: FakeOpenAIServer,
) -> None:
    # Headers and the role-only chunk arrive at once; the first text never does.
    server.reset(Behavior(tokens=3, first_token_delay=60.0))
    p = provider(server, first_token_timeout=0.3, idle_timeout=60.0)
    with pytest.raises(Timeout, match="no text within first_token_timeout"):
        collect(p.stream(request(p.model)))
    assert server.requests[0].done.wait(WAIT) and server.requests[0].disconnected


def test_slow_first_token_within_its_timeout_is_fine(server: FakeOpenAIServer) -> None:
    # A reasoning model: the first token takes longer than idle_timeout,
    # which only applies once text flows.
    server.reset(Behavior(tokens=3, first_token_delay=1.2))
    p = provider(server, first_token_timeout=30.0, idle_timeout=0.4)
    deltas, _ = collect(p.stream(request(p.model)))
    assert len(deltas) == 3


def test_idle_timeout_between_chunks(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=5, hang_after=2))
    p = provider(server, idle_timeout=0.3, first_token_timeout=30.0)
    got: list[str] = []
    with pytest.raises(Timeout, match=r"no data for idle_timeout=0\.3s"):
        read_partial(p.stream(request(p.model)), got)
    assert got == ["w0", " w1"]
    assert len(server.requests) == 1
    assert server.requests[0].done.wait(WAIT) and server.requests[0].disconnected


def test_steady_chunks_never_trip_the_idle_timeout(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=10, delay=0.005))
    p = provider(server, idle_timeout=10.0)
    deltas, _ = collect(p.stream(request(p.model)))
    assert len(deltas) == 10


def test_default_timeouts_are_the_documented_ones() -> None:
    m = model_for(FakeOpenAIServer(), "openai")
    assert (m.connect_timeout, m.first_token_timeout, m.idle_timeout, m.max_attempts) == (
        10.0,
        30.0,
        30.0,
        3,
    )


# -- cancel ------------------------------------------------------------------------------


def test_cancel_mid_stream_closes_the_upstream_connection(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=1000, delay=0.02))
    p = provider(server)
    got: list[str] = []
    second = Event()

    def consume() -> None:
        for item in p.stream(request(p.model)):
            got.append(item)
            if len(got) == 2:
                second.set()

    g = gevent.spawn(consume)
    assert second.wait(WAIT)
    g.kill(GenerationCancelled, block=True, timeout=WAIT)
    assert isinstance(g.exception, GenerationCancelled)
    [rec] = server.requests
    assert rec.done.wait(WAIT)
    assert rec.disconnected and not rec.completed
    assert rec.tokens_sent < 1000


def test_cancel_before_the_first_byte_closes_the_connection(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(ttfb=60.0))
    p = provider(server)
    g = gevent.spawn(lambda: collect(p.stream(request(p.model))))
    [rec] = server.wait_for_requests(1, WAIT)
    g.kill(GenerationCancelled, block=True, timeout=WAIT)
    assert rec.done.wait(WAIT) and rec.disconnected


def test_cancel_during_backoff_stops_retrying(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(status=503, retry_after="30"))
    p = provider(server)
    g = gevent.spawn(lambda: collect(p.stream(request(p.model))))
    server.wait_for_requests(1, WAIT)
    g.kill(GenerationCancelled, block=True, timeout=WAIT)
    assert g.dead and len(server.requests) == 1


# -- API keys -------------------------------------------------------------------------------


def test_api_key_never_logged(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-TOPSECRET-42"
    monkeypatch.setenv("FAKE_KEY", secret)
    # A backend that echoes the key in its error message (some do, masked or not).
    server.reset(Behavior(status=500, error_message=f"bad key {secret}"))
    caplog.set_level(logging.DEBUG)
    p = provider(server, api_key_env="FAKE_KEY")
    with pytest.raises(ProviderError) as info:
        collect(p.stream(request(p.model)))
    assert server.requests[0].header("authorization") == f"Bearer {secret}"
    assert "TOPSECRET" not in str(info.value)
    assert "TOPSECRET" not in caplog.text
    assert "TOPSECRET" not in repr(p) and "TOPSECRET" not in repr(
        create_provider(p.model, Config())
    )


def test_missing_key_fails_at_start(tmp_path: Path, server: FakeOpenAIServer) -> None:
    m = model_for(server, "openai", api_key_env="ACTORCHAT_TEST_UNSET_KEY")
    cfg = make_config(tmp_path, models={"m": m}, default_model="m")
    with pytest.raises(ConfigurationError, match="ACTORCHAT_TEST_UNSET_KEY"):
        ChatSystem(cfg).start()


# -- a conversation with a failing backend ----------------------------------------------------


@pytest.fixture
def chat(tmp_path: Path, server: FakeOpenAIServer) -> Iterator[ChatSystem]:
    m = model_for(server, "openai", first_token_timeout=0.3, max_attempts=2)
    system = ChatSystem(make_config(tmp_path, models={"m": m}, default_model="m")).start()
    try:
        yield system
    finally:
        system.stop()


def _reply_events(chat: ChatSystem, cid: str, text: str) -> list[Any]:
    with chat.subscribe(cid, replay=False) as sub:
        chat.post_message(cid, text)
        _, seen = wait_for(sub, of_type(StreamComplete))
    return seen


@pytest.mark.parametrize(
    ("behavior", "code"),
    [
        (Behavior(status=500), "PROVIDER_ERROR"),
        (Behavior(status=529), "PROVIDER_ERROR"),
        (Behavior(status=401), "PROVIDER_ERROR"),
        (Behavior(ttfb=60.0), "TIMEOUT"),
        (Behavior(tokens=5, disconnect_after=2), "PROVIDER_ERROR"),
        (Behavior(tokens=5, cut_after=2), "PROVIDER_ERROR"),
    ],
)
def test_failing_backend_never_crashes_the_conversation(
    chat: ChatSystem, server: FakeOpenAIServer, tmp_path: Path, behavior: Behavior, code: str
) -> None:
    server.reset(behavior)
    cid = chat.start_conversation()
    seen = _reply_events(chat, cid, "please answer")
    errors = [e for e in seen if isinstance(e, ErrorEvent)]
    assert [e.code for e in errors] == [code]
    complete = seen[-1]
    assert complete.finish_reason == "error"
    partial = "".join(e.content for e in seen if isinstance(e, StreamContent))
    assert complete.message is not None and complete.message.content == partial

    # The user's message is stored, the actor never crashed, and it still works.
    history = chat.get_history(cid)
    assert [m.role for m in history] == ["user", "assistant"]
    assert history[0].content == "please answer"
    assert history[1].finish_reason == "error"
    stats = chat.get_stats(cid)
    assert stats.restarts == 0 and stats.errors == 1
    assert chat.stats()["crashes_total"] == 0

    server.reset(Behavior(tokens=["back", " again"]))
    assert chat.send_message(cid, "and now?", timeout=WAIT) == "back again"
    assert [m.content for m in chat.get_history(cid)][-2:] == ["and now?", "back again"]

    # What was stored survives a restart of the whole system.
    config = chat.config
    chat.stop()
    with ChatSystem(config) as again:
        stored = [(m.role, m.content) for m in again.get_history(cid)]
    assert stored[0] == ("user", "please answer")
    assert stored[-2:] == [("user", "and now?"), ("assistant", "back again")]


def test_send_message_raises_provider_error_and_queue_goes_on(
    chat: ChatSystem, server: FakeOpenAIServer
) -> None:
    server.reset(Behavior(status=500))
    cid = chat.start_conversation()
    with pytest.raises(ProviderError):
        chat.send_message(cid, "one", timeout=WAIT)
    server.reset(Behavior(tokens=["two"]))
    assert chat.send_message(cid, "two?", timeout=WAIT) == "two"


def test_cancel_through_the_conversation_closes_upstream(
    chat: ChatSystem, server: FakeOpenAIServer
) -> None:
    server.reset(Behavior(tokens=1000, delay=0.02))
    cid = chat.start_conversation()
    with chat.subscribe(cid, replay=False) as sub:
        chat.post_message(cid, "go on forever")
        first, _ = wait_for(sub, of_type(StreamContent, index=1))
        assert chat.cancel(cid, first.message_id) is True
        complete, _ = wait_for(sub, of_type(StreamComplete))
    assert complete.finish_reason == "cancelled"
    # No usage came from the backend: the prompt is the estimate of what was sent.
    m = chat.config.all_models()["m"]
    fitted = fit_context("", [ChatTurn("user", "go on forever")], m.context_window, m.max_tokens)
    assert complete.usage.prompt_tokens == fitted.prompt_tokens > 0
    [rec] = server.requests
    assert rec.done.wait(WAIT)
    assert rec.disconnected and rec.tokens_sent < 1000
    assert chat.get_history(cid)[-1].finish_reason == "cancelled"
