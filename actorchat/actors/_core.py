"""A conversation's rules, as plain objects: no greenlets, no I/O.

``ConversationCore`` holds history, settings, the queue of turns waiting for
a reply and the statistics, and decides ordering: which turn is answered
next, with which context, which message a regeneration replaces, what a
finished reply looks like. ``Generation`` is one reply and its lifecycle,
an explicit state machine::

    STREAMING --cancel--> CANCELLING
    STREAMING | CANCELLING --the provider's stream ended--> STREAMED
    STREAMING | CANCELLING | STREAMED --handed to the store--> FINISHING --stored--> DONE
    STREAMING | CANCELLING | STREAMED --the conversation crashed--> ABORTED

Anything else is ``IllegalTransition``: a reply that is being stored is
never aborted (it completes), and one that ended is never ended again.
Tests drive all of it without an actor (``tests/test_core.py``); the actor
(``_conversation.py``) is the shell that carries it out.
"""

from __future__ import annotations

import enum
import time
import zlib
from collections.abc import Collection, Sized
from dataclasses import dataclass, field
from typing import Any

from actorchat._events import StreamContent
from actorchat._records import Conversation, Message, Usage, new_id
from actorchat.actors._messages import Callback
from actorchat.config import ModelConfig
from actorchat.errors import InvalidRequest, NotFound, Overloaded
from actorchat.providers import ChatTurn, GenerationRequest, Provider, fit_context

__all__ = [
    "ConversationCore",
    "ConversationStats",
    "Generation",
    "IllegalTransition",
    "Outcome",
    "ReplyState",
    "Turn",
]


class ReplyState(enum.Enum):
    """Where a reply is in its life (see the module docstring)."""

    STREAMING = "streaming"  # the provider's stream runs
    CANCELLING = "cancelling"  # a cancel was asked: the stream stops at its next item
    STREAMED = "streamed"  # the stream is over; its outcome is on its way to the actor
    FINISHING = "finishing"  # handed to the store: it will complete normally
    DONE = "done"  # stored (or failed to store) and published
    ABORTED = "aborted"  # ended by a crash; its StreamComplete is out


_S = ReplyState
_MOVES: dict[ReplyState, frozenset[ReplyState]] = {
    _S.STREAMING: frozenset({_S.CANCELLING, _S.STREAMED, _S.FINISHING, _S.ABORTED}),
    _S.CANCELLING: frozenset({_S.STREAMED, _S.FINISHING, _S.ABORTED}),
    _S.STREAMED: frozenset({_S.FINISHING, _S.ABORTED}),
    _S.FINISHING: frozenset({_S.DONE}),
    _S.DONE: frozenset(),
    _S.ABORTED: frozenset(),
}


# Each state carries its moves as a tuple: ``in`` on a tuple compares by
# identity first, where a dict or set of enum members hashes each one in
# Python code (~1 µs a reply on the hot path).
for _state, _moves in _MOVES.items():
    _state.moves = tuple(_moves)  # type: ignore[attr-defined]


class IllegalTransition(RuntimeError):
    """A reply was asked to move where its lifecycle does not go (a bug)."""


