"""The conversation's rules without an actor: no greenlets, no store, no bus.

``ConversationCore`` decides ordering, queueing, what a regeneration
replaces, what a finished reply looks like; ``Generation`` carries a reply's
lifecycle as a state machine. These tests drive both directly.
"""

from __future__ import annotations

import itertools

import pytest

from actorchat._records import Conversation, Message, Usage
from actorchat.actors import (
    ConversationCore,
    Generation,
    IllegalTransition,
    ReplyState,
    Turn,
)
from actorchat.config import ModelConfig
from actorchat.errors import InvalidRequest, NotFound, Overloaded
from actorchat.providers import ChatTurn, GenerationRequest, MockProvider

S = ReplyState


def _core(history: list[Message] | None = None, max_queued: int = 3) -> ConversationCore:
    return ConversationCore(Conversation("c1", "alice", created_at=1.0), history or [], max_queued)


def _user(core: ConversationCore, text: str) -> Message:
    message = core.new_user_message(text, "alice", 10.0)
    core.add(message)
    return message


def _reply(core: ConversationCore, user: Message, text: str) -> Message:
    gen = core.begin(Turn(user, "mock"), 11.0)
    core.deltas(gen, (text,))
    gen.to(S.STREAMED)
    message = core.finish(gen, "stop", Usage(3, 1), 12.0)
    core.add(message)
    core.current = None
    return message


# -- ordering and queueing ---------------------------------------------------------


def test_turns_are_numbered_in_arrival_order_and_history_reads_u1_a1_u2_a2() -> None:
    core = _core()
    u1 = _user(core, "one")
    u2 = _user(core, "two")  # arrives while the first is being answered
    assert (u1.turn, u2.turn) == (1, 2)
    a1 = _reply(core, u1, "first answer")
    assert [m.id for m in core.history] == [u1.id, a1.id, u2.id]
    assert [m.role for m in core.history] == ["user", "assistant", "user"]


def test_a_reply_is_generated_from_exactly_the_turns_before_it() -> None:
    core = _core()
    u1 = _user(core, "one")
    u2 = _user(core, "two")
    _reply(core, u1, "first answer")
    context = core.context(Turn(u2, "mock"))
    assert context == [
        ChatTurn("user", "one"),
        ChatTurn("assistant", "first answer"),
        ChatTurn("user", "two"),
    ]
    # and the first reply's context never sees the second message
    assert core.context(Turn(u1, "mock")) == [ChatTurn("user", "one")]


def test_the_queue_bound_counts_messages_still_being_stored() -> None:
    core = _core(max_queued=2)
    core.queue.append(Turn(_user(core, "queued"), "mock"))
    with pytest.raises(Overloaded, match="2 messages are already waiting"):
        core.new_user_message("too many", "alice", 1.0, pending=["being stored"])
    assert core.new_user_message("fits", "alice", 1.0).turn == 2


def test_after_a_crash_the_unanswered_user_messages_are_answered_in_order() -> None:
    core = _core()
    u1, u2, u3 = (_user(core, t) for t in ("one", "two", "three"))
    _reply(core, u2, "answer to two")
    # What a restarted conversation reloads: it must answer one and three, in order.
    restarted = _core(list(core.history))
    assert [m.id for m in restarted.unanswered()] == [u1.id, u3.id]
    assert restarted.next_turn == 4


# -- regenerate and versions ------------------------------------------------------------


def test_regenerate_names_a_user_message_or_its_reply() -> None:
    core = _core()
    u1 = _user(core, "one")
    a1 = _reply(core, u1, "first")
    u2 = _user(core, "two")
    assert core.find_user(None) is u2  # default: the last user message
    assert core.find_user(a1.id) is u1  # naming the reply answers its user message again
    assert core.reply_to(u1.turn) is a1
    assert core.reply_to(u2.turn) is None
    with pytest.raises(NotFound, match="name its user message"):
        core.find_user("replaced-or-unknown")
    with pytest.raises(InvalidRequest, match="no user message"):
        _core().find_user(None)


