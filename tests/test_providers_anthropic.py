"""The Anthropic provider against the fake Anthropic server: the Messages API's edge cases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actorchat import ChatSystem, ErrorEvent, ModelConfig, StreamComplete
from actorchat.errors import ProviderError, Timeout
from actorchat.providers import AnthropicProvider
from actorchat.testing import Behavior, FakeAnthropicServer, RecordedRequest
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

server, _fresh = fake_server_fixtures(FakeAnthropicServer)


def provider(server: FakeAnthropicServer, **fields: Any) -> AnthropicProvider:
    return AnthropicProvider(model_for(server, "anthropic", **fields))


def _frame(event: str, data: dict[str, Any]) -> tuple[str, bytes]:
    return "other", f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def test_streams_text_with_usage(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(tokens=["Bon", "jour", "!"], prompt_tokens=21))
    deltas, end = collect(provider(server).stream(request(model_for(server, "anthropic"))))
    assert deltas == ["Bon", "jour", "!"]  # pings and block starts add nothing
    assert end.finish_reason == "stop"
    assert (end.usage.prompt_tokens, end.usage.completion_tokens, end.usage.estimated) == (
        21,
        3,
        False,
    )


def test_request_shape(server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-test")
    server.api_key = "sk-ant-test"
    p = provider(
        server,
        api_key_env="FAKE_ANTHROPIC_KEY",
        model="claude-fake",
        temperature=0.2,
        max_tokens=300,
    )
    req = request(
        p.model,
        "third",
        system="You are terse.",
        history=[("assistant", "orphan greeting"), ("user", "first"), ("assistant", "")],
        max_tokens=300,
    )
    collect(p.stream(req))
    [rec] = server.requests
    assert rec.path == "/v1/messages"
    assert rec.header("x-api-key") == "sk-ant-test"
    assert rec.header("anthropic-version") == "2023-06-01"
    assert rec.header("authorization") is None
    body = rec.json
    assert body["model"] == "claude-fake"
    assert body["system"] == "You are terse."  # top level, not a message
    assert body["max_tokens"] == 300
    assert body["temperature"] == 0.2
    assert body["stream"] is True
    # Starts with the user; the empty failed reply is dropped and the two
    # user turns it separated are merged.
    assert body["messages"] == [{"role": "user", "content": "first\n\nthird"}]


def test_no_system_field_without_a_system_prompt(server: FakeAnthropicServer) -> None:
    p = provider(server)
    collect(p.stream(request(p.model)))
    assert "system" not in server.requests[0].json


def test_max_tokens_stop_reason_is_length(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(tokens=3, finish_reason="max_tokens"))
    _, end = collect(provider(server).stream(request(model_for(server, "anthropic"))))
    assert end.finish_reason == "length"


def test_missing_usage_is_estimated(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(tokens=4, usage=False))
    _, end = collect(provider(server).stream(request(model_for(server, "anthropic"))))
    assert end.usage.estimated is True
    assert end.usage.completion_tokens == 4
    assert end.usage.prompt_tokens > 0


class _Scripted(FakeAnthropicServer):
    """Sends exactly the frames a test gives, for shapes the knobs do not make."""

    frames: list[tuple[str, bytes]] = []

    def events(self, behavior: Behavior, request: RecordedRequest) -> Iterator[tuple[str, bytes]]:
        yield from self.frames


def _text(t: str) -> tuple[str, bytes]:
    return (
        "token",
        _frame(
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": t}},
        )[1],
    )


def test_cumulative_usage_the_last_message_delta_wins_and_thinking_is_skipped() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "role": "assistant",
            "usage": {
                "input_tokens": 10,
                "cache_read_input_tokens": 5,
                "cache_creation_input_tokens": 2,
                "output_tokens": 1,
            },
        },
    }
    thinking = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "thinking_delta", "thinking": "hmm"},
    }
    with _Scripted() as srv:
        srv.frames = [
            _frame("message_start", start),
            _frame("content_block_start", {"type": "content_block_start", "index": 0}),
            _frame("content_block_delta", thinking),
            _frame("ping", {"type": "ping"}),
            _text("A"),
            _frame(
                "message_delta",
                {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 1}},
            ),
            _text("B"),
            _frame(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 7},
                },
            ),
            _frame("message_stop", {"type": "message_stop"}),
        ]
        p = AnthropicProvider(model_for(srv, "anthropic"))
        deltas, end = collect(p.stream(request(p.model)))
    assert deltas == ["A", "B"]
    assert (end.usage.prompt_tokens, end.usage.completion_tokens) == (17, 7)
    assert end.usage.estimated is False


def test_end_without_message_stop_after_text_is_cut_short(server: FakeAnthropicServer) -> None:
    # Even with a stop_reason: without message_stop the stream did not finish.
    server.reset(Behavior(tokens=2, end_marker=False))
    got: list[str] = []
    with pytest.raises(ProviderError, match="before message_stop"):
        read_partial(provider(server).stream(request(model_for(server, "anthropic"))), got)
    assert got == ["w0", " w1"]
    assert len(server.requests) == 1  # text was yielded: never retried


def test_clean_end_without_message_stop_after_text_is_cut_short(
    server: FakeAnthropicServer,
) -> None:
    server.reset(Behavior(tokens=5, cut_after=2))
    got: list[str] = []
    with pytest.raises(ProviderError, match="before message_stop"):
        read_partial(provider(server).stream(request(model_for(server, "anthropic"))), got)
    assert got == ["w0", " w1"]
    assert len(server.requests) == 1


def test_clean_end_without_message_stop_before_text_is_retried(
    server: FakeAnthropicServer,
) -> None:
    server.reset(Behavior(tokens=2))
    server.script(Behavior(tokens=3, cut_after=0))
    deltas, end = collect(provider(server).stream(request(model_for(server, "anthropic"))))
    assert deltas == ["w0", " w1"] and end.finish_reason == "stop"
    assert len(server.requests) == 2


def test_an_honest_empty_answer_stays_empty(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(tokens=0))
    deltas, end = collect(provider(server).stream(request(model_for(server, "anthropic"))))
    assert deltas == [] and end.finish_reason == "stop"
    assert len(server.requests) == 1


def test_stream_that_just_stops_after_text_is_an_error(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(tokens=3, finish=False, end_marker=False))
    got: list[str] = []
    with pytest.raises(ProviderError, match="before message_stop"):
        read_partial(provider(server).stream(request(model_for(server, "anthropic"))), got)
    assert got == ["w0", " w1", " w2"]
    assert len(server.requests) == 1


def test_overloaded_error_event_mid_stream_keeps_text_and_is_not_retried(
    server: FakeAnthropicServer,
) -> None:
    server.reset(Behavior(tokens=5, error_after=3))
    got: list[str] = []
    with pytest.raises(ProviderError, match="overloaded_error"):
        read_partial(provider(server).stream(request(model_for(server, "anthropic"))), got)
    assert got == ["w0", " w1", " w2"]
    assert len(server.requests) == 1


def test_overloaded_error_event_before_text_is_retried(server: FakeAnthropicServer) -> None:
    server.script(Behavior(tokens=5, error_after=0))
    server.default = Behavior(tokens=["second", " try"])
    p = provider(server)
    deltas, _ = collect(p.stream(request(p.model)))
    assert deltas == ["second", " try"]
    assert len(server.requests) == 2 and p.stats()["retries"] == 1


def test_invalid_request_error_event_is_not_retried(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(tokens=5, error_after=0, error_type="invalid_request_error"))
    with pytest.raises(ProviderError, match="invalid_request_error"):
        collect(provider(server).stream(request(model_for(server, "anthropic"))))
    assert len(server.requests) == 1


def test_http_529_is_retried_with_retry_after(server: FakeAnthropicServer) -> None:
    server.script(Behavior(status=529, retry_after="0.3"))
    server.default = Behavior(tokens=["up"])
    p = provider(server, options={"backoff_base": 0.001})
    deltas, _ = collect(p.stream(request(p.model)))
    assert deltas == ["up"]
    first, second = server.requests
    assert first.status == 529
    assert second.received_at - first.received_at >= 0.3


def test_http_529_every_time_gives_up(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(status=529))
    p = provider(server, max_attempts=3)
    with pytest.raises(ProviderError, match=r"HTTP 529.*overloaded_error.*3 attempts"):
        collect(p.stream(request(p.model)))
    assert len(server.requests) == 3


def test_pings_do_not_hold_off_the_first_token_timeout(server: FakeAnthropicServer) -> None:
    server.reset(Behavior(tokens=3, first_token_delay=60.0, ping=True))
    p = provider(server, first_token_timeout=0.3, idle_timeout=60.0)
    started = time.monotonic()
    with pytest.raises(Timeout):
        collect(p.stream(request(p.model)))
    assert time.monotonic() - started < WAIT
    assert server.requests[0].done.wait(WAIT) and server.requests[0].disconnected


def test_base_url_and_check(server: FakeAnthropicServer) -> None:
    assert AnthropicProvider(ModelConfig("c", provider="anthropic")).url == (
        "https://api.anthropic.com/v1/messages"
    )
    p = provider(server)
    assert p.url == server.base_url + "/v1/messages"
    assert p.check() is True


def test_a_conversation_on_anthropic_with_an_overloaded_backend(
    tmp_path: Path, server: FakeAnthropicServer
) -> None:
    m = model_for(server, "anthropic", max_attempts=2)
    cfg = make_config(
        tmp_path, models={"claude": m}, default_model="claude", system_prompt="Be kind."
    )
    with ChatSystem(cfg) as chat:
        server.reset(Behavior(status=529))
        cid = chat.start_conversation()
        with chat.subscribe(cid, replay=False) as sub:
            chat.post_message(cid, "hello?")
            error, _ = wait_for(sub, of_type(ErrorEvent))
            complete, _ = wait_for(sub, of_type(StreamComplete))
        assert error.code == "PROVIDER_ERROR"
        assert complete.finish_reason == "error"
        server.reset(Behavior(tokens=["Hi", "!"]))
        assert chat.send_message(cid, "hello again", timeout=WAIT) == "Hi!"
        assert server.requests[-1].json["system"] == "Be kind."
        history = chat.get_history(cid)
        assert [m.content for m in history if m.role == "user"] == ["hello?", "hello again"]
        assert chat.get_stats(cid).restarts == 0
