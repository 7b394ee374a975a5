"""Fitting the context window : recent turns that fit, never an error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorchat import ChatSystem
from actorchat.providers import ChatTurn, estimate_tokens, fit_context
from actorchat.providers._context import MESSAGE_OVERHEAD
from actorchat.testing import Behavior, FakeAnthropicServer, FakeOpenAIServer
from tests.conftest import make_config
from tests.provider_helpers import WAIT, model_for


def _turns(n: int, size: int) -> list[ChatTurn]:
    return [
        ChatTurn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "x" * size) for i in range(n)
    ]


def _cost(system: str, turns: list[ChatTurn]) -> int:
    total = sum(estimate_tokens(t.content) + MESSAGE_OVERHEAD for t in turns)
    if system:
        total += estimate_tokens(system) + MESSAGE_OVERHEAD
    return total


def test_estimate_is_three_bytes_per_token_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 2
    assert estimate_tokens("x" * 300) == 100
    assert estimate_tokens("日本語") == 3  # 9 bytes of UTF-8


def test_short_history_is_sent_whole() -> None:
    turns = _turns(4, 10)
    fitted = fit_context("sys", turns, context_window=8192, max_tokens=1024)
    assert fitted.messages == turns
    assert fitted.system_prompt == "sys"
    assert fitted.max_tokens == 1024
    assert fitted.dropped == 0


def test_long_history_keeps_the_most_recent_turns() -> None:
    turns = _turns(200, 300)  # ~100 tokens each, ~20,000 in all
    fitted = fit_context("You are helpful.", turns, context_window=2048, max_tokens=512)
    assert fitted.messages == turns[-len(fitted.messages) :]
    assert fitted.messages[-1] == turns[-1]
    assert 5 < len(fitted.messages) < 200
    assert fitted.dropped == 200 - len(fitted.messages)
    assert fitted.system_prompt == "You are helpful."
    assert _cost(fitted.system_prompt, fitted.messages) + fitted.max_tokens <= 2048


def test_an_overlong_last_message_is_cut_to_its_tail_not_refused() -> None:
    text = "START " + "y" * 30_000 + " the actual question?"
    fitted = fit_context("", [ChatTurn("user", text)], context_window=2048, max_tokens=1024)
    [only] = fitted.messages
    assert only.content.endswith("the actual question?")
    assert not only.content.startswith("START")
    assert _cost("", fitted.messages) + fitted.max_tokens <= 2048


def test_a_huge_system_prompt_keeps_its_head_and_leaves_room() -> None:
    system = "RULES: " + "z" * 50_000
    fitted = fit_context(system, _turns(3, 10), context_window=1024, max_tokens=256)
    assert fitted.system_prompt.startswith("RULES: ")
    assert len(fitted.system_prompt) < len(system)
    assert fitted.messages[-1].content.startswith("turn 2")
    assert _cost(fitted.system_prompt, fitted.messages) + fitted.max_tokens <= 1024


def test_max_tokens_near_the_window_still_leaves_a_prompt() -> None:
    fitted = fit_context("", _turns(3, 30), context_window=2048, max_tokens=4096)
    assert fitted.messages  # the reply's reserve is at most half the window
    assert _cost("", fitted.messages) + fitted.max_tokens <= 2048


def test_empty_messages_are_skipped() -> None:
    turns = [ChatTurn("user", "a"), ChatTurn("assistant", ""), ChatTurn("user", "b")]
    fitted = fit_context("", turns, context_window=4096, max_tokens=100)
    assert [t.content for t in fitted.messages] == ["a", "b"]


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=30),
    system=st.text(max_size=3000),
    window=st.integers(16, 9000),
    max_tokens=st.integers(1, 10_000),
)
def test_never_an_error_and_always_within_the_window(
    sizes: list[int], system: str, window: int, max_tokens: int
) -> None:
    turns = [ChatTurn("user", "é" * n + "?") for n in sizes]
    fitted = fit_context(system, turns, window, max_tokens)
    assert fitted.messages, "the newest turn is always sent"
    assert fitted.messages[-1].content.endswith("?")
    assert fitted.max_tokens >= 1
    if window >= 64:
        assert fitted.prompt_tokens + fitted.max_tokens <= window
        assert _cost(fitted.system_prompt, fitted.messages) <= fitted.prompt_tokens


# -- end to end: what the backend receives ------------------------------------------------


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeOpenAIServer, FakeAnthropicServer]]:
    with FakeOpenAIServer() as o, FakeAnthropicServer() as a:
        yield o, a  # type: ignore[misc]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_long_conversation_never_overflows_a_2048_token_window(
    tmp_path: Path, servers: tuple[FakeOpenAIServer, FakeAnthropicServer], kind: str
) -> None:
    server = servers[0] if kind == "openai" else servers[1]
    server.reset(Behavior(tokens=["fine"]))
    # llama.cpp's server runs the small model with a 2,048-token window.
    m = model_for(server, kind, context_window=2048, max_tokens=512)
    cfg = make_config(tmp_path, models={"small": m}, default_model="small")
    with ChatSystem(cfg) as chat:
        cid = chat.start_conversation(system_prompt="Answer briefly.")
        for i in range(30):
            assert chat.send_message(cid, f"message {i}: " + "word " * 120, timeout=WAIT) == "fine"
    last = server.requests[-1].json
    if kind == "openai":
        messages = last["messages"]
        assert messages[0] == {"role": "system", "content": "Answer briefly."}
        sent = [ChatTurn(x["role"], x["content"]) for x in messages[1:]]
        reply_budget = last["max_tokens"]
    else:
        assert last["system"] == "Answer briefly."
        sent = [ChatTurn(x["role"], x["content"]) for x in last["messages"]]
        reply_budget = last["max_tokens"]
    assert sent[-1].content.startswith("message 29: ")
    assert len(sent) < 60  # older turns were dropped...
    assert _cost("Answer briefly.", sent) + reply_budget <= 2048  # ...to fit the window
    assert all(r.status == 200 for r in server.requests)
