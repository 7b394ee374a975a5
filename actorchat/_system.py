"""``ChatSystem``: the wiring module and the Python API over it.

One class of ~850 lines on purpose: it *is* the Python API, one short
method per promise in the README (each a translation to a message to the
supervisor or a conversation); splitting a public class over files would
only hide where a promise is kept.

Start order (stop is the reverse, in ``finally``): store -> providers ->
bus -> registry actor -> supervisor actor -> idle sweeper and stats sampler.
The server is a thin layer over this same API.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import gevent
import pykka
from gevent.event import AsyncResult
from gevent.event import Event as GEvent
from pykka import ActorDeadError

from actorchat._bus import EventBus, Subscription
from actorchat._events import (
    ConversationDeleted,
    ConversationUpdated,
    Event,
    MessageReceived,
    StreamComplete,
    StreamStart,
)
from actorchat._export import export_conversation
from actorchat._gevent import ensure_patched, yielding
from actorchat._metrics import Metrics
from actorchat._records import Conversation, Message, new_id
from actorchat._validate import check_content, check_no_nul, check_title
from actorchat.actors import (
    CONVERSATION_STATES,
    Activate,
    Cancel,
    ConversationStats,
    Counts,
    Deps,
    Forget,
    GetHistory,
    GetInfo,
    GetStats,
    Kill,
    Ping,
    Regenerate,
    Register,
    Registry,
    RegistryActor,
    Send,
    StartNew,
    States,
    StopAll,
    StopChild,
    SupervisorActor,
    Sweep,
    UpdateSettings,
)
from actorchat.config import Config, load_config
from actorchat.errors import (
    ActorchatError,
    ConfigurationError,
    ConversationCrashed,
    ConversationFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    ProviderError,
    StoreError,
    Timeout,
)
from actorchat.providers import MockProvider, Provider, create_provider
from actorchat.stores import Store, create_store

__all__ = ["ChatSystem", "Metrics"]  # Metrics re-exported from _metrics for callers

log = logging.getLogger("actorchat")
T = TypeVar("T")

#: How often a request is re-routed when its conversation dies under it.
_ROUTE_ATTEMPTS = 5


@dataclass(slots=True)
class _Collector:
    """Gathers one result per conversation for ``broadcast_message``."""

    results: dict[str, str | Exception]
    remaining: int
    done: GEvent

    def deliver(self, cid: str, value: Any) -> None:
        if cid in self.results:
            return
        self.results[cid] = _reply_or_error(value)
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


def _reply_or_error(value: Any) -> str | Exception:
    if isinstance(value, Exception):
        return value
    assert isinstance(value, Message)
    if value.finish_reason == "error":
        return ProviderError(f"the model failed to answer (message {value.id})")
    return value.content


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ChatSystem:
    """The actor tree and the API to use it; a context manager.

    Example::

        import actorchat
        actorchat.patch()
        with actorchat.ChatSystem() as chat:
            cid = chat.start_conversation()
            print(chat.send_message(cid, "Hello!"))
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        store: Store | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        self.config = (config or load_config()).validate()
        self._store_arg = store
        self._providers_arg = dict(providers or {})
        self.store: Store | None = None
        self.bus = EventBus(self.config.subscriber_queue)
        self.metrics = Metrics()
        self.providers: dict[str, Provider] = {}
        self._registry_actor: RegistryActor | None = None
        self.registry: Registry | None = None
        self._supervisor: pykka.ActorRef[Any] | None = None
        self._background: list[gevent.Greenlet[Any, Any]] = []
        self._rate = (time.monotonic(), 0, 0.0)
        self.started = False

    # Life cycle ----------------------------------------------------------------

    def start(self) -> ChatSystem:
        """Start store, providers and actors, in dependency order."""
        if self.started:
            return self
        ensure_patched()
        cfg = self.config
        try:
            self.store = self._store_arg or self._make_store()
            self.store.open()
            for name, model in cfg.all_models().items():
                self.providers[name] = self._providers_arg.get(name) or create_provider(model, cfg)
            for name, provider in self._providers_arg.items():
                self.providers.setdefault(name, provider)
            if cfg.gc_freeze:
                # Collections are triggered by allocations, and every token
                # allocates: defaults (700, 10, 10) ran ~800 collections in a
                # 10,000-conversation broadcast, a quarter of its time. Young
                # passes stay small (a gen-1 pass over 2.5 M survivors paused
                # 0.6 s at 50,000/50); full passes become rare, and the actors
                # themselves are frozen out of them (start_conversations).
                gc.set_threshold(10_000, 5, 1000)
            deps = Deps(cfg, self.store, self.bus, self.providers, self.metrics)
            self._registry_actor = RegistryActor()
            self._registry_actor.start_loop()
            self.registry = Registry(self._registry_actor)
            supervisor = SupervisorActor(deps, self.registry)
            supervisor.start_loop()
            self._supervisor = supervisor.actor_ref
            deps.supervisor = self._supervisor
            if cfg.idle_timeout > 0:
                self._background.append(gevent.spawn(self._sweep_loop, cfg.idle_timeout))
            self.started = True
        except BaseException:
            self._teardown()
            raise
        log.info(
            "actorchat started: store=%s models=%s", cfg.store, ",".join(sorted(self.providers))
        )
        return self

    def _make_store(self) -> Store:
        return create_store(self.config)

    def drain(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds for replies in progress to finish.

        Returns True when none is left. New messages are still accepted;
        the server stops taking them before it drains.
        """
        deadline = time.monotonic() + grace
        # Woken by events (every reply ends with a StreamComplete, published
        # after the counter drops), not by polling.
        with self.bus.subscribe(None, replay=False, maxsize=1_000_000) as sub:
            while self.metrics.generating > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                sub.get(remaining)
                sub.drain()
        return True

    def stop(self, timeout: float = 10.0, *, grace: float = 0.0) -> None:
        """Stop every conversation, then the rest.

        With ``grace``, replies in progress get that long to finish first;
        any still running are then cancelled with their partial text kept.
        """
        if not self.started:
            return
        if grace > 0:
            self.drain(grace)
        self.started = False
        # A mass stop makes garbage but no cycles worth chasing: at 100,000
        # conversations the collector's passes were a quarter of the time.
        gc_was_enabled = gc.isenabled()
        if self.config.gc_freeze:
            gc.disable()
        try:
            if self._supervisor is not None:
                actors = self._supervisor.ask(StopAll(), block=True, timeout=timeout)
                deadline = time.monotonic() + timeout
                # They stop in mailbox order: wait for the last, then check the rest.
                for actor in reversed(actors):
                    if actor.actor_stopped.is_set():
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not actor.actor_stopped.wait(remaining):
                        log.warning("stop: some conversations did not stop in %.1fs", timeout)
                        break
        finally:
            if gc_was_enabled:
                gc.enable()
            self._teardown()

    def _teardown(self) -> None:
        for g in self._background:
            g.kill(block=False)
        self._background.clear()
        if self._supervisor is not None:
            self._supervisor.stop(block=False)
            self._supervisor = None
        if self._registry_actor is not None:
            self._registry_actor.actor_ref.stop(block=False)
            self._registry_actor = None
        for provider in self.providers.values():
            try:
                provider.close()
            except Exception:
                log.warning("provider close failed", exc_info=True)
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> ChatSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sweep_loop(self, idle_timeout: float) -> None:
        interval = max(min(idle_timeout / 4, 30.0), 0.01)
        while True:
            gevent.sleep(interval)
            sup = self._supervisor
            if sup is None:
                return
            try:
                sup.tell(Sweep(idle_timeout))
            except ActorDeadError:
                return

    # Routing -------------------------------------------------------------------

    def _sup(self) -> pykka.ActorRef[Any]:
        if self._supervisor is None or self.registry is None:
            raise ConfigurationError("the ChatSystem is not started (use start() or 'with')")
        return self._supervisor

    def _sup_ask(self, message: Any, timeout: float | None = None) -> Any:
        return self._sup().ask(message, block=True, timeout=timeout)

    def _route(self, cid: str) -> pykka.ActorRef[Any]:
        sup = self._sup()
        assert self.registry is not None
        cid = str(cid)
        ref = self.registry.lookup(cid)
        if ref is not None and ref.is_alive():
            return ref
        result: pykka.ActorRef[Any] = sup.ask(Activate(cid), block=True)
        return result

    def _tell(self, cid: str, message: Any) -> None:
        for _ in range(_ROUTE_ATTEMPTS):
            try:
                self._route(cid).tell(message)
                return
            except ActorDeadError:
                self._check_exists(cid)
        raise ConversationCrashed(f"conversation {cid!r} kept dying while being reached")

    def _ask(self, cid: str, message: Any, timeout: float | None = None) -> Any:
        for _ in range(_ROUTE_ATTEMPTS):
            try:
                return self._route(cid).ask(message, block=True, timeout=timeout)
            except ActorDeadError:
                self._check_exists(cid)
            except pykka.Timeout as exc:
                raise Timeout(f"conversation {cid!r} did not answer in {timeout}s") from exc
        raise ConversationCrashed(f"conversation {cid!r} kept dying while being reached")

    def _check_exists(self, cid: str) -> None:
        """After a dead actor: raise NotFound if the conversation is not in the store.

        An actor activated for an unknown id stops at once. When its store
        answers without yielding (the memory store), it is gone before the
        caller's request reaches its mailbox, and retrying would only
        activate another one.
        """
        if self.store is None:
            return
        try:
            missing = self.store.get_conversation(cid) is None
        except StoreError:
            return  # stopping: the caller's retries end in ConversationCrashed
        if missing:
            raise NotFound(f"no conversation {cid!r}")

    def _check_content(self, text: Any) -> str:
        return check_content(text, self.config.max_content_chars)

    @staticmethod
    def _wait(result: AsyncResult[Any], timeout: float | None, what: str) -> Any:
        try:
            value = result.get(timeout=timeout)
        except gevent.Timeout as exc:
            raise Timeout(f"{what} did not finish within {timeout}s") from exc
        if isinstance(value, BaseException):
            raise value
        return value

    # Conversations -----------------------------------------------------------------

    def _new_conversation(
        self,
        owner: str = "local",
        title: str = "",
        model: str | None = None,
        system_prompt: str = "",
    ) -> Conversation:
        check_title(title)
        check_no_nul(str(owner), "owner")
        if system_prompt:
            check_no_nul(system_prompt, "system_prompt")
        model = model or self.config.default_model
        if model not in self.providers:
            raise InvalidRequest(f"no model named {model!r} (configured: {sorted(self.providers)})")
        return Conversation(new_id(), str(owner), title, model, system_prompt)

    def start_conversation(
        self,
        *,
        owner: str = "local",
        title: str = "",
        model: str | None = None,
        system_prompt: str = "",
    ) -> str:
        """Create a conversation and start its actor; returns its id."""
        conv = self._new_conversation(owner, title, model, system_prompt)
        self._start_new([conv])
        self.bus.publish(ConversationUpdated(conv.id, conv, created=True))
        return conv.id

    def _start_new(self, convs: list[Conversation]) -> list[str]:
        """Stored and started by the supervisor, then registered: their ids."""
        entries = self._sup_ask(StartNew(convs))
        assert self.registry is not None
        self.registry.ref.ask(Register(entries))  # lookups find them from now on
        return [cid for cid, _ in entries]

    def start_conversations(self, n: int, **settings: Any) -> list[str]:
        """Create ``n`` conversations at once (one store transaction)."""
        if n < 0:
            raise InvalidRequest("n must be >= 0")
        convs = [self._new_conversation(**settings) for _ in range(n)]
        ids: list[str] = []
        freeze = self.config.gc_freeze and n >= 1000
        for i in range(0, len(convs), 10_000):
            chunk = convs[i : i + 10_000]
            ids.extend(self._start_new(chunk))
            for conv in chunk:
                self.bus.publish(ConversationUpdated(conv.id, conv, created=True))
            if freeze:
                # Long-lived actors move out of the collector's sight: gen-2
                # passes over 100,000 actors stall the hub for seconds, and
                # made starting them quadratic.
                gc.freeze()
        return ids

    def conversation_count(self) -> int:
        """How many conversations have a live actor now."""
        return self.registry.count() if self.registry is not None else 0

    def get_conversation(self, cid: str, *, owner: str | None = None) -> Conversation:
        """A conversation's settings and counters (``Forbidden`` for another owner)."""
        try:
            conv: Conversation = self._ask(str(cid), GetInfo())
        except ConversationFailed:
            # A failed conversation stays readable: its record is in the store.
            assert self.store is not None
            stored = self.store.get_conversation(str(cid))
            if stored is None:
                raise
            conv = stored
        if owner is not None and conv.owner != str(owner):
            raise Forbidden(f"conversation {cid!r} belongs to another user")
        return conv

    def list_conversations(
        self, owner: str | None = "local", limit: int = 50, before: str | None = None
    ) -> list[Conversation]:
        """An owner's conversations, newest first.

        ``before`` is the last id of the previous page. An anchor that names
        no conversation of this owner (mistyped, or deleted meanwhile) is
        ``InvalidRequest``, as for ``messages``: an empty page would read as
        "nothing older" and hide the rest; the caller pages again from the start.
        """
        assert self.store is not None
        if before is not None:
            anchor = self.store.get_conversation(str(before))
            if anchor is None or (owner is not None and anchor.owner != owner):
                msg = f"before: no conversation {before!r} (deleted? page again without before)"
                raise InvalidRequest(msg)
        return self.store.list_conversations(owner, limit, before)

    def count_conversations(self, owner: str | None = None) -> int:
        """How many conversations are stored (live or not)."""
        assert self.store is not None
        return self.store.count_conversations(owner)

    def rename_conversation(self, cid: str, title: str) -> Conversation:
        check_title(title)
        result: Conversation = self._ask(str(cid), UpdateSettings(title=title))
        return result

    def update_conversation(
        self,
        cid: str,
        *,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> Conversation:
        if title is not None:
            check_title(title)
        if system_prompt is not None:
            check_no_nul(system_prompt, "system_prompt")
        result: Conversation = self._ask(str(cid), UpdateSettings(title, model, system_prompt))
        return result

    def stop_conversation(self, cid: str) -> bool:
        """Stop a conversation's actor now; it comes back when next used."""
        result: bool = self._sup_ask(StopChild(str(cid)))
        return result

    def delete_conversation(self, cid: str) -> bool:
        """Stop it, delete its data, and tell subscribers."""
        cid = str(cid)
        self._sup_ask(Forget(cid))
        assert self.store is not None
        deleted = self.store.delete_conversation(cid)
        if deleted:
            self.bus.publish(ConversationDeleted(cid))
            self.bus.forget(cid)
        return deleted

    # Messages --------------------------------------------------------------------------

    def post_message(self, cid: str, text: str, *, sender_id: str = "local") -> Message:
        """Send without waiting for the reply; returns once the message is durable."""
        text = self._check_content(text)
        ack: AsyncResult[Any] = AsyncResult()
        self._tell(str(cid), Send(text, str(sender_id), ack.set, None))
        result: Message = self._wait(ack, None, "storing the message")
        return result

    def send_message(
        self,
        cid: str,
        text: str,
        *,
        timeout: float | None = None,
        sender_id: str = "local",
    ) -> str:
        """Send a user message and wait for the whole reply's text.

        Raises ``ProviderError`` if the model failed, ``Timeout`` past
        ``timeout`` seconds (the reply still completes and is stored).
        """
        text = self._check_content(text)
        done: AsyncResult[Any] = AsyncResult()
        self._tell(str(cid), Send(text, str(sender_id), None, done.set))
        value = self._wait(done, timeout, "the reply")
        reply = _reply_or_error(value)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def stream_message(
        self, cid: str, text: str, *, sender_id: str = "local", timeout: float | None = None
    ) -> Iterator[Event]:
        """Send a message and yield its events: received, start, deltas, complete."""
        text = self._check_content(text)
        cid = str(cid)
        sub = self.bus.subscribe(cid, replay=False, maxsize=1_000_000)
        try:
            user = self.post_message(cid, text, sender_id=sender_id)
            yield from self._follow(sub, user.id, timeout)
        finally:
            sub.close()

    @staticmethod
    def _follow(sub: Subscription, user_id: str, timeout: float | None) -> Iterator[Event]:
        reply_id: str | None = None
        while True:
            event = sub.get(timeout)
            if event is None:
                if sub.closed:
                    raise ConversationCrashed("the event stream closed before the reply ended")
                raise Timeout(f"no event for {timeout}s")
            kind = type(event)
            if kind is MessageReceived:
                if event.message.id == user_id:  # type: ignore[attr-defined]
                    yield event
            elif kind is StreamStart:
                if event.reply_to == user_id:  # type: ignore[attr-defined]
                    reply_id = event.message_id  # type: ignore[attr-defined]
                    yield event
            elif reply_id is not None and getattr(event, "message_id", None) == reply_id:
                yield event
                if kind is StreamComplete:
                    if event.finish_reason == "error":  # type: ignore[attr-defined]
                        # A crash-interrupted reply is answered again after
                        # the restart: keep following that user message.
                        reply_id = None
                        if event.message is not None:  # type: ignore[attr-defined]
                            return
                        continue
                    return

    def broadcast_message(
        self,
        ids: Sequence[str],
        text: str,
        *,
        timeout: float | None = None,
        sender_id: str = "local",
    ) -> dict[str, str | Exception]:
        """Send one message to many conversations at once; each gets its reply.

        Concurrent, not a loop of blocking calls: every conversation is told
        at once and the call waits for all replies (or ``timeout``). Failures
        are returned per conversation, never raised.
        """
        text = self._check_content(text)
        unique = list(dict.fromkeys(str(cid) for cid in ids))
        collector = _Collector({}, len(unique), GEvent())
        if not unique:
            return {}
        sender = str(sender_id)
        deliver = collector.deliver
        for cid in yielding(unique):
            try:
                self._tell(cid, Send(text, sender, None, partial(deliver, cid)))
            except ActorchatError as exc:
                deliver(cid, exc)
        collector.done.wait(timeout)
        results = collector.results
        if len(results) < len(unique):
            for cid in unique:
                results.setdefault(cid, Timeout(f"no reply within {timeout}s"))
        return results

    def broadcast_async(self, ids: Sequence[str], text: str, *, sender_id: str = "local") -> int:
        """Send one message to many conversations without waiting; returns how many."""
        text = self._check_content(text)
        n = 0
        for cid in yielding(ids):
            try:
                self._tell(str(cid), Send(text, str(sender_id), None, None))
                n += 1
            except ActorchatError:
                pass
        return n

    def get_history(self, cid: str, limit: int | None = None) -> list[Message]:
        """The conversation's messages in turn order (completed ones only)."""
        try:
            result: list[Message] = self._ask(str(cid), GetHistory(limit))
        except ConversationFailed:
            # A failed conversation stays readable: its history is in the store.
            assert self.store is not None
            stored = self.store.messages(str(cid), None, None, False)
            result = stored if limit is None else stored[-limit:] if limit else []
        return result

    def messages(
        self,
        cid: str,
        *,
        limit: int | None = None,
        before: str | None = None,
        versions: bool = False,
    ) -> list[Message]:
        """Stored messages, paged backwards; ``versions`` adds replaced replies."""
        assert self.store is not None
        if self.store.get_conversation(str(cid)) is None:
            raise NotFound(f"no conversation {cid!r}")
        page = self.store.messages(str(cid), limit, before, versions)
        # An unknown anchor would read as "nothing older": say so instead
        # (checked only on an empty page, which paging ends with anyway;
        # the same rule as list_conversations).
        if (
            not page
            and before is not None
            and all(m.id != before for m in self.store.messages(str(cid), None, None, True))
        ):
            raise InvalidRequest(f"before: no message {before!r} in conversation {cid!r}")
        return page

    def export(self, cid: str, fmt: str = "json") -> str:
        """The stored conversation as ``json``, ``md`` or ``csv`` text."""
        assert self.store is not None
        conv = self.store.get_conversation(str(cid))
        if conv is None:
            raise NotFound(f"no conversation {cid!r}")
        return export_conversation(conv, self.store.messages(str(cid)), fmt)

    def get_stats(self, cid: str) -> ConversationStats:
        result: ConversationStats = self._ask(str(cid), GetStats())
        return result

    def cancel(self, cid: str, message_id: str | None = None) -> bool:
        """Stop the reply in progress (``message_id`` must match when given)."""
        result: bool = self._ask(str(cid), Cancel(message_id))
        return result

    def regenerate(
        self,
        cid: str,
        message_id: str | None = None,
        model: str | None = None,
        *,
        wait: bool = False,
        timeout: float | None = None,
    ) -> Message:
        """Answer a user message again (default: the last one).

        Returns the user message being answered, or with ``wait`` the new
        reply once complete. The old reply stays stored as an earlier version.
        """
        ack: AsyncResult[Any] = AsyncResult()
        done: AsyncResult[Any] | None = AsyncResult() if wait else None
        self._tell(
            str(cid),
            Regenerate(message_id, model, ack.set, done.set if done is not None else None),
        )
        user: Message = self._wait(ack, timeout, "regenerate")
        if done is None:
            return user
        reply: Message = self._wait(done, timeout, "the reply")
        return reply

    def subscribe(
        self,
        cid: str | None = None,
        *,
        replay: bool = True,
        after_index: int | None = None,
        maxsize: int | None = None,
    ) -> Subscription:
        """The conversation's events (all conversations' with ``None``).

        With ``replay``, a reply in progress arrives first from its start.
        """
        return self.bus.subscribe(
            None if cid is None else str(cid),
            replay=replay,
            after_index=after_index,
            maxsize=maxsize,
        )

    def in_progress(self, cid: str) -> list[Event]:
        """The reply being generated now: its ``StreamStart`` and deltas so far.

        Empty when the conversation is not generating. ``subscribe`` replays
        the same buffer; this is for callers that must send the replay
        themselves, after something else (the server's join answer).
        """
        return self.bus.in_progress(str(cid))

    def ping(self, cid: str) -> str:
        """A bare ask round trip to the conversation's actor (for benches)."""
        result: str = self._ask(str(cid), Ping())
        return result

    # Fault injection and operations -----------------------------------------------------

    def kill(self, cid: str) -> bool:
        """Crash a live conversation as from an unexpected exception.

        A message to the conversation itself, like any other: it costs what
        a message costs, and never waits behind the supervisor's restart
        work (an ask of the supervisor did, 420 us a kill at 100,000
        conversations). False when no live actor holds the conversation.
        """
        self._sup()
        assert self.registry is not None
        ref = self.registry.lookup(str(cid))
        if ref is None:
            return False
        try:
            ref.tell(Kill())
        except ActorDeadError:
            return False  # crashed already; its successor is on the way
        return True

    def kill_many(
        self, ids: Sequence[str] | None = None, *, fraction: float | None = None
    ) -> list[str]:
        """Crash the given conversations, or a random ``fraction`` of the live ones.

        Each is a ``kill``: a message to the conversation, never an ask of
        the supervisor, whose restarts of the burst are batched behind.
        Returns the ids of those that were live.
        """
        if ids is None and fraction is None:
            raise InvalidRequest("give ids or fraction")
        if fraction is not None and not 0 <= fraction <= 1:
            raise InvalidRequest("fraction must be within 0..1")
        self._sup()
        assert self.registry is not None
        if ids is None:
            live = self.registry.ids()
            ids = random.sample(live, round(len(live) * (fraction or 0.0)))
        kill = self.kill
        return [cid for cid in map(str, ids) if kill(cid)]

    def _mocks(self) -> list[MockProvider]:
        found = []
        for provider in self.providers.values():
            inner = getattr(provider, "inner", provider)  # unwrap the model's limits
            if isinstance(inner, MockProvider):
                found.append(inner)
        return found

    def faults(self) -> dict[str, float]:
        """The fault rates injected into the embedded mock model (see ``inject_faults``)."""
        mocks = self._mocks()
        return {
            "mock_crash_rate": mocks[0].crash_rate if mocks else 0.0,
            "mock_failure_rate": mocks[0].failure_rate if mocks else 0.0,
        }

    def inject_faults(
        self, *, mock_crash_rate: float | None = None, mock_failure_rate: float | None = None
    ) -> dict[str, float]:
        """Set the embedded mock's fault rates on every model it serves, while running.

        ``mock_crash_rate``: the chance a reply crashes its conversation (the
        supervisor restarts it, the message is answered again);
        ``mock_failure_rate``: the chance a reply fails like a backend would
        (``PROVIDER_ERROR``). Each within 0..1. For watching supervision
        work (the dashboard's fault control) and for fault-injection runs.
        """
        rates = {"mock_crash_rate": mock_crash_rate, "mock_failure_rate": mock_failure_rate}
        for name, rate in rates.items():
            if rate is not None and (
                not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1
            ):
                raise InvalidRequest(f"{name} must be a number within 0..1 (got {rate!r})")
        mocks = self._mocks()
        if not mocks:
            raise InvalidRequest("no model is served by the embedded mock: nothing to inject into")
        for mock in mocks:
            if mock_crash_rate is not None:
                mock.crash_rate = float(mock_crash_rate)
            if mock_failure_rate is not None:
                mock.failure_rate = float(mock_failure_rate)
        return self.faults()

    def states(self, state: str | None = None, limit: int | None = None) -> list[tuple[str, str]]:
        """``(id, state)`` of live, failed and crashed conversations.

        ``state`` filters: one of ``CONVERSATION_STATES``. ``"passivated"``
        lists stored conversations that have no live actor: it reads the
        store, so it is asked for by name only (the dashboard polls the rest,
        and counts passivated ones in ``stats()``).
        """
        if state is not None and state not in CONVERSATION_STATES:
            raise InvalidRequest(
                f"state must be one of {', '.join(CONVERSATION_STATES)} (got {state!r})"
            )
        if state == "passivated":
            return self._passivated(sys.maxsize if limit is None else limit)
        result: list[tuple[str, str]] = self._sup_ask(States(state, limit))
        return result

    def _passivated(self, limit: int) -> list[tuple[str, str]]:
        known = {cid for cid, _ in self._sup_ask(States(None, None))}
        out: list[tuple[str, str]] = []
        before = None
        while len(out) < limit:
            assert self.store is not None
            page = self.store.list_conversations(None, limit=1000, before=before)
            out.extend((c.id, "passivated") for c in page if c.id not in known)
            if len(page) < 1000:
                break
            before = page[-1].id
        return out[:limit]

    def stats(self) -> dict[str, Any]:
        """A system-wide snapshot: conversations by state, tokens/s, restarts, RSS."""
        counts: dict[str, int] = self._sup_ask(Counts())
        m = self.metrics
        now = time.monotonic()
        t0, tokens0, last_rate = self._rate
        rate = last_rate
        if now - t0 >= 0.5:
            rate = (m.tokens - tokens0) / (now - t0)
            self._rate = (now, m.tokens, rate)
        stored = self.count_conversations()
        live = counts["live"]
        return {
            "live": live,
            "stored": stored,
            "states": {
                "idle": counts["idle"] + counts["starting"],
                "generating": counts["generating"],
                "crashed": counts["crashed"],
                "restarting": counts["restarting"],
                "failed": counts["failed"],
                "passivated": max(stored - live - counts["failed"] - counts["crashed"], 0),
            },
            "tokens_total": m.tokens,
            "tokens_per_s": rate,
            "messages_total": m.messages,
            "restarts_total": m.restarts,
            "crashes_total": m.crashes,
            "provider_errors_total": m.provider_errors,
            "passivated_total": m.passivated,
            "rss_bytes": _rss_bytes(),
        }
