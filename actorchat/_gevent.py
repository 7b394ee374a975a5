"""Monkey-patching, in one documented place.

actorchat runs every actor as a gevent greenlet: Pykka's ``ThreadingActor``
starts a ``threading.Thread``, and after ``gevent.monkey.patch_all()`` a
thread *is* a greenlet. In an unpatched process the same code would start real
OS threads that block on gevent primitives and hang, so the system refuses to
start there instead (``ensure_patched``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from actorchat.errors import ConfigurationError

__all__ = ["ensure_patched", "is_patched", "patch", "yielding"]

T = TypeVar("T")

#: Longest a bulk loop runs on the hub before it yields, s.
SLICE = 0.005


def patch() -> None:
    """Make the process cooperative: call this first, before other imports.

    Patching must happen before ``ssl``, ``socket`` or ``threading`` are
    used. The CLI and the test suite call it as their first statement; an
    application that embeds actorchat calls it at the top of its entry point.
    Calling it again is harmless.
    """
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def is_patched() -> bool:
    """Tell whether the process has been monkey-patched by gevent."""
    from gevent import monkey

    return bool(monkey.is_module_patched("threading") and monkey.is_module_patched("socket"))


def ensure_patched() -> None:
    """Raise ``ConfigurationError`` unless the process is monkey-patched."""
    if not is_patched():
        msg = (
            "actorchat needs a gevent monkey-patched process: call "
            "actorchat.patch() as the first statement of your program "
            "(before importing anything that uses threads, sockets or ssl)"
        )
        raise ConfigurationError(msg)


def yielding(items: Iterable[T], every: float = SLICE) -> Iterator[T]:
    """``items``, yielding to the hub every ``every`` seconds (checked every 64).

    For loops that would otherwise hold the hub for long: telling 100,000
    conversations took 0.7 s, and every socket, timer and heartbeat of the
    process waited that long. Order is kept; other greenlets run in between.
    """
    import gevent

    end = time.perf_counter() + every
    for k, item in enumerate(items):
        if not k & 63 and time.perf_counter() > end:
            gevent.sleep(0)
            end = time.perf_counter() + every
        yield item
