"""The fake OpenAI model of ``bench/faults.py``: a process of its own, scripted by message.

``python bench/_faults_model.py --port N`` serves ``actorchat.testing``'s fake
OpenAI server on 127.0.0.1. A user message that carries ``[fault:KIND]`` gets
the failure ``KIND`` on the first request that answers it (the server's retries
and a regeneration after a crash are later requests, answered normally), so
the bench decides which conversations a backend failure hits, from another
process, without a control channel: the message itself says so.

Kinds (``KINDS``), and what actorchat should make of each: ``429`` (with
``Retry-After``), ``500``, ``529`` and ``drop0`` (the connection dropped before
any token) are retried and answered; ``drop`` (dropped mid-stream), ``hang``
(stops sending mid-stream), ``cut`` (a stream cut short) and ``error`` (a
mid-stream error event) come after text reached clients, so the reply fails
explicitly (``finish_reason: "error"``, partial text kept).

On SIGTERM it prints one JSON line: requests seen by kind and attempt.
"""

from __future__ import annotations

from actorchat._gevent import patch

patch()

import argparse
import json
import re
import signal
import socket
import sys
from collections import Counter
from dataclasses import replace
from typing import Any

import gevent
from _faults_audit import KINDS
from gevent.event import Event

from actorchat.testing import Behavior, FakeOpenAIServer

#: The directive a message carries.
DIRECTIVE = re.compile(r"\[fault:([a-z0-9]+)\]")

#: Mid-stream failures happen after this many tokens.
AFTER = 4


def behavior_for(kind: str, base: Behavior) -> Behavior:
    """The failing response for ``kind``."""
    if kind == "429":
        return replace(base, status=429, retry_after="0.2")
    if kind in ("500", "529"):
        return replace(base, status=int(kind))
    if kind == "drop0":
        return replace(base, disconnect_after=0)
    if kind == "drop":
        return replace(base, disconnect_after=AFTER)
    if kind == "hang":
        return replace(base, hang_after=AFTER)
    if kind == "cut":
        return replace(base, cut_after=AFTER)
    if kind == "error":
        return replace(base, error_after=AFTER)
    raise ValueError(f"unknown fault kind {kind!r}")


class ScriptedOpenAI(FakeOpenAIServer):
    """The fake OpenAI server, choosing each response from the message it answers."""

    def __init__(self, default: Behavior, **kwargs: Any) -> None:
        super().__init__(default, **kwargs)
        self.attempts: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()

    def choose(self, body: Any) -> Behavior:
        messages = body.get("messages") if isinstance(body, dict) else None
        last = ""
        for m in messages or ():
            if isinstance(m, dict) and m.get("role") == "user":
                last = str(m.get("content", ""))
        self.attempts[last] += 1
        attempt = self.attempts[last]
        found = DIRECTIVE.search(last)
        kind = found.group(1) if found else ""
        self.seen[f"{kind or 'plain'} attempt {min(attempt, 3)}"] += 1
        if kind in KINDS and attempt == 1:
            return behavior_for(kind, self.default)
        return self.default

    def _respond(self, sock: socket.socket, request: Any) -> bool:
        # The base class takes the next queued behaviour at the top of its
        # answer, before any I/O: queued here, it is this request's.
        if request.method == "POST" and request.path == self.stream_path:
            # Every request is recorded with its body (the whole history):
            # a long run keeps only the latest.
            if len(self.requests) > 2000:
                del self.requests[:1000]
            self.script(self.choose(request.json))
        return bool(super()._respond(sock, request))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    delay = args.delay_ms / 1000.0
    server = ScriptedOpenAI(
        Behavior(tokens=args.tokens, delay=delay, first_token_delay=delay), port=args.port
    )
    server.start()
    print(f"base_url={server.base_url}", flush=True)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    server.stop()
    print(json.dumps({"requests": dict(server.seen)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
