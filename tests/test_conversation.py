"""Conversation behaviour through the public API, on real greenlets and SQLite."""

from __future__ import annotations

import gevent
import pytest

from actorchat import (
    ChatSystem,
    MessageReceived,
    StreamComplete,
    StreamContent,
    StreamStart,
)
from actorchat.actors import Cancel, Send
from actorchat.config import ModelConfig
from actorchat.errors import InvalidRequest, MessageTooLong, NotFound
from actorchat.providers import ChatTurn, GenerationRequest, MockProvider
from tests.helpers import WAIT, of_type, wait_for


def expected_reply(context: list[tuple[str, str]], tokens: int = 12, attempt: int = 0) -> str:
    mock = MockProvider(tokens=tokens, delay_ms=0)
    req = GenerationRequest(
        model=ModelConfig("mock"),
        messages=[ChatTurn(r, c) for r, c in context],
        attempt=attempt,
        max_tokens=1024,
    )
    return "".join(mock.reply_tokens(req))


def test_send_message_returns_the_reply_and_history_holds_both(system: ChatSystem) -> None:
    cid = system.start_conversation(title="first")
    reply = system.send_message(cid, "Hello there", timeout=WAIT)
    assert reply == expected_reply([("user", "Hello there")])
    history = system.get_history(cid)
    assert [(m.role, m.content) for m in history] == [
        ("user", "Hello there"),
        ("assistant", reply),
    ]
    assert history[1].finish_reason == "stop"
    assert history[1].usage is not None and history[1].usage.completion_tokens == 12


def test_same_history_same_reply_whatever_the_conversation(system: ChatSystem) -> None:
    a, b = system.start_conversation(), system.start_conversation()
    assert system.send_message(a, "same words") == system.send_message(b, "same words")


def test_strict_order_under_concurrent_senders(system: ChatSystem) -> None:
    cid = system.start_conversation()
    acked: dict[int, list[int]] = {s: [] for s in range(8)}

    def sender(s: int) -> None:
        for k in range(10):
            msg = system.post_message(cid, f"s{s}-{k} text", sender_id=f"user{s}")
            acked[s].append(msg.turn)

    gevent.joinall([gevent.spawn(sender, s) for s in range(8)], timeout=WAIT, raise_error=True)
    for turns in acked.values():
        assert turns == sorted(turns), "each sender's messages keep their order"
    # Wait for the last reply, then check turn order u1 a1 u2 a2 ...
    sub = system.subscribe(cid)
    last_turn = max(max(t) for t in acked.values())
    history = system.get_history(cid)
    if not any(m.role == "assistant" and m.turn == last_turn for m in history):
        wait_for(
            sub,
            lambda e: (
                isinstance(e, StreamComplete)
                and e.message is not None
                and e.message.turn == last_turn
            ),
        )
        history = system.get_history(cid)
    assert len(history) == 160
    context: list[tuple[str, str]] = []
    for i in range(0, len(history), 2):
        user, reply = history[i], history[i + 1]
        assert (user.role, reply.role) == ("user", "assistant")
        assert user.turn == reply.turn
        context.append(("user", user.content))
        assert reply.content == expected_reply(context), "reply n sees exactly turns before it"
        context.append(("assistant", reply.content))


