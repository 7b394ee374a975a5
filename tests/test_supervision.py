"""Crashes, restarts and restart intensity, with real actors and SQLite (some on PostgreSQL too)."""

from __future__ import annotations

from typing import Any

import gevent
import pytest
from gevent.event import AsyncResult
from gevent.event import Event as GEvent

from actorchat import ChatSystem, ConversationState, StreamComplete, StreamContent, StreamStart
from actorchat._records import Usage
from actorchat.actors import Kill, Send, Shutdown
from actorchat.config import ModelConfig
from actorchat.errors import ConversationFailed, Overloaded, StoreError
from actorchat.providers import MockProvider, Provider, StreamEnd
from actorchat.stores import MemoryStore, SQLiteStore
from actorchat.stores._base import Done
from tests.conftest import make_config
from tests.helpers import WAIT, Recorder, of_type, wait_for
from tests.pg_support import STORES, store_settings


def wait_all_restarted(sub, cids) -> None:  # type: ignore[no-untyped-def]
    pending = set(cids)
    while pending:
        event, _ = wait_for(sub, of_type(ConversationState, state="idle", reason="restarted"))
        pending.discard(event.conversation_id)


def restarted(cid: str):  # type: ignore[no-untyped-def]
    return of_type(ConversationState, conversation_id=cid, state="idle", reason="restarted")


def test_killed_conversation_restarts_with_identical_history(system: ChatSystem) -> None:
    cid = system.start_conversation()
    for text in ("one", "two", "three"):
        system.send_message(cid, text, timeout=WAIT)
    before = system.get_history(cid)
    sub = system.subscribe(cid)
    assert system.kill(cid)
    wait_for(sub, restarted(cid))
    assert system.get_history(cid) == before
    stats = system.get_stats(cid)
    assert stats.restarts == 1 and stats.messages == 6
    assert system.send_message(cid, "four", timeout=WAIT)


@pytest.mark.parametrize("store", ["sqlite", "memory", "postgres"])
def test_pending_reply_arrives_after_a_crash_mid_stream(make_system, request, store: str) -> None:  # type: ignore[no-untyped-def]
    settings = store_settings(request, store)
    system = make_system(mock_delay_ms=10.0, mock_tokens=40, **settings)
    cid = system.start_conversation()
    system.send_message(cid, "warm up", timeout=WAIT)
    sub = system.subscribe(cid)
    waiter = gevent.spawn(system.send_message, cid, "answer me", timeout=WAIT)
    start, _ = wait_for(sub, of_type(StreamStart))
    _, before = wait_for(sub, of_type(StreamContent, index=3))
    system.kill(cid)
    # The interrupted reply ends once, with an error...
    done, seen = wait_for(sub, of_type(StreamComplete, message_id=start.message_id))  # type: ignore[attr-defined]
    assert done.finish_reason == "error"  # type: ignore[attr-defined]
    assert any(getattr(e, "code", None) == "INTERNAL_ERROR" for e in seen)
    # ...and after the restart the same user message is answered again.
    again, _ = wait_for(sub, of_type(StreamStart))
    assert again.reply_to == start.reply_to and again.message_id != start.message_id  # type: ignore[attr-defined]
    first_delta, _ = wait_for(sub, of_type(StreamContent, message_id=again.message_id))  # type: ignore[attr-defined]
    assert first_delta.index == 0  # type: ignore[attr-defined]
    reply = waiter.get(timeout=WAIT)
    history = system.get_history(cid)
    assert [m.content for m in history if m.role == "user"] == ["warm up", "answer me"]
    assert history[-1].content == reply and history[-1].finish_reason == "stop"
    assert len(history) == 4
    # Answered again "as by stream_response" (rule 8): what clients were shown
    # of the interrupted reply stays stored as an earlier version.
    shown = "".join(
        e.content  # type: ignore[attr-defined]
        for e in [*before, *seen]  # each includes the event it waited for
        if isinstance(e, StreamContent) and e.message_id == start.message_id  # type: ignore[attr-defined]
    )
    versions = system.messages(cid, versions=True)
    old = [m for m in versions if m.id == start.message_id]  # type: ignore[attr-defined]
    assert len(old) == 1 and old[0].superseded and old[0].finish_reason == "error"
    assert old[0].content == shown and shown
    assert [m.id for m in versions if not m.superseded] == [m.id for m in history]
    assert system.store.get_conversation(cid).message_count == 4  # versions not counted


