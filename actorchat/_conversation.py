"""A conversation: its rules in a plain class, and the actor that owns them.

``ConversationCore`` holds history, settings, the queue of turns waiting for
a reply and the statistics; it decides ordering and has no threads, so tests
can drive it directly. ``ConversationActor`` is the thin Pykka shell: it owns
one core and its mailbox, persists through the store, publishes on the bus,
and runs each generation in a greenlet of its own so that it keeps answering
(history, stats, cancel) while a reply streams.

Messages to the actor are small slotted objects sent with ``tell`` (or
``ask`` for reads); proxies are avoided on purpose, they cost 4x an ask.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
import pykka
from pykka import ActorDeadError

from actorchat._actor import GreenletActor
from actorchat._bus import EventBus
from actorchat._events import (
    ConversationState,
    ConversationUpdated,
    ErrorEvent,
    MessageReceived,
    StreamComplete,
    StreamContent,
    StreamStart,
)
from actorchat._records import Conversation, Message, Usage, new_id
from actorchat.config import Config
from actorchat.errors import (
    ActorchatError,
    ConversationCrashed,
    ConversationError,
    InvalidRequest,
    NotFound,
    Overloaded,
    ProviderError,
    StoreError,
)
from actorchat.providers import (
    ChatTurn,
    GenerationCancelled,
    GenerationRequest,
    Provider,
    StreamEnd,
    fit_context,
)
from actorchat.stores import Store

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["ConversationActor", "ConversationCore"]

log = logging.getLogger("actorchat.conversation")

Callback = Callable[[Any], None]


class InjectedCrash(RuntimeError):
    """Raised inside a conversation by ``kill()``: a deliberate, unexpected crash."""


# -- messages to the actor ------------------------------------------------


class Send:
    """A user message; ``on_ack`` gets the stored Message, ``on_done`` the reply."""

    __slots__ = ("content", "on_ack", "on_done", "sender_id")

    def __init__(
        self,
        content: str,
        sender_id: str,
        on_ack: Callback | None = None,
        on_done: Callback | None = None,
    ) -> None:
        self.content = content
        self.sender_id = sender_id
        self.on_ack = on_ack
        self.on_done = on_done


class Regenerate:
    """Answer a user message again (``stream_response``)."""

    __slots__ = ("message_id", "model", "on_ack", "on_done")

    def __init__(
        self,
        message_id: str | None,
        model: str | None,
        on_ack: Callback | None = None,
        on_done: Callback | None = None,
    ) -> None:
        self.message_id = message_id
        self.model = model
        self.on_ack = on_ack
        self.on_done = on_done


@dataclass(slots=True)
class Cancel:
    message_id: str | None = None


@dataclass(slots=True)
class GetHistory:
    limit: int | None = None


class GetStats:
    __slots__ = ()


class GetInfo:
    __slots__ = ()


class Ping:
    """Answered with ``"pong"``: measures a bare ask round trip."""

    __slots__ = ()


@dataclass(slots=True)
class UpdateSettings:
    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None


class Kill:
    """Crash on purpose (fault injection)."""

    __slots__ = ()


@dataclass(slots=True)
class Passivate:
    """Stop if idle since ``deadline`` (sent by the supervisor's sweep)."""

    deadline: float


class Shutdown:
    """Stop now: cancel a reply in progress, keeping its partial text."""

    __slots__ = ()


class _GenDone:
    __slots__ = ("gen", "kind", "value")

    def __init__(self, gen: Generation, kind: str, value: Any) -> None:
        self.gen = gen
        self.kind = kind
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


# -- the logic --------------------------------------------------------------


class Turn:
    """A user message waiting for (or getting) its reply."""

    __slots__ = ("attempt", "model", "replaces", "user", "waiters")

    def __init__(
        self,
        user: Message,
        model: str,
        waiters: list[Callback] | None = None,
        replaces: Message | None = None,
        attempt: int = 0,
    ) -> None:
        self.user = user
        self.model = model
        self.replaces = replaces
        self.attempt = attempt
        self.waiters = waiters or []


class Generation:
    """One reply being generated."""

    __slots__ = (
        "cancelled",
        "chunks",
        "ended",
        "finishing",
        "first_token_at",
        "greenlet",
        "id",
        "index",
        "model",
        "provider",
        "request",
        "started",
        "streamed",
        "turn",
    )

    def __init__(self, turn: Turn, model: str, now: float) -> None:
        self.id = new_id()
        self.turn = turn
        self.model = model
        self.chunks: list[str] = []
        self.index = 0
        self.started = now
        self.first_token_at = 0.0
        self.greenlet: Any = None
        # Set once it starts: what was asked, of whom (for usage it never got).
        self.provider: Provider | None = None
        self.request: GenerationRequest | None = None
        self.cancelled = False
        # The provider's stream is over: nothing left to cancel.
        self.streamed = False
        # Ended by a crash (its StreamComplete is out): a late store callback is ignored.
        self.ended = False
        # Set once the reply is being stored: it will complete normally.
        self.finishing = False

    def partial_usage(self) -> Usage:
        """Estimated usage of a reply that ended without the backend's count.

        Cancelled, failed or crashed, it still cost its prompt: counted as
        the provider counts it, or estimated from the context as sent.
        """
        prompt = 0
        request, provider = self.request, self.provider
        if request is not None and provider is not None:
            counted = provider.prompt_tokens(request)
            if counted is None:
                model = request.model
                counted = fit_context(
                    request.system_prompt,
                    request.messages,
                    model.context_window,
                    request.max_tokens or model.max_tokens,
                ).prompt_tokens
            prompt = counted
        return Usage(prompt, len(self.chunks), estimated=True)


@dataclass(slots=True)
class ConversationStats:
    """A conversation's counters, as ``get_stats`` returns them."""

    conversation_id: str
    state: str = "idle"
    messages: int = 0
    user_messages: int = 0
    replies: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    errors: int = 0
    restarts: int = 0
    queued: int = 0
    time_to_first_token: float | None = None
    avg_time_to_first_token: float | None = None
    created_at: float = 0.0
    last_active: float = 0.0
    ttft_total: float = field(default=0.0, repr=False)
    ttft_count: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "state": self.state,
            "messages": self.messages,
            "user_messages": self.user_messages,
            "replies": self.replies,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "errors": self.errors,
            "restarts": self.restarts,
            "queued": self.queued,
            "time_to_first_token": self.time_to_first_token,
            "avg_time_to_first_token": self.avg_time_to_first_token,
            "created_at": self.created_at,
            "last_active": self.last_active,
        }