class Outcome(enum.Enum):
    """How a provider's stream ended, as the generation reports it to the actor."""

    DONE = "done"  # its StreamEnd came: finish reason and usage
    CANCELLED = "cancelled"  # stopped by a cancel: partial text kept
    ERROR = "error"  # the provider failed (ProviderError, Timeout...): partial text kept
    CRASH = "crash"  # a bug: the conversation crashes and is restarted


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
    """One reply being generated, and where it is in its lifecycle (``ReplyState``)."""

    __slots__ = (
        "chunks",
        "first_token_at",
        "greenlet",
        "id",
        "index",
        "model",
        "provider",
        "request",
        "started",
        "state",
        "stream_closed",
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
        self.state = ReplyState.STREAMING
        # The generation greenlet is past the provider's stream: a cancel
        # must no longer be thrown into it (a fact about the greenlet, apart
        # from the reply's lifecycle: a crash may end the reply first).
        self.stream_closed = False

    def to(self, state: ReplyState) -> None:
        """Move to ``state``; ``IllegalTransition`` if the lifecycle forbids it."""
        if state not in self.state.moves:  # type: ignore[attr-defined]
            raise IllegalTransition(f"reply {self.id}: {self.state.value} -> {state.value}")
        self.state = state

    @property
    def cancellable(self) -> bool:
        """Whether the provider's stream still runs (a cancel can stop it)."""
        return self.state is ReplyState.STREAMING or self.state is ReplyState.CANCELLING

    @property
    def will_complete(self) -> bool:
        """Handed to the store (or stored): it completes normally, whatever happens next."""
        return self.state is ReplyState.FINISHING or self.state is ReplyState.DONE

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

    # Decisions the actor carries out ---------------------------------------------

    def accept(self, user: Message, default_model: str, waiter: Callback | None) -> Turn:
        """A user message is durable: into history, and queued for its reply."""
        self.add(user)
        turn = Turn(user, self.info.model or default_model, [waiter] if waiter else None)
        self.queue.append(turn)
        return turn

    def answer_unanswered(
        self, default_model: str, carried: dict[str, list[Callback]]
    ) -> list[Callback]:
        """After a (re)start: queue every user message left unanswered, in order.

        ``carried`` are the callers a crashed predecessor handed over, by
        user message id; they wait for these replies. Returns those whose
        message is not among them (nothing will answer them here).
        """
        left = dict(carried)
        for user in self.unanswered():
            self.queue.append(Turn(user, self.info.model or default_model, left.pop(user.id, None)))
        return [w for waiters in left.values() for w in waiters]

    def regenerate(
        self,
        message_id: str | None,
        model: str | None,
        default_model: str,
        models: Collection[str],
        waiter: Callback | None,
    ) -> Turn:
        """Queue a new answer to a user message (``stream_response``); its turn.

        Raises ``NotFound``/``InvalidRequest`` for what it names, ``Overloaded``
        past the queue bound. The new answer's ``attempt`` is derived from the
        reply it replaces, so a deterministic model answers differently.
        """
        user = self.find_user(message_id)
        chosen = model or self.info.model or default_model
        if chosen not in models:
            # As for create_conversation: a bad argument, not a missing resource.
            raise InvalidRequest(f"no model named {chosen!r} (configured: {sorted(models)})")
        if len(self.queue) >= self.max_queued:
            raise Overloaded("too many replies are already waiting")
        replaces = self.reply_to(user.turn)
        attempt = 0 if replaces is None else 1 + zlib.crc32(replaces.content.encode())
        turn = Turn(user, chosen, [waiter] if waiter else None, replaces=replaces, attempt=attempt)
        self.queue.append(turn)
        return turn

    def update(
        self,
        title: str | None,
        model: str | None,
        system_prompt: str | None,
        models: Collection[str],
        now: float,
    ) -> None:
        """Change the conversation's settings; ``InvalidRequest`` for an unknown model."""
        info = self.info
        if model is not None and model not in models:
            raise InvalidRequest(f"no model named {model!r}")
        if title is not None:
            info.title = title
        if model is not None:
            info.model = model
        if system_prompt is not None:
            info.system_prompt = system_prompt
        info.updated_at = now

    def hand_over(self, current: Generation | None) -> dict[str, list[Callback]]:
        """A crash: the callers waiting for replies, by user message, for the successor.

        Empties the queue; ``current`` (the reply that was running, if it
        will not complete) hands its callers over too.
        """
        waiters: dict[str, list[Callback]] = {}
        if current is not None and not current.will_complete:
            waiters.setdefault(current.turn.user.id, []).extend(current.turn.waiters)
        for turn in self.queue:
            waiters.setdefault(turn.user.id, []).extend(turn.waiters)
        self.queue.clear()
        return waiters

    def request_for(
        self, gen: Generation, model: ModelConfig, default_system_prompt: str
    ) -> GenerationRequest:
        """What the provider is asked for this reply: exactly the turns before it.

        The system prompt is the conversation's, else the model's, else the
        configuration's.
        """
        info = self.info
        turn = gen.turn
        request = GenerationRequest(
            model=model,
            messages=self.context(turn),
            system_prompt=info.system_prompt or model.system_prompt or default_system_prompt,
            max_tokens=model.max_tokens,
            temperature=model.temperature,
            attempt=turn.attempt,
            conversation_id=info.id,
        )
        gen.request = request
        return request

    def stats_snapshot(self, last_active: float) -> ConversationStats:
        """A copy of the counters as ``get_stats`` answers them."""
        s = self.stats
        s.state = "generating" if self.current is not None else "idle"
        s.queued = len(self.queue)
        s.last_active = last_active
        return ConversationStats(**{f: getattr(s, f) for f in s.__dataclass_fields__})

    def info_snapshot(self) -> Conversation:
        """A copy of the conversation's record (the actor's own is never shared)."""
        i = self.info
        return Conversation(
            i.id,
            i.owner,
            i.title,
            i.model,
            i.system_prompt,
            i.created_at,
            i.updated_at,
            i.message_count,
        )

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
