"""The conversation actor: the shell that carries out what its core decides.

``ConversationCore`` (``_core.py``) holds the rules; ``ConversationActor``
owns one core and its mailbox, persists through the store, publishes on the
bus, and runs each generation in a greenlet of its own so that it keeps
answering (history, stats, cancel) while a reply streams.

Which greenlet changes the actor's state: the actor's own, handling its
mailbox. Work finished elsewhere comes back as a message to itself
(``_GenDone``, ``_RunInPlace``, ``_Raise``), except on two named fast
paths, each run without yielding, so nothing can interleave with them:

- ``_user_stored`` and ``_reply_stored``, the store's completions: the store
  calls them in submission order on its completion loop, which never
  yields between them (``Store.callbacks_never_wait``);
- the end of ``_generate``: a generation that ends while the actor waits
  on an empty mailbox (``Inbox.parked``) finishes its reply itself, which
  is exactly what the actor would do next, minus a mailbox hop.

One module of ~750 lines on purpose: the handlers and a reply's machinery
(start, stream, cancel, complete, abort) share the actor's state and its
greenlet rules above; apart, each half would need the other's private
state, and the rules would be stated twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import gevent
import pykka
from pykka import ActorDeadError

from actorchat._bus import EventBus
from actorchat._events import (
    ConversationState,
    ConversationUpdated,
    ErrorEvent,
    MessageReceived,
    StreamComplete,
    StreamStart,
)
from actorchat._metrics import Metrics
from actorchat._records import Conversation, Message, Usage
from actorchat.actors._base import Envelope, GreenletActor
from actorchat.actors._core import (
    ConversationCore,
    ConversationStats,
    Generation,
    Outcome,
    ReplyState,
)
from actorchat.actors._messages import (
    Callback,
    Cancel,
    ChildFailed,
    ChildStopped,
    GetHistory,
    GetInfo,
    GetStats,
    Kill,
    Passivate,
    Ping,
    Redeliver,
    Regenerate,
    Send,
    Shutdown,
    UpdateSettings,
)
from actorchat.config import Config
from actorchat.errors import (
    ActorchatError,
    ConversationCrashed,
    ConversationError,
    NotFound,
    Overloaded,
    ProviderError,
    StoreError,
)
from actorchat.providers import GenerationCancelled, GenerationRequest, Provider, StreamEnd
from actorchat.stores import Store

__all__ = ["ConversationActor", "Deps", "InjectedCrash"]

log = logging.getLogger("actorchat.conversation")


class InjectedCrash(RuntimeError):
    """Raised inside a conversation by ``kill()``: a deliberate, unexpected crash."""


# -- messages to itself -------------------------------------------------------


class _GenDone:
    """A generation's stream ended: how (``Outcome``) and with what value."""

    __slots__ = ("gen", "outcome", "value")

    def __init__(self, gen: Generation, outcome: Outcome, value: Any) -> None:
        self.gen = gen
        self.outcome = outcome
        self.value = value


class _RunInPlace:
    """Run a reply that was started on another greenlet (a store's) on the actor's own."""

    __slots__ = ("gen", "provider", "request")

    def __init__(self, gen: Generation, provider: Provider, request: GenerationRequest) -> None:
        self.gen = gen
        self.provider = provider
        self.request = request


class _Raise:
    """Crash with ``error``: a failure found outside the actor's own greenlet."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


# -- the actor ---------------------------------------------------------------


class Deps:
    """What every conversation shares: built once by the system, never copied."""

    def __init__(
        self,
        config: Config,
        store: Store,
        bus: EventBus,
        providers: dict[str, Provider],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.providers = providers
        self.models = config.all_models()
        self.metrics = metrics
        self.supervisor: pykka.ActorRef[Any] | None = None


def _call(callback: Callback | None, value: Any) -> None:
    """Run a caller's callback; one that raises must not kill the actor."""
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        log.warning("a conversation callback raised; ignored", exc_info=True)


