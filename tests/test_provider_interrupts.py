"""A backend that cuts streams short, as llama.cpp's server does, in a real ChatSystem.

llama.cpp's server (llama-cpp-python) interrupts the request it is running
when a new one arrives: the old stream gets a role-only chunk and
``[DONE]``, with no finish reason. That must never pass for a complete,
empty answer: before any text it is retried, after text the reply fails
with ``PROVIDER_ERROR`` and keeps its partial text. With
``max_concurrency = 1`` such a server queues instead, and every
conversation is answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actorchat import ChatSystem, ErrorEvent, StreamComplete, StreamContent
from actorchat.testing import Behavior, FakeAnthropicServer, FakeOpenAIServer, FakeServer
from tests.conftest import make_config
from tests.helpers import of_type, wait_for
from tests.provider_helpers import WAIT, model_for

KINDS = [("openai", FakeOpenAIServer), ("anthropic", FakeAnthropicServer)]
TOKENS = 8


@pytest.fixture(params=KINDS, ids=[k for k, _ in KINDS])
def interrupting(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer]]:
    kind, cls = request.param
    # Slow enough that a second request always arrives mid-stream.
    with cls(Behavior(tokens=TOKENS, delay=0.05), interrupts=True) as srv:
        yield kind, srv


def _system(tmp_path: Path, kind: str, server: FakeServer, concurrency: int) -> ChatSystem:
    m = model_for(server, kind, max_concurrency=concurrency, max_attempts=3)
    return ChatSystem(make_config(tmp_path, models={"m": m}, default_model="m")).start()


def _two_at_once(chat: ChatSystem, server: FakeServer) -> dict[str, list[Any]]:
    """Send to two conversations, the second once the first reply has text."""
    a, b = chat.start_conversation(), chat.start_conversation()
    subs = {cid: chat.subscribe(cid, replay=False) for cid in (a, b)}
    try:
        chat.post_message(a, "first question")
        _, early = wait_for(subs[a], of_type(StreamContent, index=0))
        chat.post_message(b, "second question")
        seen = {cid: wait_for(sub, of_type(StreamComplete))[1] for cid, sub in subs.items()}
    finally:
        for sub in subs.values():
            sub.close()
    seen[a] = early + seen[a]
    return seen


def test_an_interrupted_reply_fails_with_its_text_kept(
    tmp_path: Path, interrupting: tuple[str, FakeServer]
) -> None:
    kind, server = interrupting
    chat = _system(tmp_path, kind, server, concurrency=2)
    try:
        seen = _two_at_once(chat, server)
        a, b = list(seen)
        first, second = seen[a], seen[b]
        # The first reply had text when the second request cut it short.
        done = first[-1]
        assert done.finish_reason == "error"
        assert [e.code for e in first if isinstance(e, ErrorEvent)] == ["PROVIDER_ERROR"]
        partial = "".join(e.content for e in first if isinstance(e, StreamContent))
        assert partial and done.message is not None and done.message.content == partial
        # Nothing anywhere passed for a complete answer with less than all its text.
        for cid in (a, b):
            reply = chat.get_history(cid)[-1]
            assert reply.role == "assistant"
            if reply.finish_reason == "stop":
                assert len(reply.content.split()) == TOKENS
            else:
                assert reply.finish_reason == "error"
        assert chat.get_history(a)[-1].content == partial
        assert second[-1].finish_reason in ("stop", "error")
    finally:
        chat.stop()


def test_one_at_a_time_every_conversation_is_answered(
    tmp_path: Path, interrupting: tuple[str, FakeServer]
) -> None:
    kind, server = interrupting
    chat = _system(tmp_path, kind, server, concurrency=1)
    try:
        seen = _two_at_once(chat, server)
        for cid, events in seen.items():
            assert events[-1].finish_reason == "stop"
            assert not [e for e in events if isinstance(e, ErrorEvent)]
            text = "".join(e.content for e in events if isinstance(e, StreamContent))
            assert len(text.split()) == TOKENS
            assert chat.get_history(cid)[-1].content == text
        assert server.max_active == 1
        assert not any(r.interrupted for r in server.requests)
    finally:
        chat.stop()


def test_a_reply_cut_short_before_any_text_is_tried_again(
    tmp_path: Path, interrupting: tuple[str, FakeServer]
) -> None:
    kind, server = interrupting
    server.script(Behavior(tokens=TOKENS, cut_after=0))
    chat = _system(tmp_path, kind, server, concurrency=1)
    try:
        cid = chat.start_conversation()
        reply = chat.send_message(cid, "anyone there?", timeout=WAIT)
        assert len(reply.split()) == TOKENS
        assert len(server.requests) == 2
        assert [m.finish_reason for m in chat.get_history(cid)] == [None, "stop"]
    finally:
        chat.stop()
