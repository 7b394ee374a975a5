"""The OpenAI-compatible provider against the fake OpenAI server: the format's edge cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from actorchat import ModelConfig
from actorchat.config import Config
from actorchat.errors import ConfigurationError, ProviderError
from actorchat.providers import OpenAIProvider, create_provider
from actorchat.providers._context import estimate_tokens
from actorchat.testing import Behavior, FakeOpenAIServer
from tests.provider_helpers import collect, fake_server_fixtures, model_for, read_partial, request

server, _fresh = fake_server_fixtures(FakeOpenAIServer)


def provider(server: FakeOpenAIServer, **fields: object) -> OpenAIProvider:
    return OpenAIProvider(model_for(server, "openai", **fields))  # type: ignore[arg-type]


def test_streams_text_and_exact_usage(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=["Hel", "lo", ", world"], prompt_tokens=17))
    deltas, end = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert deltas == ["Hel", "lo", ", world"]  # the role-only first delta adds nothing
    assert end.finish_reason == "stop"
    assert (end.usage.prompt_tokens, end.usage.completion_tokens) == (17, 3)
    assert end.usage.estimated is False


def test_a_lone_surrogate_from_the_model_becomes_a_replacement_character(
    server: FakeOpenAIServer,
) -> None:
    # JSON can escape half a UTF-16 pair; stored as it came, it failed the reply.
    server.reset(Behavior(tokens=["caf", "\ud83d", "\u00e9 \U0001f600"]))
    deltas, _ = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert deltas == ["caf", "\ufffd", "\u00e9 \U0001f600"]


def test_request_body_and_headers(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-123")
    server.api_key = "sk-test-123"
    p = provider(server, api_key_env="FAKE_OPENAI_KEY", model="gpt-fake", temperature=0.3)
    req = request(
        p.model, "question?", system="Be brief.", history=[("user", "q1"), ("assistant", "a1")]
    )
    collect(p.stream(req))
    [rec] = server.requests
    assert rec.path == "/v1/chat/completions"
    assert rec.header("authorization") == "Bearer sk-test-123"
    assert rec.header("accept") == "text/event-stream"
    body = rec.json
    assert body["model"] == "gpt-fake"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 1024
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "question?"},
    ]


def test_key_from_file_and_options(server: FakeOpenAIServer, tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text("sk-from-file\n")
    server.api_key = "sk-from-file"
    p = provider(
        server,
        api_key_file=str(keyfile),
        options={
            "max_tokens_field": "max_completion_tokens",
            "include_usage": False,
            "extra_body": {"top_p": 0.5},
            "headers": {"X-Title": "actorchat"},
        },
    )
    deltas, end = collect(p.stream(request(p.model)))
    assert deltas
    body = server.requests[0].json
    assert "max_tokens" not in body and body["max_completion_tokens"] == 1024
    assert "stream_options" not in body
    assert body["top_p"] == 0.5
    assert server.requests[0].header("x-title") == "actorchat"
    assert end.usage.estimated is True  # no usage asked for, none sent


def test_wrong_key_is_not_retried_and_not_leaked(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-wrong-SECRET")
    server.api_key = "sk-right"
    p = provider(server, api_key_env="FAKE_OPENAI_KEY")
    with pytest.raises(ProviderError, match="HTTP 401") as info:
        collect(p.stream(request(p.model)))
    assert len(server.requests) == 1
    assert "SECRET" not in str(info.value)
    assert "SECRET" not in repr(p)


@pytest.mark.parametrize("style", ["empty", "null", "final"])
def test_usage_wherever_the_server_puts_it(server: FakeOpenAIServer, style: str) -> None:
    server.reset(Behavior(tokens=4, usage_style=style, prompt_tokens=9))
    _, end = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert (end.usage.prompt_tokens, end.usage.completion_tokens, end.usage.estimated) == (
        9,
        4,
        False,
    )


def test_missing_usage_is_counted_and_marked_estimated(server: FakeOpenAIServer) -> None:
    # llama.cpp's server sends no usage even when asked.
    server.reset(Behavior(tokens=6, usage=False))
    m = model_for(server, "openai")
    deltas, end = collect(provider(server).stream(request(m, "count me", system="sys")))
    assert len(deltas) == 6
    assert end.usage.estimated is True
    assert end.usage.completion_tokens == 6
    assert end.usage.prompt_tokens >= estimate_tokens("count me") + estimate_tokens("sys")


def test_finish_reason_length(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=3, finish_reason="length"))
    _, end = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert end.finish_reason == "length"


def test_unknown_finish_reason_maps_to_stop(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=2, finish_reason="content_filter"))
    _, end = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert end.finish_reason == "stop"


def test_end_without_done_marker_after_finish_reason_is_complete(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=3, end_marker=False))
    deltas, end = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert len(deltas) == 3 and end.finish_reason == "stop"


def test_done_without_finish_reason_after_text_is_cut_short(server: FakeOpenAIServer) -> None:
    # [DONE] with no finish_reason: the upstream stopped before the model did.
    server.reset(Behavior(tokens=5, cut_after=3, usage=False))
    got: list[str] = []
    with pytest.raises(ProviderError, match="cut short"):
        read_partial(provider(server).stream(request(model_for(server, "openai"))), got)
    assert got == ["w0", " w1", " w2"]
    assert len(server.requests) == 1  # text was yielded: never retried


def test_done_without_finish_reason_before_text_is_retried(server: FakeOpenAIServer) -> None:
    # What llama.cpp's server sends for a request a newer one interrupted:
    # a role-only chunk, then [DONE]. Not an empty answer: tried again.
    server.reset(Behavior(tokens=2))
    server.script(Behavior(tokens=3, cut_after=0, usage=False))
    deltas, end = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert deltas == ["w0", " w1"] and end.finish_reason == "stop"
    assert len(server.requests) == 2


def test_done_without_finish_reason_every_time_gives_up(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=3, cut_after=0))
    with pytest.raises(ProviderError, match=r"cut short.*gave up after 3 attempts"):
        collect(provider(server, max_attempts=3).stream(request(model_for(server, "openai"))))
    assert len(server.requests) == 3


def test_an_honest_empty_answer_stays_empty(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=0, finish_reason="stop"))
    deltas, end = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert deltas == [] and end.finish_reason == "stop"
    assert len(server.requests) == 1


def test_stream_that_just_stops_after_text_is_an_error(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=3, finish=False, end_marker=False, usage=False))
    got: list[str] = []
    with pytest.raises(ProviderError, match="ended before"):
        read_partial(provider(server).stream(request(model_for(server, "openai"))), got)
    assert got == ["w0", " w1", " w2"]
    assert len(server.requests) == 1  # text was yielded: never retried


def test_mid_stream_error_object_after_text(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=5, error_after=2, error_type="server_error"))
    got: list[str] = []
    with pytest.raises(ProviderError, match="server_error"):
        read_partial(provider(server).stream(request(model_for(server, "openai"))), got)
    assert got == ["w0", " w1"]
    assert len(server.requests) == 1


def test_mid_stream_error_before_text_is_retried(server: FakeOpenAIServer) -> None:
    server.script(Behavior(tokens=5, error_after=0, error_type="server_error"))
    server.default = Behavior(tokens=["ok"])
    deltas, _ = collect(provider(server).stream(request(model_for(server, "openai"))))
    assert deltas == ["ok"]
    assert len(server.requests) == 2


def test_mid_stream_invalid_request_error_is_not_retried(server: FakeOpenAIServer) -> None:
    server.reset(Behavior(tokens=5, error_after=0, error_type="invalid_request_error"))
    with pytest.raises(ProviderError, match="invalid_request_error"):
        collect(provider(server).stream(request(model_for(server, "openai"))))
    assert len(server.requests) == 1


def test_non_json_lines_are_skipped(server: FakeOpenAIServer) -> None:
    class Noisy(FakeOpenAIServer):
        def events(self, behavior, request):  # type: ignore[no-untyped-def]
            yield "other", b": keep-alive comment\n\n"
            yield "other", b"data: not json at all\n\n"
            yield from super().events(behavior, request)

    with Noisy(Behavior(tokens=["a", "b"])) as noisy:
        deltas, _ = collect(
            OpenAIProvider(model_for(noisy, "openai")).stream(request(model_for(noisy, "openai")))
        )
    assert deltas == ["a", "b"]


def test_base_url_forms(server: FakeOpenAIServer) -> None:
    trailing = provider(server, base_url=server.base_url + "/")
    full = provider(server, base_url=server.base_url + "/chat/completions")
    assert trailing.url == full.url == server.base_url + "/chat/completions"
    assert OpenAIProvider(ModelConfig("x", provider="openai")).url == (
        "https://api.openai.com/v1/chat/completions"
    )


def test_connection_is_reused_between_replies(server: FakeOpenAIServer) -> None:
    p = provider(server)
    for _ in range(3):
        collect(p.stream(request(p.model)))
    assert len(server.requests) == 3
    # One TCP connection served all three: the end of each body was read.
    assert len({r.peer for r in server.requests}) == 1


def test_check_reports_reachability(server: FakeOpenAIServer) -> None:
    assert provider(server).check() is True
    with FakeOpenAIServer() as gone:
        dead = OpenAIProvider(model_for(gone, "openai", connect_timeout=2.0))
        assert dead.check() is True
    assert dead.check() is True  # a readiness probe's answer is reused a moment
    dead.CHECK_TTL = 0.0
    assert dead.check() is False


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="NO_SUCH_VAR"):
        OpenAIProvider(ModelConfig("x", provider="openai", api_key_env="NO_SUCH_VAR"))
    with pytest.raises(ConfigurationError, match="base_url"):
        OpenAIProvider(ModelConfig("x", provider="openai", base_url="ftp://nope"))
    with pytest.raises(ConfigurationError, match="max_tokens_field"):
        OpenAIProvider(ModelConfig("x", provider="openai", options={"max_tokens_field": "n"}))
    with pytest.raises(ConfigurationError, match="api_key_file"):
        OpenAIProvider(ModelConfig("x", provider="openai", api_key_file="/nonexistent/key"))


def test_registered_and_wrapped_in_limits(server: FakeOpenAIServer) -> None:
    p = create_provider(model_for(server, "openai"), Config())
    assert p.name == "openai"
    stats = p.stats()  # type: ignore[attr-defined]
    assert stats["model"] == "m" and stats["in_flight"] == 0


def test_models_from_a_config_file(
    tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actorchat import ChatSystem, load_config
    from actorchat.providers import AnthropicProvider, LimitedProvider

    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-from-env")
    server.api_key = "sk-from-env"
    server.reset(Behavior(tokens=["from", " config"]))
    conf = tmp_path / "actorchat.toml"
    conf.write_text(
        f"""
