"""What every actorchat actor shares: a Pykka actor on a raw greenlet.

Measured on this project's 2-core machines, per actor: Pykka's default inbox
(``queue.Queue``, three conditions and a lock once monkey-patched) cost
9 µs and 2.7 KB, and ``uuid4().urn`` another 6 µs; a ``threading.Thread``
start adds the threading module's bookkeeping. At 100,000 conversations
those dominate, so actors here use a deque-and-waiter inbox, a counter-based
URN and ``gevent.spawn_raw`` -- under gevent a Thread *is* a greenlet, so
this changes nothing about how the actor runs.

These override Pykka internals that are stable across Pykka 4 (the version
pinned in pyproject.toml): ``__init__``'s four fields, ``_create_actor_inbox``,
``_start_actor_loop``, ``_create_future`` and ``_stop``.
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

from actorchat.errors import ActorchatError

__all__ = ["GeventFuture", "GreenletActor", "Inbox"]

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

    def start_loop(self) -> pykka.ActorRef[Any]:
        """Start the actor without registering it anywhere; returns its ref."""
        self._start_actor_loop()
        return self._actor_ref
