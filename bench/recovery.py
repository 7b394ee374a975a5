"""Recovery bench: where the time goes between killing a conversation and its next chunk.

Two experiments, in-process (SQLite store in a temp dir), read entirely from
the public event bus, so they time what a client would see:

1. **One at a time, under load.** ``--streaming`` conversations stream long
   replies (the mock, ``--delay-ms`` between tokens) while one of them is
   killed every ``--every-ms``. For each kill, the timeline: ``kill()``
   returns -> ``crashed`` (the supervisor heard of it) -> ``restarted``
   (history reloaded, the actor serving) -> ``stream_start`` of the new
   answer to the interrupted message -> its first chunk. p50/p99/max of each
   step, measured from the kill. The first chunk includes one ``--delay-ms``:
   the model's own time to its first token.
2. **Many one by one.** At ``--n`` conversations, 10% killed with ``kill(id)``
   calls one after another: how long the calls take, then until every victim
   has restarted, then until each answers ``get_history``.

Usage: ``python bench/recovery.py [--streaming 300] [--kills 150] [--n 100000] [--json]``.
"""

from __future__ import annotations

import actorchat

actorchat.patch()

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
from _common import percentile

from actorchat import (
    ChatSystem,
    ConversationState,
    StreamContent,
    StreamStart,
    load_config,
)

STEPS = ("crashed", "restarted", "stream_start", "first_chunk")


def _config(data_dir: Path, delay_ms: float, tokens: int) -> Any:
    return load_config(
        env={}, data_dir=data_dir, mock_tokens=tokens, mock_delay_ms=delay_ms, idle_timeout=0.0
    )


def one_at_a_time(streaming: int, kills: int, every_ms: float, delay_ms: float) -> dict[str, Any]:
    """Experiment 1: a timeline per kill, under ``streaming`` replies."""
    with tempfile.TemporaryDirectory() as tmp:
        # Replies long enough to be streaming whenever a kill lands.
        chat = ChatSystem(_config(Path(tmp), delay_ms, 100_000)).start()
        try:
            ids = chat.start_conversations(streaming)
            sub = chat.subscribe(None, replay=False, maxsize=10_000_000)
            for cid in ids:
                chat.post_message(cid, "talk to me for a long time")
            killed_at: dict[str, float] = {}
            marks: dict[str, dict[str, float]] = {}

            def watch() -> None:
                while True:
                    event = sub.get(30)
                    if event is None:
                        return
                    cid = event.conversation_id
                    step = marks.get(cid)
                    if step is None or "first_chunk" in step:
                        continue
                    now = time.perf_counter()
                    if isinstance(event, ConversationState) and event.state == "crashed":
                        step.setdefault("crashed", now)
                    elif isinstance(event, ConversationState) and event.state == "idle":
                        step.setdefault("restarted", now)
                    elif isinstance(event, StreamStart) and "restarted" in step:
                        step.setdefault("stream_start", now)
                    elif isinstance(event, StreamContent) and "stream_start" in step:
                        step["first_chunk"] = now

            watcher = gevent.spawn(watch)
            # Every conversation streams before the first kill.
            gevent.sleep(max(0.5, delay_ms / 1000 * 5))
            victims = random.sample(ids, min(kills, len(ids)))
            call_us = []
            for cid in victims:
                marks[cid] = {}
                t0 = time.perf_counter()
                chat.kill(cid)
                call_us.append((time.perf_counter() - t0) * 1e6)
                killed_at[cid] = t0
                gevent.sleep(every_ms / 1000)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                "first_chunk" not in m for m in marks.values()
            ):
                gevent.sleep(0.05)
            watcher.kill()
            sub.close()
        finally:
            chat.stop()
    out: dict[str, Any] = {"kills": len(victims), "kill_call_us_p50": percentile(call_us, 50)}
    for step in STEPS:
        ms = [(m[step] - killed_at[c]) * 1000 for c, m in marks.items() if step in m]
        out[step] = {
            "n": len(ms),
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "max_ms": max(ms, default=0.0),
        }
    return out


def many_one_by_one(n: int) -> dict[str, Any]:
    """Experiment 2: 10% of ``n`` killed with ``kill(id)``, one call after another."""
    with tempfile.TemporaryDirectory() as tmp:
        chat = ChatSystem(_config(Path(tmp), 0.0, 20)).start()
        try:
            ids = chat.start_conversations(n)
            chat.broadcast_message(ids, "something to remember")
            victims = random.sample(ids, n // 10)
            wanted = set(victims)
            sub = chat.subscribe(None, replay=False, maxsize=10_000_000)
            t0 = time.perf_counter()
            for cid in victims:
                chat.kill(cid)
            t1 = time.perf_counter()
            restarted: set[str] = set()
            while len(restarted) < len(wanted):
                event = sub.get(60)
                if event is None:
                    break
                if (
                    isinstance(event, ConversationState)
                    and event.state == "idle"
                    and event.conversation_id in wanted
                ):
                    restarted.add(event.conversation_id)
            t2 = time.perf_counter()
            for cid in victims:
                chat.get_history(cid)
            t3 = time.perf_counter()
            sub.close()
        finally:
            chat.stop()
    return {
        "n": n,
        "killed": len(victims),
        "calls_s": t1 - t0,
        "per_call_us": (t1 - t0) / len(victims) * 1e6,
        "restarted_after_s": t2 - t1,
        "history_after_s": t3 - t2,
        "total_s": t3 - t0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streaming", type=int, default=300, help="conversations streaming")
    parser.add_argument("--kills", type=int, default=150, help="kills, one at a time")
    parser.add_argument("--every-ms", type=float, default=50.0, help="between two kills")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="mock: between tokens")
    parser.add_argument("--n", type=int, default=100_000, help="conversations for part 2 (0: skip)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "one_at_a_time": one_at_a_time(args.streaming, args.kills, args.every_ms, args.delay_ms)
    }
    if args.n:
        result["many_one_by_one"] = many_one_by_one(args.n)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    one = result["one_at_a_time"]
    print(
        f"One at a time: {one['kills']} kills among {args.streaming} streaming conversations "
        f"(mock {args.delay_ms:g} ms a token); kill() call p50 {one['kill_call_us_p50']:.0f} us"
    )
    print("| step (from the kill) | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for step in STEPS:
        s = one[step]
        print(f"| {step} | {s['n']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |")
    many = result.get("many_one_by_one")
    if many:
        print(
            f"\nMany one by one: {many['killed']:,} kill(id) calls at N = {many['n']:,}: "
            f"{many['calls_s']:.2f} s ({many['per_call_us']:.0f} us each); all restarted "
            f"+{many['restarted_after_s']:.2f} s; get_history on each "
            f"+{many['history_after_s']:.2f} s; total {many['total_s']:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
