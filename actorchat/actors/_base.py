"""What every actorchat actor shares: a Pykka actor on a raw greenlet.

Measured on this project's 2-core machines, per actor: Pykka's default inbox
(``queue.Queue``, three conditions and a lock once monkey-patched) cost
9 µs and 2.7 KB, and ``uuid4().urn`` another 6 µs; a ``threading.Thread``
start adds the threading module's bookkeeping. At 100,000 conversations
those dominate, so actors here use a deque-and-waiter inbox, a counter-based
URN and ``gevent.spawn_raw`` -- under gevent a Thread *is* a greenlet, so
this changes nothing about how the actor runs.

This is the only module that touches Pykka's internals, all stable across
Pykka 4 (the version pinned in pyproject.toml). Each override, and why:

- ``__init__``'s four fields: a light inbox and a counter URN (above).
- ``_create_actor_inbox``, ``_create_future``: the deque inbox and a gevent
  future (an ask round trip 13 µs instead of 27).
- ``_start_actor_loop``: ``gevent.spawn_raw``, no ``Thread`` bookkeeping.
- ``_stop``: no unregistering from Pykka's list registry (we never register).
- ``_handle_failure``: Pykka's logs a full traceback and unregisters; here
  it marks the actor stopped and calls ``on_crash``, which logs the
  traceback by default and a conversation overrides (one line, then its
  supervisor). Pykka calls it for a failed ``on_start``, a failed tell, a
  failed ``on_stop`` (and may call it twice for one failure: ``on_crash``
  runs once).
- ``_actor_loop_teardown``: Pykka's fails the asks left in the mailbox but
  drops its tells; ``on_unread`` lets an actor take messages that must not
  be dropped first.
- ``Envelope`` and ``stop_envelope``: the supervisor hands unread envelopes
  to a successor, and stops 100,000 actors with one shared stop envelope.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sys
from collections import deque
from typing import Any

import gevent
import pykka
from gevent.event import AsyncResult, Event
from gevent.hub import Waiter, get_hub
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from actorchat.errors import ActorchatError

__all__ = ["Envelope", "GeventFuture", "GreenletActor", "Inbox", "stop_envelope"]

log = logging.getLogger("actorchat.actors")

_urns = itertools.count(1)


class _AnswersNotFailures(logging.Filter):
    """Drop Pykka's INFO traceback for an ``ActorchatError`` handed back to an asker.

    ``NotFound``, ``Overloaded`` and the like are answers to the caller, who
    gets them as exceptions; Pykka logged each with a full traceback, which
    broke the server's one-line-per-event logs. Real failures still log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.levelno <= logging.INFO and isinstance(exc, ActorchatError))


logging.getLogger("pykka").addFilter(_AnswersNotFailures())