def test_a_new_version_replaces_the_old_one_in_history() -> None:
    core = _core()
    u1 = _user(core, "one")
    old = _reply(core, u1, "old answer")
    new = _reply(core, u1, "new answer")
    core.remove(old)
    assert [m.content for m in core.history] == ["one", "new answer"]
    assert core.info.message_count == 2 and core.reply_to(u1.turn) is new


# -- a reply's lifecycle ---------------------------------------------------------------

#: Every move the lifecycle allows, written out here so that a change to it is seen.
LEGAL = {
    (S.STREAMING, S.CANCELLING),
    (S.STREAMING, S.STREAMED),
    (S.STREAMING, S.FINISHING),
    (S.STREAMING, S.ABORTED),
    (S.CANCELLING, S.STREAMED),
    (S.CANCELLING, S.FINISHING),
    (S.CANCELLING, S.ABORTED),
    (S.STREAMED, S.FINISHING),
    (S.STREAMED, S.ABORTED),
    (S.FINISHING, S.DONE),
}


def _gen_in(state: ReplyState) -> Generation:
    core = _core()
    gen = core.begin(Turn(_user(core, "q"), "mock"), 1.0)
    path = {
        S.STREAMING: [],
        S.CANCELLING: [S.CANCELLING],
        S.STREAMED: [S.STREAMED],
        S.FINISHING: [S.STREAMED, S.FINISHING],
        S.DONE: [S.STREAMED, S.FINISHING, S.DONE],
        S.ABORTED: [S.ABORTED],
    }[state]
    for step in path:
        gen.to(step)
    assert gen.state is state
    return gen


@pytest.mark.parametrize(
    ("start", "end"), list(itertools.product(ReplyState, ReplyState)), ids=lambda s: s.value
)
def test_every_transition_is_legal_or_refused(start: ReplyState, end: ReplyState) -> None:
    gen = _gen_in(start)
    if (start, end) in LEGAL:
        gen.to(end)
        assert gen.state is end
    else:
        with pytest.raises(IllegalTransition, match=f"{start.value} -> {end.value}"):
            gen.to(end)
        assert gen.state is start  # a refused move changes nothing


def test_what_each_state_allows_the_actor_to_do() -> None:
    # cancellable: a cancel can still stop the provider's stream
    assert {s for s in S if _gen_in(s).cancellable} == {S.STREAMING, S.CANCELLING}
    # will_complete: handed to the store; a crash must not abort it
    assert {s for s in S if _gen_in(s).will_complete} == {S.FINISHING, S.DONE}


def test_a_cancelled_reply_keeps_its_partial_text_and_counts_its_prompt() -> None:
    core = _core()
    user = _user(core, "a long answer please")
    gen = core.begin(Turn(user, "mock"), 1.0)
    gen.provider = MockProvider(tokens=10, delay_ms=0)
    gen.request = GenerationRequest(
        model=ModelConfig("mock", provider="mock"), messages=core.context(gen.turn)
    )
    core.deltas(gen, ("Some", " words"))
    gen.to(S.CANCELLING)
    gen.to(S.STREAMED)
    usage = gen.partial_usage()
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (4, 2, True)
    message = core.finish(gen, "cancelled", usage, 2.0)
    assert (message.content, message.finish_reason, message.turn) == (
        "Some words",
        "cancelled",
        user.turn,
    )


# -- deltas and the finished reply ------------------------------------------------------


def test_deltas_are_indexed_without_gaps_across_batches_and_empty_ones_skipped() -> None:
    core = _core()
    gen = core.begin(Turn(_user(core, "q"), "mock"), 1.0)
    first = core.deltas(gen, ("a", "", "b"))
    second = core.deltas(gen, ("c",))
    assert [(e.content, e.index) for e in first + second] == [("a", 0), ("b", 1), ("c", 2)]
    assert core.deltas(gen, ("",)) == []
    assert gen.first_token_at > 0 and gen.chunks == ["a", "b", "c"]