def test_requests_queued_in_a_crashing_mailbox_are_not_lost(system: ChatSystem) -> None:
    cid = system.start_conversation()
    system.kill(cid)
    # These land in the dying actor's mailbox or its successor's: all answered.
    replies = [gevent.spawn(system.send_message, cid, f"m{i}", timeout=WAIT) for i in range(5)]
    gevent.joinall(replies, timeout=WAIT, raise_error=True)
    assert all(g.value for g in replies)
    assert len(system.get_history(cid)) == 10


def test_intensity_exceeded_fails_that_conversation_only(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(max_restarts=3, max_seconds=60.0)
    bad = system.start_conversation()
    others = system.start_conversations(100)
    system.send_message(bad, "before", timeout=WAIT)
    sub = system.subscribe(bad)
    for _ in range(3):
        system.kill(bad)
        wait_for(sub, restarted(bad))
    system.kill(bad)
    wait_for(sub, of_type(ConversationState, state="failed"))
    with pytest.raises(ConversationFailed):
        system.send_message(bad, "after", timeout=WAIT)
    assert "failed" in dict(system.states(state="failed")).values()
    stats = system.stats()
    assert stats["states"]["failed"] == 1 and stats["restarts_total"] == 3
    results = system.broadcast_message(others, "still alive?", timeout=WAIT)
    assert all(isinstance(r, str) and r for r in results.values())
    # Its history is still readable from the store.
    assert next(m.content for m in system.messages(bad)) == "before"


@pytest.mark.parametrize("store", STORES)
def test_killing_ten_percent_at_once_recovers_them_all(make_system, request, store: str) -> None:  # type: ignore[no-untyped-def]
    system = make_system(**store_settings(request, store))
    ids = system.start_conversations(500)
    system.broadcast_message(ids, "hello", timeout=WAIT)
    sub = system.subscribe(None, maxsize=100_000)
    killed = system.kill_many(fraction=0.1)
    assert len(killed) == 50
    wait_all_restarted(sub, killed)
    for cid in killed:
        assert len(system.get_history(cid)) == 2
    assert system.stats()["states"]["failed"] == 0


def test_crashing_model_is_restarted_then_fails_past_intensity(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(
        max_restarts=2,
        max_seconds=60.0,
        models={"crashy": ModelConfig("crashy", provider="mock", options={"crash_rate": 1.0})},
    )
    cid = system.start_conversation(model="crashy")
    sub = system.subscribe(cid)
    with pytest.raises(ConversationFailed):
        system.send_message(cid, "boom", timeout=WAIT)
    wait_for(sub, of_type(ConversationState, state="failed"))
    # The acknowledged message was never lost.
    assert [m.content for m in system.messages(cid)] == ["boom"]


def test_temporary_conversations_are_not_restarted_but_come_back_when_used(make_system) -> None:  # type: ignore[no-untyped-def]
    system = make_system(restart="temporary")
    cid = system.start_conversation()
    system.send_message(cid, "hi", timeout=WAIT)
    sub = system.subscribe(cid)
    system.kill(cid)
    wait_for(sub, of_type(ConversationState, state="crashed"))
    assert dict(system.states(state="crashed")) == {cid: "crashed"}
    # Used again: activated from the store like a passivated conversation.
    assert system.send_message(cid, "again", timeout=WAIT)
    assert len(system.get_history(cid)) == 4


@pytest.mark.parametrize("store", STORES)
def test_crashes_and_kills_during_broadcasts_lose_no_message(
    make_system, request, store: str
) -> None:  # type: ignore[no-untyped-def]
    system = make_system(
        mock_crash_rate=0.05,
        mock_delay_ms=1.0,
        max_restarts=100,
        max_seconds=1.0,
        **store_settings(request, store),
    )
    ids = system.start_conversations(300)
    for r in range(2):
        broadcast = gevent.spawn(system.broadcast_message, ids, f"round {r}", timeout=WAIT)
        system.kill_many(fraction=0.1)  # lands while the replies stream
        results = broadcast.get(timeout=WAIT)
        assert all(isinstance(v, str) and v for v in results.values()), results
    for cid in ids:
        history = system.get_history(cid)
        assert [m.role for m in history] == ["user", "assistant"] * 2
        assert all(m.finish_reason == "stop" for m in history if m.role == "assistant")
    assert system.stats()["crashes_total"] > 0


def test_a_restart_burst_leaves_the_collector_on_and_freezes_no_ones_garbage(
    make_system,
) -> None:  # type: ignore[no-untyped-def]
    # 1,000 restarts at once pause the collector around the respawn and
    # freeze what it built; cyclic garbage that other greenlets make while
    # the histories reload must still be collectable afterwards.
    import gc
    import weakref

    class Node:
        def __init__(self) -> None:
            self.me = self

    system = make_system()
    ids = system.start_conversations(1000)
    system.broadcast_message(ids, "hello", timeout=WAIT)
    sub = system.subscribe(None, maxsize=100_000)
    refs: list[weakref.ref[Node]] = []
    stop = [False]

    def litter() -> None:
        while not stop[0]:
            refs.append(weakref.ref(Node()))
            gevent.sleep(0)

    litterer = gevent.spawn(litter)
    killed = system.kill_many(fraction=1.0)
    assert len(killed) == 1000
    wait_all_restarted(sub, killed)
    stop[0] = True
    litterer.join()
    assert gc.isenabled()
    assert refs
    gc.collect()
    assert not [r for r in refs if r() is not None], "garbage made during the burst was frozen"


class _BuggyOnce(MemoryStore):
    """Raises a non-store error (a bug) on the first reply it is asked to keep."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def append_message_async(self, message, done: Done) -> None:  # type: ignore[no-untyped-def]
        if message.role == "assistant" and not self.failed:
            self.failed = True
            raise RuntimeError("bug while storing a reply")
        super().append_message_async(message, done)


@pytest.mark.parametrize("delay_ms", [0.0, 5.0])
def test_a_bug_while_finishing_a_reply_crashes_and_restarts_the_conversation(
    tmp_path, delay_ms: float
) -> None:  # type: ignore[no-untyped-def]
    # The generation greenlet finishes a reply itself when its actor is idle:
    # a bug there must still be a crash of the conversation, restarted, with
    # the message answered afterwards.
    store = _BuggyOnce()
    with ChatSystem(make_config(tmp_path, mock_delay_ms=delay_ms), store=store) as system:
        cid = system.start_conversation()
        sub = system.subscribe(cid)
        reply = system.send_message(cid, "answer me anyway", timeout=WAIT)
        wait_for(sub, restarted(cid))
        assert store.failed and reply
        assert [m.role for m in system.get_history(cid)] == ["user", "assistant"]
        assert system.get_stats(cid).restarts == 1


class _Gate(Provider):
    """A model that waits (as one over the network would) until ``release`` is set."""

    name = "gate"

    def __init__(self) -> None:
        self.started = GEvent()
        self.release = GEvent()

    def stream(self, request):  # type: ignore[no-untyped-def]
        self.started.set()
        self.release.wait()
        yield "gated"
        yield " reply"
        yield StreamEnd("stop", Usage(1, 2))


_TWO_MODELS = {
    "gate": ModelConfig("gate", provider="mock", model="mock"),
    "fast": ModelConfig("fast", provider="mock", model="mock"),
}


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_long_queue_of_instant_replies_behind_a_slow_one(tmp_path, store: str) -> None:  # type: ignore[no-untyped-def]
    # The slow reply finishes from its own greenlet; every queued reply from
    # a model that never waits then ends at once. Starting them must not nest
    # one call deeper per reply (200 turns once hit the recursion limit).
    gate = _Gate()
    config = make_config(tmp_path, store=store, models=_TWO_MODELS, max_queued_messages=250)
    fast = MockProvider(tokens=3, delay_ms=0)
    with ChatSystem(config, providers={"gate": gate, "fast": fast}) as system:
        cid = system.start_conversation(model="gate")
        sub = system.subscribe(cid, maxsize=1_000_000)
        system.post_message(cid, "first")
        assert gate.started.wait(WAIT)
        system.update_conversation(cid, model="fast")
        for i in range(200):
            system.post_message(cid, f"q{i}")
        gate.release.set()
        for _ in range(201):
            wait_for(sub, of_type(StreamComplete, finish_reason="stop"))
        history = system.get_history(cid)
        assert [m.content for m in history if m.role == "user"] == ["first"] + [
            f"q{i}" for i in range(200)
        ]
        assert sum(m.role == "assistant" for m in history) == 201
        assert system.get_stats(cid).restarts == 0


class _WaitingStore(MemoryStore):
    """Its writes wait (I/O off the hub), through the default ``append_message_async``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = GEvent()
        self.release = GEvent()

    def append_message(self, message) -> None:  # type: ignore[no-untyped-def]
        if message.role == "assistant" and not self.entered.is_set():
            self.entered.set()
            try:
                self.release.wait()
            except Exception as exc:
                raise StoreError(f"write failed: {exc!r}") from exc
        super().append_message(message)


@pytest.mark.parametrize("action", ["cancel", "kill"])
def test_a_reply_being_stored_by_a_store_that_waits_ends_exactly_once(
    tmp_path, action: str
) -> None:  # type: ignore[no-untyped-def]
    # The store may yield while it keeps the reply: the actor answers other
    # requests meanwhile, and a cancel or a crash then must not end the
    # reply a second time or call its waiter twice.
    gate, store = _Gate(), _WaitingStore()
    config = make_config(tmp_path, models=_TWO_MODELS)
    with ChatSystem(config, store=store, providers={"gate": gate}) as system:
        cid = system.start_conversation(model="gate")
        sub = system.subscribe(cid, maxsize=1_000_000)
        done = Recorder()
        system._tell(cid, Send("hello", "local", None, done))
        assert gate.started.wait(WAIT)
        gate.release.set()
        assert store.entered.wait(WAIT)
        if action == "cancel":
            assert system.cancel(cid) is False  # nothing left to cancel
        else:
            assert system.kill(cid)
        store.release.set()
        assert done.wait()
        completes: dict[str, int] = {}
        while True:
            event = sub.get(0.5 if completes else WAIT)
            if event is None:
                break
            if isinstance(event, StreamComplete):
                completes[event.message_id] = completes.get(event.message_id, 0) + 1
        assert completes and set(completes.values()) == {1}
        assert len(done.calls) == 1
        history = system.get_history(cid)
        assert [(m.role, m.finish_reason) for m in history] == [
            ("user", None),
            ("assistant", "stop"),
        ]


class _RaisesAfterQueuing(SQLiteStore):
    failed = False

    def append_message_async(self, message, done: Done) -> None:  # type: ignore[no-untyped-def]
        super().append_message_async(message, done)
        if message.role == "assistant" and not self.failed:
            self.failed = True
            raise RuntimeError("bug after queuing the reply")


def test_a_store_bug_after_queuing_a_reply_still_ends_it_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config(tmp_path)
    store = _RaisesAfterQueuing(config.data_dir / "bug.sqlite3")
    with ChatSystem(config, store=store) as system:
        cid = system.start_conversation()
        sub = system.subscribe(cid, maxsize=1_000_000)
        calls: list[object] = []
        system._tell(cid, Send("hi", "local", None, calls.append))
        events = []
        while not any(isinstance(e, ConversationState) and e.reason == "restarted" for e in events):
            event = sub.get(WAIT)
            assert event is not None, "no restart"
            events.append(event)
        while (event := sub.get(0.5)) is not None:  # whatever else is still coming
            events.append(event)
        completes = [e.message_id for e in events if isinstance(e, StreamComplete)]
        assert completes and len(set(completes)) == len(completes)
        assert len(calls) == 1
        assert [m.role for m in system.get_history(cid)] == ["user", "assistant"]


class _InterruptsTheAck(SQLiteStore):
    """Right before a user message's completion, tells the actor ``interrupt``.

    So the actor finds ``interrupt`` in its mailbox ahead of the hand-over of
    the durable message: the window between "stored" and "queued".
    """

    def __init__(self, path: object, interrupt: object) -> None:
        super().__init__(path)  # type: ignore[arg-type]
        self.interrupt = interrupt
        self.ref: Any = None

    def append_message_async(self, message, done: Done) -> None:  # type: ignore[no-untyped-def]
        def completed(error: StoreError | None) -> None:
            if self.ref is not None and message.role == "user":
                self.ref.tell(self.interrupt)
                self.ref = None
            done(error)

        super().append_message_async(message, completed)


def test_a_crash_between_storing_and_queueing_a_message_loses_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = make_config(tmp_path)
    store = _InterruptsTheAck(config.data_dir / "x.sqlite3", Kill())
    with ChatSystem(config, store=store) as system:
        cid = system.start_conversation()
        sub = system.subscribe(cid, maxsize=1_000_000)
        store.ref = system._route(cid)
        reply = system.send_message(cid, "answer me after the crash", timeout=WAIT)
        wait_for(sub, restarted(cid))
        history = system.get_history(cid)
        assert [(m.role, m.content) for m in history] == [
            ("user", "answer me after the crash"),
            ("assistant", reply),
        ]
        assert system.get_stats(cid).restarts == 1


def test_a_stop_right_after_a_message_is_stored_ends_its_reply_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The reply has started (it counts as generating: drain() waits for it)
    # but not yet run when the stop arrives: it ends "cancelled", once.
    config = make_config(tmp_path)
    store = _InterruptsTheAck(config.data_dir / "x.sqlite3", Shutdown())
    with ChatSystem(config, store=store) as system:
        cid = system.start_conversation()
        store.ref = system._route(cid)
        sub = system.subscribe(cid, maxsize=1_000_000)
        done = Recorder()
        system._tell(cid, Send("stored, then stopped", "local", None, done))
        assert done.wait()
        complete, _ = wait_for(sub, of_type(StreamComplete))
        assert isinstance(complete, StreamComplete) and complete.finish_reason == "cancelled"
        assert [(m.role, m.finish_reason) for m in system.get_history(cid)] == [
            ("user", None),
            ("assistant", "cancelled"),
        ]
        assert len(done.calls) == 1
        assert getattr(done.calls[0], "finish_reason", None) == "cancelled"
        assert not [e for e in sub.drain() if isinstance(e, StreamComplete)]


@pytest.mark.parametrize("model", ["gate", "fast"])
def test_drain_waits_for_the_reply_of_a_message_just_acknowledged(tmp_path, model: str) -> None:  # type: ignore[no-untyped-def]
    # Graceful shutdown relies on it: a message acknowledged just before
    # SIGTERM gets its whole reply within the grace period.
    gate = _Gate()
    gate.release.set()
    config = make_config(tmp_path, models=_TWO_MODELS)
    fast = MockProvider(tokens=3, delay_ms=0)
    system = ChatSystem(config, providers={"gate": gate, "fast": fast}).start()
    try:
        cid = system.start_conversation(model=model)
        system.post_message(cid, "acknowledged, then drained")
        assert system.drain(WAIT)
        assert [(m.role, m.finish_reason) for m in system.get_history(cid)] == [
            ("user", None),
            ("assistant", "stop"),
        ]
    finally:
        system.stop()


def test_the_queue_limit_counts_a_message_stored_but_not_yet_answered(tmp_path) -> None:  # type: ignore[no-untyped-def]
    gate = _Gate()
    config = make_config(tmp_path, models=_TWO_MODELS, max_queued_messages=1)
    second: AsyncResult[Any] = AsyncResult()
    store = _InterruptsTheAck(config.data_dir / "x.sqlite3", Send("u2", "local", second.set, None))
    with ChatSystem(config, store=store, providers={"gate": gate}) as system:
        cid = system.start_conversation(model="gate")
        system.post_message(cid, "u0")  # its reply waits on the gate
        assert gate.started.wait(WAIT)
        store.ref = system._route(cid)  # u2 lands ahead of u1's hand-over
        system.post_message(cid, "u1")
        assert isinstance(second.get(timeout=WAIT), Overloaded)
        assert system.get_stats(cid).queued == 1
        gate.release.set()


def test_stopping_while_a_broadcast_reaches_stopped_conversations_leaves_none_running(
    make_system,
) -> None:  # type: ignore[no-untyped-def]
    # The broadcast reactivates passivated conversations (asking the
    # supervisor, so the stop runs in between): none may start after StopAll.
    import gc

    from actorchat.actors import ConversationActor

    system = make_system(mock_tokens=2)
    ids = system.start_conversations(200)
    for cid in ids[100:]:
        system.stop_conversation(cid)
    stopper = gevent.spawn(system.stop, WAIT)
    results = system.broadcast_message(ids, "hi", timeout=WAIT)
    stopper.join(WAIT)
    assert len(results) == 200
    running = [
        o
        for o in gc.get_objects()
        if isinstance(o, ConversationActor) and not o.actor_stopped.is_set()
    ]
    assert running == []
    assert system.metrics.generating == 0


class _SlowReloadStore(MemoryStore):
    """A memory store whose reloads wait for a gate: the supervisor is busy restarting."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = GEvent()
        self.reloading = GEvent()

    def load_many(self, conversation_ids):  # type: ignore[no-untyped-def]
        self.reloading.set()
        self.gate.wait()
        return super().load_many(conversation_ids)


def test_kill_is_a_message_and_never_waits_behind_the_supervisors_restart_work(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    store = _SlowReloadStore()
    with ChatSystem(make_config(tmp_path, store="memory"), store=store) as system:
        a, b = system.start_conversations(2)
        system.send_message(a, "remember me", timeout=WAIT)
        assert system.kill(a)
        # The supervisor now waits on the reload of `a` ...
        assert store.reloading.wait(WAIT)
        # ... and a kill of `b` is delivered all the same, without waiting for it.
        done = gevent.spawn(system.kill, b)
        done.join(WAIT)
        assert done.successful() and done.value is True
        assert not store.gate.is_set()
        store.gate.set()
        for cid in (a, b):
            assert system.get_stats(cid).restarts == 1
        assert system.get_history(a)[0].content == "remember me"
        assert system.kill("no-such-conversation") is False