class Inbox:
    """An actor's mailbox: FIFO, unbounded, one reader (the actor's greenlet).

    ``put`` never blocks; it wakes the reader through the hub, as gevent's
    own queues do.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: Waiter | None = None

    def put(self, item: Any, /) -> None:
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.hub.loop.run_callback(waiter.switch, None)

    def get(self) -> Any:
        while True:
            items = self._items
            if items:
                return items.popleft()
            waiter = Waiter(get_hub())
            self._waiter = waiter
            waiter.get()

    def empty(self) -> bool:
        return not self._items

    @property
    def parked(self) -> bool:
        """Whether the reader is waiting on an empty inbox (not inside a handler)."""
        return self._waiter is not None

    def __len__(self) -> int:
        return len(self._items) if self._items else 0


class GeventFuture(pykka.Future[Any]):
    """A Pykka future on a gevent ``AsyncResult``, for asks within one hub.

    Pykka's ``ThreadingFuture`` takes a condition variable per ask, which
    once monkey-patched is a gevent lock and RLock: an ask round trip cost
    27 µs with it and 13 µs with this. Every caller of an actorchat actor
    lives on the same hub (the API, the server, other actors), so nothing
    needs the cross-thread machinery.
    """

    __slots__ = ("_result",)

    def __init__(self) -> None:
        super().__init__()
        self._result: AsyncResult[Any] = AsyncResult()

    def get(self, *, timeout: float | None = None) -> Any:
        try:
            return super().get(timeout=timeout)  # a get-hook (map, filter, join)
        except NotImplementedError:
            pass
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout as exc:
            raise pykka.Timeout(f"{timeout} seconds") from exc

    def set(self, value: Any | None = None) -> None:
        if self._result.ready():
            raise queue.Full
        self._result.set(value)

    def set_exception(self, exc_info: Any = None) -> None:
        if self._result.ready():
            raise queue.Full
        if exc_info is None:
            exc_info = sys.exc_info()
        exc_type, exc_value, tb = exc_info
        if exc_value is None:
            exc_value = exc_type()
        self._result.set_exception(exc_value.with_traceback(tb))


class GreenletActor(pykka.ThreadingActor):
    """A ``ThreadingActor`` that starts as a raw greenlet with a light inbox.

    Never registered in Pykka's ``ActorRegistry`` (a list, so O(n) to
    unregister, and ``stop_all`` is quadratic): actorchat keeps its own maps.
    """

    use_daemon_thread = True

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        # Pykka's Actor.__init__ sets exactly these four fields.
        self.actor_urn = f"urn:actorchat:{type(self).__name__}:{next(_urns)}"
        self.actor_inbox: Inbox = Inbox()
        self.actor_stopped = Event()
        self._actor_ref = pykka.ActorRef(self)
        #: The greenlet running the actor's loop (set by ``start_loop``).
        self.actor_greenlet: Any = None
        self._crash_handled = False

    @staticmethod
    def _create_actor_inbox() -> Inbox:
        return Inbox()

    @staticmethod
    def _create_future() -> GeventFuture:
        return GeventFuture()

    def _start_actor_loop(self) -> None:
        self.actor_greenlet = gevent.spawn_raw(self._actor_loop)

    def _stop(self) -> None:
        # Pykka's version also unregisters from its ActorRegistry (we never
        # register) and formats two debug strings per stop: at 100,000 actors
        # that was a third of the shutdown time.
        self.actor_stopped.set()
        try:
            self.on_stop()
        except Exception:  # noqa: BLE001 - reported like any failure
            self._handle_failure(*sys.exc_info())

    def _handle_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: Any,
    ) -> None:
        self.actor_stopped.set()
        if self._crash_handled:
            return
        self._crash_handled = True
        try:
            self.on_crash(exception_type, exception_value, traceback)
        except Exception:
            log.exception("%s: crash handling failed", self.actor_urn)

    def on_crash(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: Any,
    ) -> None:
        """Called once when the actor dies of an unexpected exception; logs it."""
        log.error("%s crashed", self.actor_urn, exc_info=exception_value)

    def _actor_loop_teardown(self) -> None:
        if self.actor_inbox.empty():
            return  # the usual case, and Pykka's version would find nothing either
        envelopes = []
        while not self.actor_inbox.empty():
            envelopes.append(self.actor_inbox.get())
        for envelope in self.on_unread(envelopes):
            self.actor_inbox.put(envelope)
        super()._actor_loop_teardown()  # answers the asks left with ActorDeadError

    def on_unread(self, envelopes: list[Envelope[Any]]) -> list[Envelope[Any]]:
        """Messages left in the mailbox of a stopped actor; returns those for Pykka.

        Pykka answers the asks among those it is given (the callers re-route
        on ``ActorDeadError``) and drops the tells. Override to keep tells
        that must not be lost.
        """
        return envelopes

    def start_loop(self) -> pykka.ActorRef[Any]:
        """Start the actor without registering it anywhere; returns its ref."""
        self._start_actor_loop()
        return self._actor_ref


def stop_envelope() -> Envelope[Any]:
    """A stop request to put in a mailbox: one can be shared by many actors."""
    return Envelope(_ActorStop())