def _rank(m: Message) -> tuple[int, bool]:
    return (m.turn, m.role == "assistant")


class ConversationCore:
    """History, queue and statistics of one conversation; no I/O, no threads."""

    def __init__(self, info: Conversation, history: list[Message], max_queued: int) -> None:
        self.info = info
        self.history = history
        self.queue: list[Turn] = []
        self.current: Generation | None = None
        self.max_queued = max_queued
        self.next_turn = max((m.turn for m in history), default=0) + 1
        self.stats = ConversationStats(
            info.id, created_at=info.created_at, last_active=info.updated_at
        )
        for m in history:
            self._count(m)

    def _count(self, m: Message) -> None:
        s = self.stats
        s.messages += 1
        if m.role == "user":
            s.user_messages += 1
        else:
            s.replies += 1
            if m.usage is not None:
                s.tokens_in += m.usage.prompt_tokens
                s.tokens_out += m.usage.completion_tokens

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.queue)

    def unanswered(self) -> list[Message]:
        """User messages with no reply, in order (after a crash or restart)."""
        answered = {m.turn for m in self.history if m.role == "assistant"}
        return [m for m in self.history if m.role == "user" and m.turn not in answered]

    def new_user_message(
        self, content: str, sender_id: str, now: float, pending: Sized = ()
    ) -> Message:
        waiting = len(self.queue) + len(pending)
        if waiting >= self.max_queued:
            msg = f"{waiting} messages are already waiting for a reply"
            raise Overloaded(msg)
        turn = self.next_turn
        self.next_turn += 1
        return Message(new_id(), self.info.id, "user", content, sender_id, now, turn)

    def add(self, message: Message) -> None:
        """Insert a stored message at its place in turn order."""
        h = self.history
        key = _rank(message)
        i = len(h)
        while i and _rank(h[i - 1]) > key:
            i -= 1
        h.insert(i, message)
        self._count(message)
        self.info.message_count += 1
        self.info.updated_at = message.created_at

    def remove(self, message: Message) -> None:
        self.history = [m for m in self.history if m.id != message.id]
        self.info.message_count -= 1

    def reply_to(self, turn: int) -> Message | None:
        for m in reversed(self.history):
            if m.turn == turn and m.role == "assistant":
                return m
        return None

    def find_user(self, message_id: str | None) -> Message:
        """The user message a regenerate names (default: the last one)."""
        if message_id is None:
            for m in reversed(self.history):
                if m.role == "user":
                    return m
            raise InvalidRequest("the conversation has no user message to answer")
        for m in self.history:
            if m.id == message_id:
                if m.role == "user":
                    return m
                for u in self.history:
                    if u.turn == m.turn and u.role == "user":
                        return u
        raise NotFound(
            f"no message {message_id!r} in the current history of conversation "
            f"{self.info.id!r} (a replaced reply is kept only as an earlier version: "
            "name its user message)"
        )

    def context(self, turn: Turn) -> list[ChatTurn]:
        """Exactly the turns before this one, then its user message."""
        t = turn.user.turn
        out = [ChatTurn(m.role, m.content) for m in self.history if m.turn < t]
        out.append(ChatTurn("user", turn.user.content))
        return out

    def begin(self, turn: Turn, now: float) -> Generation:
        gen = Generation(turn, turn.model, now)
        self.current = gen
        return gen

    def deltas(self, gen: Generation, texts: tuple[str, ...]) -> list[StreamContent]:
        """The deltas of texts that arrived together (one or more), with their indexes."""
        texts = tuple(t for t in texts if t)
        if not texts:
            return []
        chunks = gen.chunks
        if not chunks:
            gen.first_token_at = time.time()
        chunks.extend(texts)
        i = gen.index
        gen.index = i + len(texts)
        cid, gid = self.info.id, gen.id
        return [StreamContent(cid, gid, t, k) for k, t in enumerate(texts, i)]

    def finish(self, gen: Generation, reason: str, usage: Usage, now: float) -> Message:
        """The assistant message that ends a generation (not yet stored)."""
        s = self.stats
        if gen.first_token_at:
            ttft = gen.first_token_at - gen.started
            s.time_to_first_token = ttft
            s.ttft_total += ttft
            s.ttft_count += 1
            s.avg_time_to_first_token = s.ttft_total / s.ttft_count
        if reason == "error":
            s.errors += 1
        return Message(
            gen.id,
            self.info.id,
            "assistant",
            "".join(gen.chunks),
            gen.model,
            now,
            gen.turn.user.turn,
            usage,
            reason,
            gen.model,
        )


