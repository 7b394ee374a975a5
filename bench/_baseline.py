"""The bare-gevent baseline: the benches' workload without actorchat.

One greenlet (``gevent.spawn``) and one ``gevent.queue.Queue`` per
conversation, nothing else: no actor framework, no supervisor, no store, no
bus. A broadcast puts one message in every queue; each greenlet pushes
``TOKENS`` token events and one completion event into ONE shared subscriber
queue that one consumer greenlet drains. Killing 10% kills those greenlets
and respawns them; a respawned one "reloads" its history from a list that
outlived it (the baseline's store) and reports itself serving.

Measured on a 2-core machine at N = 100,000 (for reference):
about 44 us and 10.9 KB per conversation to start, 775,000 token events/s,
10% killed and all serving again in 0.6 s.

Run alone: ``python bench/_baseline.py --n 100000``.
"""

from __future__ import annotations

import actorchat

actorchat.patch()

import argparse
import json
import random
from typing import Any

import gevent
from _common import TEXT, TOKENS, GcPauses, HubGaps, cpu, now, percentile, settled_rss
from gevent.event import AsyncResult, Event
from gevent.pool import Pool
from gevent.queue import Queue

__all__ = ["Baseline"]

# Message kinds, first item of every queued tuple.
_BROADCAST, _PING, _HISTORY, _STOP = range(4)
_TOKEN_TEXT = tuple(f" word{i}" for i in range(TOKENS))
_REPLY = "".join(_TOKEN_TEXT)


class Baseline:
    """N conversations as bare greenlets with one queue each."""

    def __init__(self, tokens: int = TOKENS) -> None:
        self.tokens = tokens
        self.inboxes: list[Queue[Any]] = []
        self.greenlets: list[gevent.Greenlet[Any, Any]] = []
        self.saved: list[list[str]] = []  # histories that outlive a greenlet
        self.sink: Queue[Any] = Queue()  # the one subscriber queue
        self._ready = Event()
        self._expected = 0
        self._serving = 0
        self._replies = 0
        self._reply_target = 0
        self._replied = Event()
        self._stopping = False
        self._left = 0
        self._stopped = Event()

    # One conversation ------------------------------------------------------

    def _conversation(self, i: int, inbox: Queue[Any]) -> None:
        history = list(self.saved[i])  # "reload from the store"
        self._serving += 1
        if self._serving >= self._expected:
            self._ready.set()
        try:
            self._serve(i, inbox, history)
        finally:
            if self._stopping:
                self._left -= 1
                if self._left <= 0:
                    self._stopped.set()

    def _serve(self, i: int, inbox: Queue[Any], history: list[str]) -> None:
        get = inbox.get
        put = self.sink.put
        while True:
            msg = get()
            kind = msg[0]
            if kind == _BROADCAST:
                history.append(msg[1])
                for k in range(self.tokens):
                    put((i, k, _TOKEN_TEXT[k]))
                history.append(_REPLY)
                self.saved[i] = history
                put((i, -1, None))  # the completion event
                self._replies += 1
                if self._replies >= self._reply_target:
                    self._replied.set()
            elif kind == _PING:
                msg[1].set("pong")
            elif kind == _HISTORY:
                msg[1].set(list(history))
            else:
                return

    def _spawn(self, i: int) -> gevent.Greenlet[Any, Any]:
        return gevent.spawn(self._conversation, i, self.inboxes[i])

    # Workload steps ------------------------------------------------------------

    def start(self, n: int) -> None:
        """Start ``n`` conversations and wait until every one is waiting on its queue."""
        self._ready.clear()
        self._serving = 0
        self._expected = n
        for i in range(n):
            self.inboxes.append(Queue())
            self.saved.append([])
            self.greenlets.append(self._spawn(i))
        self._ready.wait()

    def broadcast(self, text: str = TEXT) -> dict[str, Any]:
        """One message to every conversation; the consumer counts token events."""
        n = len(self.inboxes)
        sink = self.sink
        done = Event()
        latencies: list[float] = []
        counts = {"tokens": 0}
        t0 = 0.0

        def consume() -> None:
            tokens = completes = 0
            get = sink.get
            while True:
                item = get()
                if item[1] >= 0:
                    tokens += 1
                else:
                    completes += 1
                    latencies.append(now() - t0)
                    if completes >= n:
                        counts["tokens"] = tokens
                        done.set()
                        return

        consumer = gevent.spawn(consume)
        self._replies = 0
        self._reply_target = n
        self._replied.clear()
        with GcPauses() as gcp, HubGaps() as hub:
            c0 = cpu()
            t0 = now()
            msg = (_BROADCAST, text)
            for inbox in self.inboxes:
                inbox.put(msg)
            self._replied.wait()
            t_replies = now()
            done.wait()
            t_end = now()
            cpu_s = cpu() - c0
        consumer.join()
        return {
            "replies": self._replies,
            "token_events": counts["tokens"],
            "replies_s": n / (t_replies - t0),
            "tokens_s": counts["tokens"] / (t_end - t0),
            "broadcast_s": t_end - t0,
            "cpu_us": cpu_s / n * 1e6,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            **gcp.summary(),
            **hub.summary(),
        }

    def _ask(self, i: int, kind: int) -> Any:
        result: AsyncResult[Any] = AsyncResult()
        self.inboxes[i].put((kind, result))
        return result.get()

    def ping(self, i: int) -> str:
        return str(self._ask(i, _PING))

    def history(self, i: int) -> list[str]:
        return list(self._ask(i, _HISTORY))

    def kill_fraction(self, fraction: float = 0.1, concurrency: int = 100) -> dict[str, Any]:
        """Kill a random ``fraction``, respawn them, time until all serve again."""
        n = len(self.greenlets)
        victims = random.sample(range(n), round(n * fraction))
        expected = {i: list(self.saved[i]) for i in victims}
        t0 = now()
        dead = [self.greenlets[i] for i in victims]
        for g in dead:
            g.kill(block=False)
        gevent.joinall(dead)
        self._ready.clear()
        self._serving = 0
        self._expected = len(victims)
        for i in victims:
            self.greenlets[i] = self._spawn(i)
        self._ready.wait()
        t_restarted = now() - t0
        bad = Pool(concurrency).map(lambda i: self.history(i) != expected[i], victims)
        t_verified = now() - t0
        return {
            "killed": len(victims),
            "recover_s": t_restarted,
            "recover_verified_s": t_verified,
            "verify_failures": sum(bad),
        }

    def stop(self) -> float:
        """Tell every conversation to stop and wait until all did; returns seconds.

        Each greenlet counts itself out as it returns (``gevent.joinall`` on
        100,000 greenlets would add about 0.8 s of link bookkeeping).
        """
        t0 = now()
        self._stopping = True
        self._left = sum(1 for g in self.greenlets if not g.dead)
        for inbox in self.inboxes:
            inbox.put((_STOP,))
        if self._left:
            self._stopped.wait()
        return now() - t0