def test_finishing_counts_time_to_first_token_and_errors() -> None:
    core = _core()
    gen = core.begin(Turn(_user(core, "q"), "mock"), 100.0)
    gen.first_token_at = 100.5
    message = core.finish(gen, "error", Usage(2, 0), 101.0)
    assert message.finish_reason == "error" and message.role == "assistant"
    stats = core.stats
    assert stats.errors == 1 and stats.time_to_first_token == pytest.approx(0.5)


# -- the decisions the actor carries out -------------------------------------------------


def test_accept_and_answer_unanswered_queue_turns_with_their_callers() -> None:
    core = _core()
    user = core.new_user_message("hi", "alice", 1.0)
    seen: list[object] = []
    turn = core.accept(user, "mock", seen.append)
    assert core.queue == [turn] and turn.waiters == [seen.append] and turn.model == "mock"
    # A restart: carried callers rejoin their message; one whose message is gone is returned.
    restarted = _core(list(core.history))
    orphans = restarted.answer_unanswered("mock", {user.id: [seen.append], "gone": [print]})
    assert [t.user.id for t in restarted.queue] == [user.id]
    assert restarted.queue[0].waiters == [seen.append] and orphans == [print]


def test_regenerate_checks_the_model_and_the_queue_and_differs_from_the_old_reply() -> None:
    core = _core(max_queued=1)
    u1 = _user(core, "one")
    old = _reply(core, u1, "old answer")
    with pytest.raises(InvalidRequest, match="no model named 'gpt-9'"):
        core.regenerate(None, "gpt-9", "mock", {"mock"}, None)
    turn = core.regenerate(old.id, None, "mock", {"mock"}, None)
    assert turn.user is u1 and turn.replaces is old and turn.attempt > 0
    with pytest.raises(Overloaded, match="too many replies"):
        core.regenerate(None, None, "mock", {"mock"}, None)


def test_a_crash_hands_every_waiting_caller_over_by_user_message() -> None:
    core = _core()
    u1, u2 = _user(core, "one"), _user(core, "two")
    gen = core.begin(Turn(u1, "mock", [print]), 1.0)
    core.queue.append(Turn(u2, "mock", [repr]))
    assert core.hand_over(gen) == {u1.id: [print], u2.id: [repr]} and core.queue == []
    gen.to(S.STREAMED)
    gen.to(S.FINISHING)  # being stored: it completes, its caller is answered by it
    core.queue.append(Turn(u2, "mock", [repr]))
    assert core.hand_over(gen) == {u2.id: [repr]}


def test_the_request_carries_the_turns_before_and_the_nearest_system_prompt() -> None:
    core = _core()
    user = _user(core, "q")
    gen = core.begin(Turn(user, "mock"), 1.0)
    model = ModelConfig("mock", provider="mock", system_prompt="model's")
    assert core.request_for(gen, model, "config's").system_prompt == "model's"
    core.info.system_prompt = "conversation's"
    request = core.request_for(gen, model, "config's")
    assert request.system_prompt == "conversation's" and gen.request is request
    plain = ModelConfig("mock", provider="mock")
    core.info.system_prompt = ""
    assert core.request_for(gen, plain, "config's").system_prompt == "config's"
    assert request.messages == [ChatTurn("user", "q")]


def test_update_refuses_an_unknown_model_and_snapshots_are_copies() -> None:
    core = _core()
    with pytest.raises(InvalidRequest):
        core.update(None, "gpt-9", None, {"mock"}, 5.0)
    core.update("renamed", "mock", "be brief", {"mock"}, 5.0)
    snap = core.info_snapshot()
    assert (snap.title, snap.model, snap.system_prompt, snap.updated_at) == (
        "renamed",
        "mock",
        "be brief",
        5.0,
    )
    snap.title = "changed outside"
    assert core.info.title == "renamed"
    assert core.stats_snapshot(9.0).last_active == 9.0