def test_messages_sent_during_a_reply_are_queued_and_answered_in_order(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(mock_delay_ms=5.0)
    cid = system.start_conversation()
    sub = system.subscribe(cid)
    first = system.post_message(cid, "one")
    wait_for(sub, of_type(StreamContent))  # the first reply is streaming
    second = system.post_message(cid, "two")
    third = system.post_message(cid, "three")
    events: list = []
    for user in (first, second, third):
        _, seen = wait_for(
            sub,
            lambda e, u=user: (
                isinstance(e, StreamComplete) and e.message is not None and e.message.turn == u.turn
            ),
        )
        events.extend(seen)
    starts = [e.reply_to for e in events if isinstance(e, StreamStart)]
    assert starts[-2:] == [second.id, third.id]
    received = [e.message.id for e in events if isinstance(e, MessageReceived)]
    assert received == [second.id, third.id]
    history = system.get_history(cid)
    assert [m.content for m in history if m.role == "user"] == ["one", "two", "three"]
    assert [m.role for m in history] == ["user", "assistant"] * 3


def test_stream_events_are_ordered_gap_free_and_match_history(system: ChatSystem) -> None:
    cid = system.start_conversation()
    events = list(system.stream_message(cid, "count the chunks", timeout=WAIT))
    assert isinstance(events[0], MessageReceived)
    assert isinstance(events[1], StreamStart)
    deltas = [e for e in events if isinstance(e, StreamContent)]
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert isinstance(events[-1], StreamComplete)
    assert sum(isinstance(e, StreamComplete) for e in events) == 1
    text = "".join(d.content for d in deltas)
    assert system.get_history(cid)[-1].content == text


@pytest.mark.parametrize("delay_ms", [0.0, 1.0])
def test_every_token_is_its_own_delta_with_or_without_delay(make_system, delay_ms: float) -> None:  # type: ignore[no-untyped-def]
    # With no delay the mock hands its reply over as one batch; subscribers
    # must not see the difference.
    system = make_system(mock_tokens=15, mock_delay_ms=delay_ms)
    cid = system.start_conversation()
    events = list(system.stream_message(cid, "one token at a time", timeout=WAIT))
    deltas = [e for e in events if isinstance(e, StreamContent)]
    assert [d.index for d in deltas] == list(range(15))
    assert all(d.first_index is None for d in deltas)
    expected = MockProvider(tokens=15, delay_ms=0).reply_tokens(
        GenerationRequest(ModelConfig("mock"), [ChatTurn("user", "one token at a time")])
    )
    assert [d.content for d in deltas] == expected
    assert system.get_stats(cid).tokens_out == 15


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_cancel_behind_an_instant_reply_finds_nothing_to_cancel(make_system, store: str) -> None:  # type: ignore[no-untyped-def]
    # A model that never waits has streamed the whole reply before the actor
    # reads the cancel: cancel says so, and the reply ends "stop", whole.
    system = make_system(store=store, mock_tokens=5)
    cid = system.start_conversation()
    sub = system.subscribe(cid)
    ref = system._route(cid)
    ref.tell(Send("hello", "local"))
    assert ref.ask(Cancel(None), timeout=WAIT) is False
    complete, _ = wait_for(sub, of_type(StreamComplete))
    assert isinstance(complete, StreamComplete) and complete.finish_reason == "stop"
    assert complete.message is not None
    assert complete.message.content == expected_reply([("user", "hello")], tokens=5)


def test_cancel_keeps_the_partial_text(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(mock_delay_ms=20.0, mock_tokens=200)
    cid = system.start_conversation()
    sub = system.subscribe(cid)
    system.post_message(cid, "a long answer please")
    start, _ = wait_for(sub, of_type(StreamStart))
    wait_for(sub, of_type(StreamContent, index=2))
    # The actor keeps answering while it streams.
    assert system.get_stats(cid).state == "generating"
    assert system.cancel(cid, start.message_id)  # type: ignore[attr-defined]
    done, seen = wait_for(sub, of_type(StreamComplete))
    assert done.finish_reason == "cancelled"  # type: ignore[attr-defined]
    text = "".join(e.content for e in seen if isinstance(e, StreamContent))
    reply = system.get_history(cid)[-1]
    assert reply.finish_reason == "cancelled"
    assert reply.content.startswith(text) and 0 < len(reply.content.split()) < 200
    assert not system.cancel(cid), "nothing left to cancel"
    # The prompt was sent and counts as for any reply: the mock counts words.
    assert reply.usage is not None and reply.usage.estimated
    words = ["a", "long", "answer", "please"]
    assert reply.usage.prompt_tokens == len(words) + len(system.config.system_prompt.split())
    assert done.usage.prompt_tokens == reply.usage.prompt_tokens  # type: ignore[attr-defined]


def test_regenerate_replaces_the_reply_and_keeps_the_old_version(system: ChatSystem) -> None:
    cid = system.start_conversation()
    first = system.send_message(cid, "tell me something")
    system.send_message(cid, "and more")
    user1 = system.get_history(cid)[0]
    new = system.regenerate(cid, user1.id, wait=True, timeout=WAIT)
    assert new.content != first
    history = system.get_history(cid)
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1].id == new.id and history[1].turn == user1.turn
    versions = system.messages(cid, versions=True)
    old = [m for m in versions if m.superseded]
    assert [m.content for m in old] == [first]
    # Default target: the last user message.
    again = system.regenerate(cid, wait=True, timeout=WAIT)
    assert again.turn == history[2].turn


def test_bad_input_gets_clear_errors_and_loses_nothing(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(max_content_chars=100)
    cid = system.start_conversation()
    with pytest.raises(MessageTooLong):
        system.send_message(cid, "x" * 101)
    with pytest.raises(InvalidRequest):
        system.send_message(cid, "   ")
    with pytest.raises(InvalidRequest):
        system.start_conversation(model="no-such-model")
    with pytest.raises(NotFound):
        system.send_message("does-not-exist", "hello", timeout=WAIT)
    with pytest.raises(NotFound):
        system.regenerate(cid, "no-such-message", timeout=WAIT)
    assert system.send_message(cid, "still fine", timeout=WAIT)
    assert len(system.get_history(cid)) == 2


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_an_unknown_conversation_is_not_found_with_either_store(
    make_system, store: str, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    # The memory store answers without yielding: the actor activated for an
    # unknown id is gone before the request reaches it. Still NotFound, and
    # the expected error is not logged as a traceback.
    system = make_system(store=store)
    caplog.set_level("INFO")
    with pytest.raises(NotFound):
        system.get_history("ghost")
    with pytest.raises(NotFound):
        system.send_message("ghost", "hello", timeout=WAIT)
    with pytest.raises(NotFound):
        system.get_stats("ghost")
    assert not [r for r in caplog.records if r.exc_info], "expected errors logged as tracebacks"


def test_stats_count_messages_tokens_and_time_to_first_token(system: ChatSystem) -> None:
    cid = system.start_conversation()
    system.send_message(cid, "one")
    system.send_message(cid, "two")
    stats = system.get_stats(cid)
    assert stats.messages == 4 and stats.user_messages == 2 and stats.replies == 2
    assert stats.tokens_out == 24 and stats.tokens_in > 0
    assert stats.time_to_first_token is not None and stats.time_to_first_token >= 0
    assert stats.state == "idle" and stats.restarts == 0


def test_failing_backend_ends_the_reply_with_error_and_keeps_the_conversation(
    make_system,  # type: ignore[no-untyped-def]
) -> None:
    from actorchat.errors import ProviderError

    system = make_system(
        models={"flaky": ModelConfig("flaky", provider="mock", options={"failure_rate": 1.0})}
    )
    cid = system.start_conversation(model="flaky")
    sub = system.subscribe(cid)
    with pytest.raises(ProviderError):
        system.send_message(cid, "will fail", timeout=WAIT)
    done, seen = wait_for(sub, of_type(StreamComplete))
    assert done.finish_reason == "error"  # type: ignore[attr-defined]
    assert any(getattr(e, "code", None) == "PROVIDER_ERROR" for e in seen)
    history = system.get_history(cid)
    assert history[0].content == "will fail" and history[1].finish_reason == "error"
    # Not retried automatically; the user can regenerate with another model.
    reply = system.regenerate(cid, model="mock", wait=True, timeout=WAIT)
    assert reply.finish_reason == "stop"
    assert system.get_stats(cid).restarts == 0


def test_broadcast_to_1000_conversations_returns_1000_correct_replies(system: ChatSystem) -> None:
    ids = system.start_conversations(1000)
    assert system.conversation_count() >= 1000
    results = system.broadcast_message(ids, "What's the meaning of life?", timeout=60)
    expected = expected_reply([("user", "What's the meaning of life?")])
    assert len(results) == 1000
    assert all(results[cid] == expected for cid in ids)


def test_broadcast_reports_each_failure_and_ignores_duplicates(system: ChatSystem) -> None:
    ids = system.start_conversations(3)
    results = system.broadcast_message([*ids, ids[0], "missing-id"], "hello", timeout=WAIT)
    assert set(results) == {*ids, "missing-id"}
    assert isinstance(results["missing-id"], NotFound)
    assert all(isinstance(results[cid], str) for cid in ids)