default_model = "fast"
system_prompt = "Default prompt."
data_dir = "{tmp_path / "data"}"
idle_timeout = 0

[models.fast]
provider = "openai"
base_url = "{server.base_url}"
model = "gpt-fake"
api_key_env = "FAKE_OPENAI_KEY"
max_tokens = 77
temperature = 0.5
max_concurrency = 3
requests_per_minute = 600
backoff_base = 0.01

[models.claude]
provider = "anthropic"
base_url = "http://127.0.0.1:9"
model = "claude-fake"
"""
    )
    cfg = load_config(conf, env={})
    with ChatSystem(cfg) as chat:
        fast, claude = chat.providers["fast"], chat.providers["claude"]
        assert isinstance(fast, LimitedProvider) and isinstance(fast.inner, OpenAIProvider)
        assert isinstance(claude, LimitedProvider) and isinstance(claude.inner, AnthropicProvider)
        assert fast.inner.backoff_base == 0.01  # unknown keys are provider options
        assert fast.stats()["max_concurrency"] == 3
        cid = chat.start_conversation()
        assert chat.send_message(cid, "hi", timeout=20) == "from config"
    body = server.requests[0].json
    assert body["model"] == "gpt-fake"
    assert body["max_tokens"] == 77 and body["temperature"] == 0.5
    assert body["messages"][0] == {"role": "system", "content": "Default prompt."}
