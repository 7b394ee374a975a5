"""WebSocket pings for every connection, from one greenlet.

simple-websocket can ping by itself, but then each connection's reader
greenlet waits in a selector that is rebuilt on every frame received, which
costs CPU per frame and memory per connection. One loop over all the
connections every ``ping_interval`` seconds does the same job: a ping is
queued like any frame (so it never cuts into one, and goes out during long
streams too), and a peer that has not answered one within ``interval``
seconds of its being written is closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

import gevent

__all__ = ["Heartbeat"]

#: Connections visited between two yields to the hub.
_SLICE = 500


class _Pingable(Protocol):
    def heartbeat(self, now: float, interval: float) -> None: ...


class Heartbeat:
    """Calls ``heartbeat(now, interval)`` on every connection every ``interval`` s (0: never)."""

    def __init__(self, connections: Iterable[_Pingable], interval: float) -> None:
        self._connections = connections
        self.interval = interval
        self._loop: gevent.Greenlet[Any, Any] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._loop is None:
            self._loop = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)
            self._loop = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval)
            for i, conn in enumerate(list(self._connections)):
                conn.heartbeat(time.monotonic(), self.interval)
                if i % _SLICE == _SLICE - 1:
                    gevent.sleep(0)