def pings(call: Any, ids: list[Any], concurrency: int) -> float:
    """Ask round trips per second: ``call(id)`` for every id.

    ``concurrency`` long-lived caller greenlets share the ids, each asking
    in a loop (a greenlet per ask would measure spawning, not asking).
    """

    def caller(part: list[Any]) -> None:
        for i in part:
            call(i)

    t0 = now()
    if concurrency <= 1:
        caller(ids)
    else:
        gevent.joinall([gevent.spawn(caller, ids[k::concurrency]) for k in range(concurrency)])
    return len(ids) / (now() - t0)


def scale(n: int, history_turns: int = 1) -> dict[str, Any]:
    """The scale workload: start, RSS, (history), kill 10%, stop."""
    b = Baseline()
    rss0 = settled_rss()
    c0 = cpu()
    t0 = now()
    b.start(n)
    start_s = now() - t0
    start_cpu = cpu() - c0
    rss1 = settled_rss()
    for _ in range(history_turns):
        b.broadcast()
    out = {
        "n": n,
        "start_s": start_s,
        "start_us": start_s / n * 1e6,
        "start_cpu_us": start_cpu / n * 1e6,
        "rss_kb": (rss1 - rss0) / n / 1024,
        **b.kill_fraction(0.1),
        "stop_s": b.stop(),
    }
    return out


def broadcast(n: int, ping_count: int = 20_000, ping_concurrency: int = 100) -> dict[str, Any]:
    """The broadcast workload: start, one message to all, ask round trips."""
    b = Baseline()
    b.start(n)
    out: dict[str, Any] = {"n": n, **b.broadcast()}
    sample = random.choices(range(n), k=min(ping_count, max(n, 1)))
    out["ping_seq_s"] = pings(b.ping, sample, 1)
    out["ping_conc_s"] = pings(b.ping, sample, ping_concurrency)
    b.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps({"scale": scale(args.n), "broadcast": broadcast(args.n)}, indent=2))


if __name__ == "__main__":
    main()
