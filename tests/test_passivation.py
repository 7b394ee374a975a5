"""Idle conversations are stopped and come back transparently from the store."""

from __future__ import annotations

import pytest

from actorchat import ConversationState
from tests.helpers import WAIT, of_type, wait_for
from tests.pg_support import STORES, store_settings


@pytest.mark.parametrize("store", STORES)
def test_idle_conversation_is_passivated_then_reactivated_with_identical_history(
    make_system,  # type: ignore[no-untyped-def]
    request: pytest.FixtureRequest,
    store: str,
) -> None:
    system = make_system(idle_timeout=0.2, **store_settings(request, store))
    cid = system.start_conversation(title="sleepy")
    system.send_message(cid, "remember this", timeout=WAIT)
    before = system.get_history(cid)
    sub = system.subscribe(cid)
    wait_for(sub, of_type(ConversationState, state="passivated"))
    assert system.conversation_count() == 0
    assert system.count_conversations() == 1
    assert system.stats()["states"]["passivated"] == 1
    assert system.states("passivated") == [(cid, "passivated")]
    assert cid not in dict(system.states())  # the unfiltered list stays live ones only
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


def test_messages_racing_a_stop_are_handed_to_a_successor(system) -> None:  # type: ignore[no-untyped-def]
    import gc

    import gevent
    from gevent.event import AsyncResult

    from actorchat.actors import ConversationActor, Send, Shutdown

    cid = system.start_conversation()
    system.send_message(cid, "first", timeout=WAIT)
    (actor,) = [
        o
        for o in gc.get_objects()
        if isinstance(o, ConversationActor) and o.conversation_id == cid and o.core is not None
    ]
    # A stop on request with a message already queued behind it, as when a
    # sender still holds the ref while stop_conversation runs.
    actor.stop_reason = "stopped"
    done: AsyncResult = AsyncResult()
    actor.actor_ref.tell(Shutdown())
    actor.actor_ref.tell(Send("racing the stop", "local", None, done.set))
    assert done.get(timeout=WAIT).role == "assistant"
    later = gevent.spawn(system.send_message, cid, "after the stop", timeout=WAIT)
    assert later.get(timeout=WAIT)
    users = [m.content for m in system.get_history(cid) if m.role == "user"]
    assert users == ["first", "racing the stop", "after the stop"]


def test_messages_left_at_shutdown_fail_instead_of_hanging(config) -> None:  # type: ignore[no-untyped-def]
    from gevent.event import AsyncResult

    from actorchat import ChatSystem
    from actorchat.actors import Send, Shutdown
    from actorchat.errors import ConversationError

    chat = ChatSystem(config).start()
    cid = chat.start_conversation()
    ref = chat.registry.lookup(cid)
    done: AsyncResult = AsyncResult()
    ref.tell(Shutdown())
    ref.tell(Send("too late", "local", None, done.set))
    assert isinstance(done.get(timeout=WAIT), ConversationError)
    chat.stop()