class ConversationActor(GreenletActor):
    """One conversation, one actor, one greenlet (plus one per generation).

    Started only by the supervisor, and never registered in Pykka's
    ``ActorRegistry`` (a list: unregistering is O(n)); the registry actor
    keeps the id map instead.
    """

    def __init__(
        self,
        conversation_id: str,
        deps: Deps,
        *,
        preloaded: tuple[Conversation, list[Message]] | None = None,
        restarts: int = 0,
        carried_waiters: dict[str, list[Callback]] | None = None,
    ) -> None:
        super().__init__()
        self.conversation_id = conversation_id
        self.deps = deps
        self.core: ConversationCore | None = None
        # Set when the supervisor already has the state (a new conversation,
        # or a batch of restarts loaded at once): on_start skips the store.
        self._preloaded = preloaded
        self._restarts = restarts
        self._carried = carried_waiters
        self._missing = False
        # User messages being stored: user message id -> its Send.
        self._pending: dict[str, Send] = {}
        self.stop_reason = ""
        self.last_active = time.time()
        self._starting = False  # a _maybe_start loop is on the stack

    # Read by the supervisor --------------------------------------------------
    #
    # The supervisor's sweep and state counts read these directly instead of
    # asking 100,000 mailboxes: on one gevent hub the reads are atomic, and
    # they only read.

    def lifecycle_state(self) -> str:
        """``starting``, ``restarting`` (loading history), ``generating`` or ``idle``."""
        core = self.core
        if core is None:
            return "restarting" if self._restarts else "starting"
        return "generating" if core.current is not None else "idle"

    def is_idle(self) -> bool:
        """Started, with no reply running or waiting (may be passivated)."""
        core = self.core
        return core is not None and not core.busy

    # Pykka hooks -------------------------------------------------------------

    def on_crash(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: Any,
    ) -> None:
        # One line, then the supervisor (a traceback per crash broke the
        # one-line logs, and kills on purpose are not worth a line at all).
        reason = f"{type(exception_value).__name__}: {exception_value}"
        if not isinstance(exception_value, InjectedCrash):
            log.warning("conversation %s crashed: %s", self.conversation_id, reason)
        self._on_crash(reason)

    def on_start(self) -> None:
        deps = self.deps
        if self._preloaded is not None:
            info, history = self._preloaded
            self._preloaded = None
        else:
            loaded = deps.store.load(self.conversation_id)
            if loaded is None:
                self._missing = True
                self.stop_reason = "missing"
                self.stop()
                return
            info, history = loaded
        core = ConversationCore(info, history, deps.config.max_queued_messages)
        core.stats.restarts = self._restarts
        self.core = core
        orphans = core.answer_unanswered(deps.config.default_model, self._carried or {})
        self._carried = None
        for w in orphans:
            _call(w, ConversationCrashed("the conversation crashed and restarted"))
        if self._restarts:
            deps.bus.publish(ConversationState(info.id, "idle", "restarted"))
        self._maybe_start()

    def on_stop(self) -> None:
        core = self.core
        if core is not None:
            if core.current is not None and not core.current.will_complete:
                self._abort_generation(core.current, Outcome.CANCELLED)
            if core.queue or self._pending:
                err = ConversationError(f"conversation stopped ({self.stop_reason or 'stopped'})")
                for turn in core.queue:
                    for w in turn.waiters:
                        _call(w, err)
                for send in self._pending.values():
                    _call(send.on_done, err)
                    send.on_done = None
                core.queue.clear()
        sup = self.deps.supervisor
        if sup is not None and self.stop_reason != "shutdown":
            try:
                sup.tell(ChildStopped(self.conversation_id, self, self.stop_reason))
            except ActorDeadError:
                pass

    def on_unread(self, envelopes: list[Envelope[Any]]) -> list[Envelope[Any]]:
        # Pykka fails the asks left in a stopped actor's mailbox (callers
        # re-route on ActorDeadError) but drops its tells: a Send there would
        # leave its caller waiting forever. Stopped on request (stop_conversation,
        # or passivation raced by a sender), the supervisor hands them to a
        # successor; at shutdown or for a missing conversation they fail.
        leftovers = [e for e in envelopes if isinstance(e.message, Send | Regenerate)]
        if not leftovers:
            return envelopes
        sup = self.deps.supervisor
        handed = False
        if sup is not None and self.stop_reason not in ("shutdown", "missing", "deleted"):
            try:
                sup.tell(Redeliver(self.conversation_id, leftovers))
                handed = True
            except ActorDeadError:
                pass
        if not handed:
            err: ActorchatError = (
                NotFound(f"no conversation {self.conversation_id!r}")
                if self.stop_reason in ("missing", "deleted")
                else ConversationError("the conversation stopped before handling the message")
            )
            for envelope in leftovers:
                self._refuse(envelope.message, err)
        return [e for e in envelopes if not isinstance(e.message, Send | Regenerate)]

    def on_receive(self, message: Any) -> Any:
        if type(message) is not Passivate:  # the sweep's own question is no activity
            self.last_active = time.time()
        if self._missing:
            self._refuse(message, NotFound(f"no conversation {self.conversation_id!r}"))
            return None
        handler = _HANDLERS.get(type(message))
        if handler is None:
            return super().on_receive(message)
        return handler(self, message)

    @staticmethod
    def _refuse(message: Any, exc: ActorchatError) -> None:
        if isinstance(message, Send | Regenerate):
            _call(message.on_ack, exc)
            _call(message.on_done, exc)
        elif not isinstance(message, _GenDone | _Raise | _RunInPlace | Passivate):
            raise exc

    # Handlers ------------------------------------------------------------------

    def _on_send(self, msg: Send) -> None:
        core = self.core
        assert core is not None
        try:
            user = core.new_user_message(msg.content, msg.sender_id, time.time(), self._pending)
        except Overloaded as exc:
            _call(msg.on_ack, exc)
            _call(msg.on_done, exc)
            return
        # The actor never waits on the disk: the store calls back once the
        # message is durable, in submission order, and only then is it
        # acknowledged, announced and queued for its reply.
        self._pending[user.id] = msg
        self.deps.store.append_message_async(user, partial(self._user_stored, user, msg))

    def _user_stored(self, user: Message, msg: Send, error: StoreError | None) -> None:
        """Continuation of ``_on_send``; runs on the store's completion, without yielding."""
        deps = self.deps
        if error is not None:
            self._pending.pop(user.id, None)
            _call(msg.on_ack, error)
            _call(msg.on_done, error)
            return
        deps.metrics.messages += 1
        deps.bus.publish(MessageReceived(user.conversation_id, user))
        _call(msg.on_ack, user)
        # Pending until now: should the acknowledgement yield and the actor
        # crash or stop meanwhile, its waiter is handed over (or failed) with
        # the other pending ones.
        self._pending.pop(user.id, None)
        core = self.core
        if core is None or self.actor_stopped.is_set():
            return  # durable: a successor answers it (its waiter was handed over)
        core.accept(user, deps.config.default_model, msg.on_done)
        self._maybe_start()

    def _on_regenerate(self, msg: Regenerate) -> None:
        core = self.core
        assert core is not None
        deps = self.deps
        try:
            turn = core.regenerate(
                msg.message_id, msg.model, deps.config.default_model, deps.providers, msg.on_done
            )
        except ActorchatError as exc:
            _call(msg.on_ack, exc)
            _call(msg.on_done, exc)
            return
        _call(msg.on_ack, turn.user)
        self._maybe_start()

    def _on_cancel(self, msg: Cancel) -> bool:
        core = self.core
        assert core is not None
        gen = core.current
        if gen is None or not gen.cancellable:
            return False
        if msg.message_id is not None and msg.message_id != gen.id:
            return False
        self._cancel(gen)
        return True

    def _on_history(self, msg: GetHistory) -> list[Message]:
        assert self.core is not None
        h = self.core.history
        return list(h if msg.limit is None else h[-msg.limit :] if msg.limit else [])

    def _on_stats(self, _msg: GetStats) -> ConversationStats:
        assert self.core is not None
        return self.core.stats_snapshot(self.last_active)

    def _on_info(self, _msg: GetInfo) -> Conversation:
        assert self.core is not None
        return self.core.info_snapshot()

    def _on_update(self, msg: UpdateSettings) -> Conversation:
        core = self.core
        assert core is not None
        core.update(msg.title, msg.model, msg.system_prompt, self.deps.providers, time.time())
        self.deps.store.update_conversation(core.info)
        snapshot = core.info_snapshot()
        self.deps.bus.publish(ConversationUpdated(core.info.id, snapshot))
        return snapshot

    def _on_kill(self, _msg: Kill) -> None:
        raise InjectedCrash("killed on purpose (fault injection)")

    def _on_passivate(self, msg: Passivate) -> None:
        core = self.core
        if core is None or core.busy or self._pending or not self.actor_inbox.empty():
            return
        if self.last_active > msg.deadline:
            return
        self.stop_reason = "passivated"
        self._stop()

    def _on_shutdown(self, _msg: Shutdown) -> None:
        self.stop_reason = self.stop_reason or "shutdown"
        self._stop()

    def _on_ping(self, _msg: Ping) -> str:
        return "pong"

    def _on_raise(self, msg: _Raise) -> None:
        raise msg.error

    def _on_gen_done(self, done: _GenDone) -> None:
        core = self.core
        assert core is not None
        gen = done.gen
        if gen is not core.current:
            return
        outcome = done.outcome
        if outcome is Outcome.CRASH:
            raise done.value
        deps = self.deps
        if outcome is Outcome.DONE:
            end: StreamEnd = done.value
            reason, usage = end.finish_reason, end.usage
        else:
            reason = outcome.value  # "error" or "cancelled"
            usage = gen.partial_usage()
            if outcome is Outcome.ERROR:
                exc = done.value
                code = exc.code if isinstance(exc, ActorchatError) else "PROVIDER_ERROR"
                deps.metrics.provider_errors += 1
                root = exc  # the operator's line keeps the first cause, past retries
                while root.__cause__ is not None:
                    root = root.__cause__
                log.warning(
                    "conversation %s: reply %s failed: %s%s",
                    core.info.id,
                    gen.id,
                    exc,
                    f" (cause: {type(root).__name__}: {root})" if root is not exc else "",
                )
                deps.bus.publish(ErrorEvent(core.info.id, code, str(exc), gen.id))
        self._complete(gen, reason, usage)
        self._maybe_start()

    # Generations ---------------------------------------------------------------

    def _maybe_start(self, run: _RunInPlace | None = None) -> None:
        """Start queued replies while none is running.

        A loop, not a recursion: a reply that ends at once (an unknown model,
        a provider that never waits, a store that calls back at once) would
        otherwise start the next one a few frames deeper each time, and a
        queue of 100 turns came close to Python's recursion limit. Called
        again while the loop is on the stack, it returns: the loop looks again.
        ``run`` is a reply handed over to run here first (``_RunInPlace``).
        """
        if self._starting:
            return
        self._starting = True
        try:
            if run is not None:
                self._generate(run.gen, run.provider, run.request)
            while self._start_next():
                pass
        except Exception as exc:
            if gevent.getcurrent() is self.actor_greenlet:
                raise
            # A bug found on another greenlet (a store's completion): crash
            # the actor with it, rather than leave the reply half started.
            self.actor_ref.tell(_Raise(exc))
        finally:
            self._starting = False

    def _start_next(self) -> bool:
        """Start the next queued reply; True if it already ended (try the next)."""
        core = self.core
        assert core is not None
        if core.current is not None or not core.queue:
            return False
        deps = self.deps
        gen = core.begin(core.queue.pop(0), time.time())
        deps.metrics.generating += 1
        deps.bus.publish(StreamStart(core.info.id, gen.id, gen.model, gen.turn.user.id))
        provider = deps.providers.get(gen.model)
        model_cfg = deps.models.get(gen.model)
        if provider is None or model_cfg is None:
            err = ProviderError(f"no model named {gen.model!r} is configured")
            deps.bus.publish(ErrorEvent(core.info.id, err.code, str(err), gen.id))
            self._complete(gen, "error", Usage(estimated=True))
            return True
        request = core.request_for(gen, model_cfg, deps.config.system_prompt)
        gen.provider = provider
        if not provider.waits():
            # A stream that never yields: nothing could interleave with it, so
            # it needs no greenlet of its own, only the actor's. Started on
            # another greenlet (a store's completion), it is handed over; it
            # already counts as generating, so drain() waits for it.
            if gevent.getcurrent() is self.actor_greenlet:
                self._generate(gen, provider, request)
                return True
            self.actor_ref.tell(_RunInPlace(gen, provider, request))
            return False
        gen.greenlet = gevent.spawn_raw(self._generate, gen, provider, request)
        return False

    def _on_run_in_place(self, msg: _RunInPlace) -> None:
        core = self.core
        if core is not None and core.current is msg.gen:  # else it ended meanwhile
            self._maybe_start(msg)

    def _generate(self, gen: Generation, provider: Provider, request: GenerationRequest) -> None:
        """Body of a generation greenlet: stream, publish, then finish or tell the actor.

        Also run by the actor itself for a provider that never waits
        (``Provider.waits``); then it finishes the reply at once, and a crash
        is the actor's own.
        """
        outcome, value = Outcome.DONE, None
        core = self.core
        assert core is not None
        publish_deltas = self.deps.bus.publish_deltas
        metrics = self.deps.metrics
        streaming = ReplyState.STREAMING
        try:
            if gen.state is not streaming:  # cancelled, or the conversation stopped
                raise GenerationCancelled
            stream: Iterator[Any] = provider.stream(request)
            try:
                for item in stream:
                    if gen.state is not streaming:
                        raise GenerationCancelled
                    kind_ = type(item)
                    if kind_ is str or kind_ is tuple:
                        events = core.deltas(gen, (item,) if kind_ is str else item)
                        if events:
                            publish_deltas(events)
                            metrics.tokens += len(events)
                    else:
                        value = item
                        break
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            if value is None:
                value = StreamEnd("stop", gen.partial_usage())
        except GenerationCancelled:
            outcome = Outcome.CANCELLED
        except ActorchatError as exc:  # ProviderError, Timeout, Overloaded...
            outcome, value = Outcome.ERROR, exc
        except Exception as exc:  # noqa: BLE001 - a bug: the conversation crashes
            outcome, value = Outcome.CRASH, exc
        except BaseException as exc:  # noqa: BLE001 - killed from outside: a crash too
            outcome, value = Outcome.CRASH, ConversationCrashed(f"generation killed: {exc!r}")
        gen.stream_closed = True
        if gen.state is ReplyState.CANCELLING:
            if outcome is Outcome.ERROR:  # the failure a cancel provoked is the cancel
                outcome = Outcome.CANCELLED
            gen.to(ReplyState.STREAMED)
        elif gen.state is streaming:
            gen.to(ReplyState.STREAMED)
        # else: it ended meanwhile (a crash, or a stop that stored it): the
        # actor ignores this outcome, the reply is no longer its current one.
        done = _GenDone(gen, outcome, value)
        if gen.greenlet is None:  # run by the actor itself (in place)
            self._on_gen_done(done)
            return
        if (
            outcome is not Outcome.CRASH
            and self.actor_inbox.parked
            and self.deps.store.callbacks_never_wait
            and not self.actor_stopped.is_set()
        ):
            # The actor waits on an empty mailbox, so it is in no handler, and
            # finishing (handing the reply to a store that only queues it)
            # cannot yield: doing it here is what the actor would do next,
            # minus one mailbox hop and two greenlet switches per reply.
            self.last_active = time.time()
            try:
                self._on_gen_done(done)
                return
            except Exception as exc:  # noqa: BLE001 - a bug: crash the actor with it
                done = _Raise(exc)  # type: ignore[assignment]
        try:
            self.actor_ref.tell(done)
        except ActorDeadError:
            pass

    def _cancel(self, gen: Generation) -> None:
        if gen.state is ReplyState.STREAMING:
            gen.to(ReplyState.CANCELLING)
        g = gen.greenlet
        if g is not None and g and not g.dead:
            # Like gevent.kill, but checked again when the hub runs it: by
            # then the generation may have finished, and a throw into a dead
            # greenlet raises in the hub (a traceback on stderr).
            gevent.get_hub().loop.run_callback(_throw_cancel, g, gen)

    def _complete(self, gen: Generation, reason: str, usage: Usage) -> None:
        """Store the reply; once durable, publish its one completion."""
        core = self.core
        assert core is not None
        message = core.finish(gen, reason, usage, time.time())
        turn = gen.turn
        replaces = turn.replaces or core.reply_to(turn.user.turn)
        store = self.deps.store
        if replaces is not None:
            store.supersede_message_async(core.info.id, replaces.id)
        store.append_message_async(message, partial(self._reply_stored, gen, message, replaces))
        # Only now: should the store raise (a bug), the crash that follows
        # still ends this reply and hands its waiters to the successor. A
        # store that called back at once has finished it already.
        if gen.state is not ReplyState.DONE:
            gen.to(ReplyState.FINISHING)

    def _reply_stored(
        self, gen: Generation, message: Message, replaces: Message | None, error: StoreError | None
    ) -> None:
        """Continuation of ``_complete``; runs on the store's completion, without yielding."""
        if gen.state is ReplyState.ABORTED:
            return  # a crash already ended it (a store that raised after queuing the write)
        if gen.state is not ReplyState.FINISHING:  # a store that calls back at once
            gen.to(ReplyState.FINISHING)
        gen.to(ReplyState.DONE)
        core = self.core
        assert core is not None
        deps = self.deps
        deps.metrics.generating -= 1
        if error is not None:
            log.warning("conversation %s: reply not stored: %s", core.info.id, error)
            message.finish_reason = "error"
        else:
            if replaces is not None:
                core.remove(replaces)
            core.add(message)
        if core.current is gen:
            core.current = None
        deps.bus.publish(
            StreamComplete(
                core.info.id,
                gen.id,
                message.usage or Usage(),
                message.finish_reason or "stop",
                message,
            )
        )
        for w in gen.turn.waiters:
            _call(w, message)
        if not self.actor_stopped.is_set():
            self._maybe_start()

    def _abort_generation(self, gen: Generation, how: Outcome) -> None:
        """End a generation from outside its greenlet: a stop (CANCELLED) or a crash."""
        self._cancel(gen)
        if how is Outcome.CANCELLED:
            self._complete(gen, "cancelled", gen.partial_usage())
            return
        core = self.core
        assert core is not None
        gen.to(ReplyState.ABORTED)
        self.deps.metrics.generating -= 1
        core.current = None
        usage = gen.partial_usage()
        if gen.chunks:
            # Its user message is answered again after the restart "as by
            # stream_response" (PROTOCOL.md rule 8): what clients were shown
            # stays stored as an earlier version. Queued before we tell the
            # supervisor, so the reload reads it (and leaves it out of history).
            partial = core.finish(gen, "error", usage, time.time())
            partial.superseded = True
            self.deps.store.append_message_async(partial, _ignore_store_result)
        bus = self.deps.bus
        bus.publish(
            ErrorEvent(
                core.info.id,
                "INTERNAL_ERROR",
                "the conversation crashed; it is being restarted and will answer again",
                gen.id,
            )
        )
        bus.publish(StreamComplete(core.info.id, gen.id, usage, "error", None, superseded=True))

    def _on_crash(self, reason: str) -> None:
        """Hand everything in flight to the supervisor, which restarts us."""
        core = self.core
        waiters: dict[str, list[Callback]] = {}
        if core is not None:
            gen = core.current
            if gen is not None and not gen.will_complete:
                self._abort_generation(gen, Outcome.CRASH)
            waiters = core.hand_over(gen)
        for user_id, send in self._pending.items():
            if send.on_done is not None:
                waiters.setdefault(user_id, []).append(send.on_done)
                send.on_done = None
        inbox: list[Any] = []
        while not self.actor_inbox.empty():
            inbox.append(self.actor_inbox.get())
        sup = self.deps.supervisor
        if sup is None:
            return
        sup.tell(ChildFailed(self.conversation_id, self, reason, inbox, waiters))


def _ignore_store_result(_error: StoreError | None) -> None:
    """A write nobody waits for (a crashed reply's partial text, kept as a version)."""


def _throw_cancel(g: Any, gen: Generation) -> None:
    """Raise ``GenerationCancelled`` in a generation greenlet still streaming."""
    if g and not g.dead and not gen.stream_closed:
        g.throw(GenerationCancelled)


_HANDLERS: dict[type, Callable[[ConversationActor, Any], Any]] = {
    Send: ConversationActor._on_send,
    Regenerate: ConversationActor._on_regenerate,
    Cancel: ConversationActor._on_cancel,
    GetHistory: ConversationActor._on_history,
    GetStats: ConversationActor._on_stats,
    GetInfo: ConversationActor._on_info,
    UpdateSettings: ConversationActor._on_update,
    Kill: ConversationActor._on_kill,
    Passivate: ConversationActor._on_passivate,
    Shutdown: ConversationActor._on_shutdown,
    Ping: ConversationActor._on_ping,
    _GenDone: ConversationActor._on_gen_done,
    _Raise: ConversationActor._on_raise,
    _RunInPlace: ConversationActor._on_run_in_place,
}
