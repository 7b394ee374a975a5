"""Waiting helpers for tests: block on events with a deadline, never sleep."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actorchat import Event, Subscription

#: Generous bound for anything that should take milliseconds.
WAIT = 20.0


def wait_for(
    sub: Subscription, predicate: Callable[[Event], bool], timeout: float = WAIT
) -> tuple[Event, list[Event]]:
    """Read events until one matches; returns it and every event read."""
    seen: list[Event] = []
    while True:
        event = sub.get(timeout)
        if event is None:
            raise AssertionError(
                f"no matching event within {timeout}s (closed={sub.closed}); saw "
                f"{[type(e).__name__ for e in seen][-20:]}"
            )
        seen.append(event)
        if predicate(event):
            return event, seen


def of_type(kind: type, **fields: Any) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items())

    return match


class Recorder:
    """A callback for ``Send``'s ``on_done``: keeps every call, ``wait`` for the first."""

    def __init__(self) -> None:
        from gevent.event import Event as GEvent

        self.calls: list[object] = []
        self._called = GEvent()

    def __call__(self, value: object) -> None:
        self.calls.append(value)
        self._called.set()

    def wait(self, timeout: float = WAIT) -> bool:
        return bool(self._called.wait(timeout))