# -- the actor ---------------------------------------------------------------


class Deps:
    """What every conversation shares: built once by the system, never copied."""

    def __init__(
        self,
        config: Config,
        store: Store,
        bus: EventBus,
        providers: dict[str, Provider],
        metrics: Any,
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
        self._crashed = False
        # User messages being stored: user message id -> its Send.
        self._pending: dict[str, Send] = {}
        self.stop_reason = ""
        self.last_active = time.time()
        self._starting = False  # a _maybe_start loop is on the stack

    # Pykka hooks -------------------------------------------------------------

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Overrides Pykka's private hook, which logs a full traceback and
        # unregisters from its list registry: one line, then the supervisor.
        self.actor_stopped.set()
        if self._crashed:
            return
        self._crashed = True
        reason = f"{type(exception_value).__name__}: {exception_value}"
        if not isinstance(exception_value, InjectedCrash):
            log.warning("conversation %s crashed: %s", self.conversation_id, reason)
        try:
            self._on_crash(reason)
        except Exception:
            log.exception("conversation %s: crash handling failed", self.conversation_id)

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
        carried = self._carried or {}
        self._carried = None
        for user in core.unanswered():
            core.queue.append(
                Turn(user, info.model or deps.config.default_model, carried.pop(user.id, None))
            )
        for waiters in carried.values():
            for w in waiters:
                _call(w, ConversationCrashed("the conversation crashed and restarted"))
        if self._restarts:
            deps.bus.publish(ConversationState(info.id, "idle", "restarted"))
        self._maybe_start()

    def on_stop(self) -> None:
        core = self.core
        if core is not None:
            if core.current is not None and not core.current.finishing:
                self._abort_generation(core.current, "cancelled")
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
            from actorchat._supervisor import ChildStopped

            try:
                sup.tell(ChildStopped(self.conversation_id, self, self.stop_reason))
            except ActorDeadError:
                pass

    def _actor_loop_teardown(self) -> None:
        # Pykka fails the asks left in a stopped actor's mailbox (callers
        # re-route on ActorDeadError) but drops its tells: a Send there would
        # leave its caller waiting forever. Stopped on request (stop_conversation,
        # or passivation raced by a sender), the supervisor hands them to a
        # successor; at shutdown or for a missing conversation they fail.
        if self.actor_inbox.empty():
            return  # the usual case, and Pykka's version would find nothing either
        envelopes = []
        while not self.actor_inbox.empty():
            envelopes.append(self.actor_inbox.get())
        leftovers = []
        for envelope in envelopes:
            if isinstance(envelope.message, Send | Regenerate):
                leftovers.append(envelope)
            else:
                self.actor_inbox.put(envelope)  # Pykka's teardown answers these
        super()._actor_loop_teardown()
        if not leftovers:
            return
        sup = self.deps.supervisor
        if sup is not None and self.stop_reason not in ("shutdown", "missing", "deleted"):
            from actorchat._supervisor import Redeliver

            try:
                sup.tell(Redeliver(self.conversation_id, leftovers))
                return
            except ActorDeadError:
                pass
        err: ActorchatError = (
            NotFound(f"no conversation {self.conversation_id!r}")
            if self.stop_reason in ("missing", "deleted")
            else ConversationError("the conversation stopped before handling the message")
        )
        for envelope in leftovers:
            self._refuse(envelope.message, err)

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
        core.add(user)
        waiters = [msg.on_done] if msg.on_done is not None else None
        core.queue.append(Turn(user, core.info.model or deps.config.default_model, waiters))
        self._maybe_start()

    def _on_regenerate(self, msg: Regenerate) -> None:
        core = self.core
        assert core is not None
        try:
            user = core.find_user(msg.message_id)
            model = msg.model or core.info.model or self.deps.config.default_model
            if model not in self.deps.providers:
                # As for create_conversation: a bad argument, not a missing resource.
                raise InvalidRequest(
                    f"no model named {model!r} (configured: {sorted(self.deps.providers)})"
                )
            if len(core.queue) >= core.max_queued:
                raise Overloaded("too many replies are already waiting")
        except ActorchatError as exc:
            _call(msg.on_ack, exc)
            _call(msg.on_done, exc)
            return
        replaces = core.reply_to(user.turn)
        attempt = 0 if replaces is None else 1 + zlib.crc32(replaces.content.encode())
        waiters = [msg.on_done] if msg.on_done is not None else None
        core.queue.append(Turn(user, model, waiters, replaces=replaces, attempt=attempt))
        _call(msg.on_ack, user)
        self._maybe_start()

    def _on_cancel(self, msg: Cancel) -> bool:
        core = self.core
        assert core is not None
        gen = core.current
        if gen is None or gen.finishing or gen.streamed:
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
        core = self.core
        assert core is not None
        s = core.stats
        s.state = "generating" if core.current is not None else "idle"
        s.queued = len(core.queue)
        s.last_active = self.last_active
        return ConversationStats(**{f: getattr(s, f) for f in s.__dataclass_fields__})

    def _on_info(self, _msg: GetInfo) -> Conversation:
        assert self.core is not None
        info = self.core.info
        return Conversation(
            info.id,
            info.owner,
            info.title,
            info.model,
            info.system_prompt,
            info.created_at,
            info.updated_at,
            info.message_count,
        )

    def _on_update(self, msg: UpdateSettings) -> Conversation:
        core = self.core
        assert core is not None
        info = core.info
        if msg.model is not None and msg.model not in self.deps.providers:
            raise InvalidRequest(f"no model named {msg.model!r}")
        if msg.title is not None:
            info.title = msg.title
        if msg.model is not None:
            info.model = msg.model
        if msg.system_prompt is not None:
            info.system_prompt = msg.system_prompt
        info.updated_at = time.time()
        self.deps.store.update_conversation(info)
        snapshot = self._on_info(GetInfo())
        self.deps.bus.publish(ConversationUpdated(info.id, snapshot))
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
        if done.kind == "crash":
            raise done.value
        deps = self.deps
        if done.kind == "done":
            end: StreamEnd = done.value
            reason, usage = end.finish_reason, end.usage
        else:
            reason = "error" if done.kind == "error" else "cancelled"
            usage = gen.partial_usage()
            if done.kind == "error":
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
        turn = core.queue.pop(0)
        gen = core.begin(turn, time.time())
        deps.metrics.generating += 1
        deps.bus.publish(StreamStart(core.info.id, gen.id, gen.model, turn.user.id))
        provider = deps.providers.get(gen.model)
        if provider is None:
            err = ProviderError(f"no model named {gen.model!r} is configured")
            deps.bus.publish(ErrorEvent(core.info.id, err.code, str(err), gen.id))
            self._complete(gen, "error", Usage(estimated=True))
            return True
        model_cfg = deps.models.get(gen.model)
        info = core.info
        system_prompt = (
            info.system_prompt
            or (model_cfg.system_prompt if model_cfg and model_cfg.system_prompt else "")
            or deps.config.system_prompt
        )
        assert model_cfg is not None
        request = GenerationRequest(
            model=model_cfg,
            messages=core.context(turn),
            system_prompt=system_prompt,
            max_tokens=model_cfg.max_tokens,
            temperature=model_cfg.temperature,
            attempt=turn.attempt,
            conversation_id=info.id,
        )
        gen.provider, gen.request = provider, request
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
        kind, value = "done", None
        core = self.core
        assert core is not None
        publish_deltas = self.deps.bus.publish_deltas
        metrics = self.deps.metrics
        try:
            if gen.cancelled:
                raise GenerationCancelled
            stream: Iterator[Any] = provider.stream(request)
            try:
                for item in stream:
                    if gen.cancelled:
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
            kind = "cancelled"
        except ActorchatError as exc:  # ProviderError, Timeout, Overloaded...
            kind, value = "error", exc
        except Exception as exc:  # noqa: BLE001 - a bug: the conversation crashes
            kind, value = "crash", exc
        except BaseException as exc:  # noqa: BLE001 - killed from outside: a crash too
            kind, value = "crash", ConversationCrashed(f"generation killed: {exc!r}")
        gen.streamed = True
        if gen.cancelled and kind != "crash":
            kind = "cancelled" if kind != "done" else kind
        done = _GenDone(gen, kind, value)
        if gen.greenlet is None:  # run by the actor itself (in place)
            self._on_gen_done(done)
            return
        if (
            kind != "crash"
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
        gen.cancelled = True
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
        # still ends this reply and hands its waiters to the successor.
        gen.finishing = True

    def _reply_stored(
        self, gen: Generation, message: Message, replaces: Message | None, error: StoreError | None
    ) -> None:
        """Continuation of ``_complete``; runs on the store's completion, without yielding."""
        if gen.ended:
            return  # a crash already ended it (a store that raised after queuing the write)
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

    def _abort_generation(self, gen: Generation, reason: str) -> None:
        """End a generation from outside its greenlet (stop or crash)."""
        self._cancel(gen)
        if reason == "cancelled":
            self._complete(gen, "cancelled", gen.partial_usage())
            return
        core = self.core
        assert core is not None
        gen.ended = True
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
        bus.publish(StreamComplete(core.info.id, gen.id, usage, "error", None))

    def _on_crash(self, reason: str) -> None:
        """Hand everything in flight to the supervisor, which restarts us."""
        core = self.core
        waiters: dict[str, list[Callback]] = {}
        if core is not None:
            gen = core.current
            if gen is not None and not gen.finishing:
                waiters.setdefault(gen.turn.user.id, []).extend(gen.turn.waiters)
                self._abort_generation(gen, "error")
            for turn in core.queue:
                waiters.setdefault(turn.user.id, []).extend(turn.waiters)
            core.queue.clear()
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
        from actorchat._supervisor import ChildFailed

        sup.tell(ChildFailed(self.conversation_id, self, reason, inbox, waiters))


def _ignore_store_result(_error: StoreError | None) -> None:
    """A write nobody waits for (a crashed reply's partial text, kept as a version)."""


def _throw_cancel(g: Any, gen: Generation) -> None:
    """Raise ``GenerationCancelled`` in a generation greenlet still streaming."""
    if g and not g.dead and not gen.streamed:
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
