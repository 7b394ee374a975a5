"""Idle conversations are stopped and come back transparently from the store."""

from __future__ import annotations

from actorchat import ConversationState
from tests.helpers import WAIT, of_type, wait_for


def test_idle_conversation_is_passivated_then_reactivated_with_identical_history(
    make_system,  # type: ignore[no-untyped-def]
) -> None:
    system = make_system(idle_timeout=0.2)
    cid = system.start_conversation(title="sleepy")
    system.send_message(cid, "remember this", timeout=WAIT)
    before = system.get_history(cid)
    sub = system.subscribe(cid)
    wait_for(sub, of_type(ConversationState, state="passivated"))
    assert system.conversation_count() == 0
    assert system.count_conversations() == 1
    assert system.stats()["states"]["passivated"] == 1
    # A read reactivates it, with the same history.
    assert system.get_history(cid) == before
    assert system.conversation_count() == 1
    assert system.get_conversation(cid).title == "sleepy"
    assert system.send_message(cid, "and this", timeout=WAIT)
    assert len(system.get_history(cid)) == 4


def test_busy_conversation_is_not_passivated(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(idle_timeout=0.05, mock_delay_ms=20.0, mock_tokens=30)
    cid = system.start_conversation()
    other = system.start_conversation()
    sub = system.subscribe(None)
    reply = system.send_message(cid, "a slow reply", timeout=WAIT)
    assert reply
    # The idle one went first; the busy one only after its reply.
    _, seen = wait_for(sub, of_type(ConversationState, conversation_id=cid, state="passivated"))
    passivated = [
        e.conversation_id
        for e in seen
        if isinstance(e, ConversationState) and e.state == "passivated"
    ]
    assert passivated[0] == other
    assert len(system.get_history(cid)) == 2


def test_stop_conversation_frees_the_actor_and_keeps_data(system) -> None:  # type: ignore[no-untyped-def]
    cid = system.start_conversation()
    system.send_message(cid, "hello", timeout=WAIT)
    assert system.stop_conversation(cid)
    assert system.conversation_count() == 0
    assert len(system.get_history(cid)) == 2


def test_delete_conversation_removes_everything(system) -> None:  # type: ignore[no-untyped-def]
    from actorchat import ConversationDeleted
    from actorchat.errors import NotFound

    cid = system.start_conversation()
    system.send_message(cid, "hello", timeout=WAIT)
    sub = system.subscribe(cid)
    assert system.delete_conversation(cid)
    wait_for(sub, of_type(ConversationDeleted))
    assert system.count_conversations() == 0
    import pytest

    with pytest.raises(NotFound):
        system.get_history(cid)
    assert not system.delete_conversation(cid)
