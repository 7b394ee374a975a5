"""The supervisor actor: starts conversations and restarts them, OTP-style.

One-for-one, with a restart intensity counted *per conversation*: at most
``max_restarts`` restarts within ``max_seconds``, past which that one
conversation is marked failed and every other conversation carries on.
(An OTP supervisor counts all its children together and escalates; here one
bad conversation must never take the tree down, nor must killing 10% at
once.) Restart types follow OTP: ``permanent`` (always restarted),
``transient`` (restarted after a crash, not after a normal stop it did not
ask for... nor after one it did), ``temporary`` (never restarted; it comes
back only when next used, like a passivated one).

The supervisor learns of a crash through ``ChildFailed``, which a dying
conversation tells it from Pykka's failure hook, carrying what was in
flight: the unread envelopes of its mailbox (delivered to its successor, so
no request is lost) and the callers waiting for replies (re-attached to the
replies the successor regenerates). A restarted conversation reloads its
history from the store and answers every user message still unanswered.

The supervisor reads a few attributes of its children directly
(``last_active``, ``core``) for the idle sweep and state counts: everything
runs on one gevent hub, so such reads are atomic, and they avoid 100,000
asks per sweep.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import pykka
from pykka import ActorDeadError

from actorchat._events import ConversationState
from actorchat._records import Conversation, Message
from actorchat.actors._base import Envelope, GreenletActor, stop_envelope
from actorchat.actors._conversation import ConversationActor, Deps
from actorchat.actors._messages import (
    Activate,
    Callback,
    ChildFailed,
    ChildStopped,
    Counts,
    Forget,
    Passivate,
    Redeliver,
    Regenerate,
    Register,
    Send,
    Shutdown,
    StartNew,
    States,
    StopAll,
    StopChild,
    Sweep,
    Unregister,
)
from actorchat.actors._registry import Registry
from actorchat.errors import ActorchatError, ConversationError, ConversationFailed, NotFound

__all__ = ["SupervisorActor"]

log = logging.getLogger("actorchat.supervisor")


@dataclass(slots=True)
class _Restart:
    child: _Child
    inbox: list[Envelope[Any]]
    waiters: dict[str, list[Callback]]


@dataclass(slots=True)
class _Child:
    actor: ConversationActor
    # Created at the first crash: most conversations never need one.
    restart_times: deque[float] | None = None
    restarts: int = 0


#: What ``ChatSystem.states`` reports for a conversation.
CONVERSATION_STATES = (
    "starting",
    "idle",
    "generating",
    "restarting",
    "failed",
    "crashed",
    "passivated",
)


def _child_state(actor: ConversationActor) -> str:
    if actor.actor_stopped.is_set():
        return "restarting"  # crashed; its successor is on the way
    return actor.lifecycle_state()


class SupervisorActor(GreenletActor):
    """Parent of every conversation actor."""

    def __init__(self, deps: Deps, registry: Registry) -> None:
        super().__init__()
        self.deps = deps
        self.registry = registry
        self.children: dict[str, _Child] = {}
        self.failed: dict[str, str] = {}
        self.crashed: dict[str, str] = {}
        cfg = deps.config
        self.restart_type = cfg.restart
        self.max_restarts = cfg.max_restarts
        self.max_seconds = cfg.max_seconds
        self._registrations: list[tuple[str, pykka.ActorRef[Any]]] = []
        self._pending_restarts: dict[str, _Restart] = {}
        # Set by StopAll: from then on nothing starts. A broadcast still
        # telling (it yields between slices) would otherwise activate
        # conversations that no one stops.
        self.stopping = False

    def on_receive(self, message: Any) -> Any:
        handler = _HANDLERS.get(type(message))
        if handler is None:
            return super().on_receive(message)
        try:
            return handler(self, message)
        finally:
            if self.actor_inbox.empty():
                if self._pending_restarts:
                    self._flush_restarts()
                if self._registrations:
                    self._flush_registrations()

    def _register(self, cid: str, ref: pykka.ActorRef[Any]) -> None:
        # Registrations wait until the mailbox is empty, then go to the
        # registry in one message: after killing 10,000 conversations that
        # is one registry wake-up instead of 10,000. Meanwhile a lookup that
        # finds the dead ref asks us, and we answer with the live one.
        self._registrations.append((cid, ref))

    def _flush_registrations(self) -> None:
        entries, self._registrations = self._registrations, []
        self.registry.ref.tell(Register(entries))

    # Starting --------------------------------------------------------------

    def _spawn(self, cid: str, **kwargs: Any) -> ConversationActor:
        actor = ConversationActor(cid, self.deps, **kwargs)
        return actor

    def _refuse_if_stopping(self) -> None:
        if self.stopping:
            raise ConversationError("the chat system is stopping")

    def _on_start_new(self, msg: StartNew) -> list[tuple[str, pykka.ActorRef[Any]]]:
        self._refuse_if_stopping()
        convs = msg.conversations
        self.deps.store.create_conversations(convs)
        entries = []
        children = self.children
        for conv in convs:
            actor = self._spawn(conv.id, preloaded=(conv, []))
            actor.start_loop()
            children[conv.id] = _Child(actor)
            entries.append((conv.id, actor.actor_ref))
        # The caller registers them (an actor never blocks on another's
        # answer); until then a lookup misses and asks us, and we know them.
        return entries

    def _on_activate(self, msg: Activate) -> pykka.ActorRef[Any]:
        self._refuse_if_stopping()
        cid = msg.conversation_id
        if cid in self._pending_restarts:
            self._flush_restarts()
        if cid in self.failed:
            raise ConversationFailed(
                f"conversation {cid!r} failed after repeated crashes: {self.failed[cid]}"
            )
        child = self.children.get(cid)
        if child is not None and not child.actor.actor_stopped.is_set():
            return child.actor.actor_ref
        self.crashed.pop(cid, None)
        restarts = child.restarts if child is not None else 0
        actor = self._spawn(cid, restarts=restarts)
        if child is None:
            child = _Child(actor)
            self.children[cid] = child
        else:
            child.actor = actor
        actor.start_loop()
        self._register(cid, actor.actor_ref)
        return actor.actor_ref

    # Failures --------------------------------------------------------------

    def _on_child_failed(self, msg: ChildFailed) -> None:
        cid = msg.conversation_id
        deps = self.deps
        deps.metrics.crashes += 1
        child = self.children.get(cid)
        if child is None or child.actor is not msg.actor:
            # A stale report (deleted, or already replaced): pass requests on.
            self._reject(
                msg.inbox, msg.waiters, ConversationFailed(f"conversation {cid!r} is gone")
            )
            return
        publish = deps.bus.publish
        publish(ConversationState(cid, "crashed", msg.reason))
        if self.restart_type == "temporary":
            self._remove(cid, child)
            self.crashed[cid] = msg.reason
            self._reject(
                msg.inbox, msg.waiters, ConversationFailed(f"conversation {cid!r} crashed")
            )
            return
        now = time.monotonic()
        times = child.restart_times
        if times is None:
            times = child.restart_times = deque(maxlen=max(self.max_restarts, 1))
        while times and times[0] <= now - self.max_seconds:
            times.popleft()
        if len(times) >= self.max_restarts:
            self._remove(cid, child)
            self.failed[cid] = msg.reason
            deps.metrics.failed += 1
            log.warning(
                "conversation %s failed: %d restarts within %.1fs (last: %s)",
                cid,
                len(times),
                self.max_seconds,
                msg.reason,
            )
            publish(ConversationState(cid, "failed", msg.reason))
            self._reject(
                msg.inbox,
                msg.waiters,
                ConversationFailed(f"conversation {cid!r} failed after repeated crashes"),
            )
            return
        times.append(now)
        child.restarts += 1
        deps.metrics.restarts += 1
        publish(ConversationState(cid, "restarting", msg.reason))
        self._restart(cid, child, msg.inbox, msg.waiters)

    def _restart(
        self,
        cid: str,
        child: _Child,
        inbox: list[Envelope[Any]],
        waiters: dict[str, list[Callback]],
    ) -> None:
        # Restarts wait for the mailbox to empty, like registrations, so that
        # every conversation that crashed in one burst reloads its history in
        # one store round trip (killing 10% of 100,000 made 10,000 loads).
        pending = self._pending_restarts.get(cid)
        if pending is not None:  # crashed again before its restart: merge
            pending.inbox.extend(inbox)
            for key, callbacks in waiters.items():
                pending.waiters.setdefault(key, []).extend(callbacks)
            return
        self._pending_restarts[cid] = _Restart(child, inbox, waiters)

    def _flush_restarts(self) -> None:
        batch, self._pending_restarts = self._pending_restarts, {}
        if self.stopping:  # a crash during the stop: nothing restarts now
            for cid, r in batch.items():
                self._remove(cid, r.child)
                self._reject(r.inbox, r.waiters, ConversationError("the chat system is stopping"))
            return
        try:
            loaded = self.deps.store.load_many(list(batch))
        except ActorchatError as exc:
            log.warning("restart of %d conversations failed: %s", len(batch), exc)
            for cid, r in batch.items():
                self._remove(cid, r.child)
                self.failed[cid] = f"history could not be reloaded: {exc}"
                self._reject(r.inbox, r.waiters, ConversationFailed(str(exc)))
            return
        # A burst (killing 10% of 100,000) builds long-lived state for every
        # restarted actor, and the collector's passes over it were a fifth of
        # the recovery. The spawning below never yields, so nothing else
        # allocates meanwhile: collect the young generations first (so no
        # one's garbage gets frozen), pause, and freeze what the burst built.
        pause = self.deps.config.gc_freeze and len(batch) >= 1000 and gc.isenabled()
        if pause:
            gc.collect(1)
            gc.disable()
        try:
            self._respawn(batch, loaded)
        finally:
            if pause:
                gc.freeze()
                gc.enable()

    def _respawn(
        self,
        batch: dict[str, _Restart],
        loaded: dict[str, tuple[Conversation, list[Message]]],
    ) -> None:
        for cid, r in batch.items():
            child = r.child
            if self.children.get(cid) is not child:
                self._reject(
                    r.inbox, r.waiters, ConversationFailed(f"conversation {cid!r} is gone")
                )
                continue
            state = loaded.get(cid)
            if state is None:  # deleted meanwhile
                self._remove(cid, child)
                self._reject(r.inbox, r.waiters, NotFound(f"no conversation {cid!r}"))
                continue
            actor = self._spawn(
                cid, preloaded=state, restarts=child.restarts, carried_waiters=r.waiters
            )
            for envelope in r.inbox:
                actor.actor_inbox.put(envelope)
            child.actor = actor
            actor.start_loop()
            self._register(cid, actor.actor_ref)

    def _reject(
        self,
        inbox: list[Envelope[Any]],
        waiters: dict[str, list[Callback]],
        exc: ActorchatError,
    ) -> None:
        for envelope in inbox:
            message = envelope.message
            if isinstance(message, Send | Regenerate):
                for cb in (message.on_ack, message.on_done):
                    if cb is not None:
                        cb(exc)
            if envelope.reply_to is not None:
                try:
                    raise exc
                except ActorchatError:
                    envelope.reply_to.set_exception(sys.exc_info())
        for callbacks in waiters.values():
            for cb in callbacks:
                cb(exc)

    def _remove(self, cid: str, child: _Child) -> None:
        if self.children.get(cid) is child:
            del self.children[cid]
        self.registry.ref.tell(Unregister(cid, child.actor.actor_ref))

    def _on_child_stopped(self, msg: ChildStopped) -> None:
        cid = msg.conversation_id
        child = self.children.get(cid)
        if child is None or child.actor is not msg.actor:
            return
        reason = msg.reason
        if not reason and self.restart_type == "permanent":
            # Stopped without being asked to: a permanent child comes back.
            self._on_child_failed(ChildFailed(cid, msg.actor, "stopped unexpectedly", [], {}))
            return
        self._remove(cid, child)
        if reason == "passivated":
            self.deps.metrics.passivated += 1
            self.deps.bus.publish(ConversationState(cid, "passivated", "idle timeout"))

    # Requests ----------------------------------------------------------------

    def _on_stop_child(self, msg: StopChild) -> bool:
        child = self.children.get(msg.conversation_id)
        if child is None:
            return False
        child.actor.stop_reason = msg.reason
        try:
            child.actor.actor_ref.tell(Shutdown())
        except ActorDeadError:
            pass
        self._remove(msg.conversation_id, child)
        return True

    def _on_redeliver(self, msg: Redeliver) -> None:
        try:
            ref = self._on_activate(Activate(msg.conversation_id))
        except ActorchatError as exc:
            self._reject(msg.envelopes, {}, exc)
            return
        for envelope in msg.envelopes:
            ref.actor_inbox.put(envelope)

    def _on_forget(self, msg: Forget) -> None:
        self.failed.pop(msg.conversation_id, None)
        self.crashed.pop(msg.conversation_id, None)
        self._on_stop_child(StopChild(msg.conversation_id, "deleted"))

    def _on_sweep(self, msg: Sweep) -> int:
        deadline = time.time() - msg.idle_timeout
        asked = 0
        for child in list(self.children.values()):
            actor = child.actor
            if actor.last_active <= deadline and actor.is_idle():
                try:
                    actor.actor_ref.tell(Passivate(deadline))
                    asked += 1
                except ActorDeadError:
                    pass
        return asked

    def _on_stop_all(self, _msg: StopAll) -> list[ConversationActor]:
        if self._pending_restarts:
            self._flush_restarts()
        self.stopping = True
        # One shared stop envelope for everyone: at 100,000 actors the wake-up
        # of each greenlet (~10 µs here) is the floor, so nothing else is spent.
        stop = stop_envelope()
        actors = []
        for child in self.children.values():
            actor = child.actor
            if actor.actor_stopped.is_set():
                continue
            actor.stop_reason = "shutdown"
            actor.actor_inbox.put(stop)
            actors.append(actor)
        self.children.clear()
        return actors

    def _on_states(self, msg: States) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        want = msg.state
        limit = msg.limit if msg.limit is not None else sys.maxsize
        for cid, child in self.children.items():
            state = _child_state(child.actor)
            if want is None or state == want:
                out.append((cid, state))
                if len(out) >= limit:
                    return out
        for table, state in ((self.failed, "failed"), (self.crashed, "crashed")):
            if want is None or want == state:
                for cid in table:
                    out.append((cid, state))
                    if len(out) >= limit:
                        return out
        return out

    def _on_counts(self, _msg: Counts) -> dict[str, int]:
        counts = {"idle": 0, "generating": 0, "restarting": 0, "starting": 0}
        for child in self.children.values():
            counts[_child_state(child.actor)] += 1
        counts["failed"] = len(self.failed)
        counts["crashed"] = len(self.crashed)
        counts["live"] = len(self.children)
        return counts


_HANDLERS: dict[type, Any] = {
    StartNew: SupervisorActor._on_start_new,
    Activate: SupervisorActor._on_activate,
    ChildFailed: SupervisorActor._on_child_failed,
    ChildStopped: SupervisorActor._on_child_stopped,
    StopChild: SupervisorActor._on_stop_child,
    Forget: SupervisorActor._on_forget,
    Redeliver: SupervisorActor._on_redeliver,
    Sweep: SupervisorActor._on_sweep,
    StopAll: SupervisorActor._on_stop_all,
    States: SupervisorActor._on_states,
    Counts: SupervisorActor._on_counts,
}
