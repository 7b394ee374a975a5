"""Broadcast bench: one message to N conversations, end to end.

For each N, in a fresh process per workload, actorchat (SQLite store in a
temp dir; mock model, 20 tokens, 0 ms between tokens) and the bare-gevent
baseline (``_baseline.py``) run the same steps:

1. start N conversations;
2. one global subscriber (``subscribe(None)``, large ``maxsize``) counts
   ``StreamContent`` events in its own greenlet;
3. ``broadcast_message(ids, text)`` to all N -> replies/s (until every reply
   is stored and returned) and token events/s (until the subscriber has
   counted all N x 20), reply latency p50/p99 (from the start of the
   broadcast to the reply's ``StreamComplete`` reaching the subscriber), and
   every garbage-collector pass during the broadcast timed with
   ``gc.callbacks`` (longest, and how many over 100 ms), and how long the
   hub went without waking a greenlet that asks to every 1 ms (longest and
   p99: what every other client of the process waits meanwhile);
4. ask round trips (``ping``) to random conversations, from one caller and
   from 100 concurrent callers -> round trips/s.

Usage: ``python bench/broadcast.py --n 10000 100000 [--repeat 3] [--json]``.
"""

from __future__ import annotations

import actorchat

actorchat.patch()

import argparse
import random
import sys
from typing import Any

import _baseline
import gevent
from _common import (
    TEXT,
    TOKENS,
    GcPauses,
    HubGaps,
    TempDir,
    cpu,
    emit,
    fmt,
    make_config,
    md_table,
    now,
    percentile,
    print_report,
    ratio,
    run_pairs,
)
from gevent.event import Event

from actorchat import ChatSystem, StreamComplete, StreamContent

PING_COUNT = 20_000
PING_CONCURRENCY = 100


def run_actorchat(n: int) -> dict[str, Any]:
    with TempDir() as data_dir:
        chat = ChatSystem(make_config(data_dir)).start()
        ids = chat.start_conversations(n)
        while chat.states("starting", limit=1):
            gevent.sleep(0.001)

        sub = chat.subscribe(None, replay=False, maxsize=100_000_000)
        done = Event()
        latencies: list[float] = []
        counts = {"tokens": 0, "completes": 0}
        t0 = 0.0

        def consume() -> None:
            tokens = completes = 0
            get = sub.get
            while True:
                event = get()
                kind = type(event)
                if kind is StreamContent:
                    tokens += 1
                elif kind is StreamComplete:
                    completes += 1
                    latencies.append(now() - t0)
                    if completes >= n:
                        break
            counts["tokens"], counts["completes"] = tokens, completes
            done.set()

        consumer = gevent.spawn(consume)
        gevent.sleep(0)
        with GcPauses() as gcp, HubGaps() as hub:
            c0 = cpu()
            t0 = now()
            results = chat.broadcast_message(ids, TEXT, timeout=3600)
            t_replies = now()
            done.wait()
            t_end = now()
            cpu_s = cpu() - c0
        consumer.join()
        sub.close()
        errors = sum(1 for v in results.values() if not isinstance(v, str))
        out: dict[str, Any] = {
            "n": n,
            "replies": len(results) - errors,
            "errors": errors,
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
        sample = random.choices(ids, k=min(PING_COUNT, max(n, 1)))
        out["ping_seq_s"] = _baseline.pings(chat.ping, sample, 1)
        out["ping_conc_s"] = _baseline.pings(chat.ping, sample, PING_CONCURRENCY)
        chat.stop()
    return out


def report(results: dict[int, dict[str, dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown table and the target verdicts."""
    rows = []
    for n, pair in results.items():
        b, a = pair["baseline"], pair["actorchat"]

        def row(
            label: str,
            key: str,
            digits: int = 0,
            scale: float = 1.0,
            *,
            n: int = n,
            b: dict[str, Any] = b,
            a: dict[str, Any] = a,
        ) -> list[str]:
            return [
                f"{n:,}",
                label,
                fmt(b[key] * scale, digits),
                fmt(a[key] * scale, digits),
                ratio(a[key], b[key]),
            ]

        rows += [
            row("replies/s", "replies_s"),
            row(f"token events/s ({TOKENS} per reply, one subscriber)", "tokens_s"),
            row("broadcast wall time, s", "broadcast_s", 2),
            row("CPU us per reply (all threads)", "cpu_us", 1),
            row("reply latency p50, ms", "p50_ms"),
            row("reply latency p99, ms", "p99_ms"),
            row("longest hub stall (1 ms ticker), ms", "hub_gap_max_s", 1, 1000),
            row("hub stall p99 (1 ms ticker), ms", "hub_gap_p99_s", 1, 1000),
            row("longest GC pause, ms", "gc_max_pause_s", 1, 1000),
            row("longest GC pause, CPU ms", "gc_max_pause_cpu_s", 1, 1000),
            [
                f"{n:,}",
                "GC pauses > 100 ms / GC passes (gen 2)",
                f"{b['gc_pauses_over_100ms']:.0f} / {b['gc_collections']:.0f} ({b['gc_gen2']:.0f})",
                f"{a['gc_pauses_over_100ms']:.0f} / {a['gc_collections']:.0f} ({a['gc_gen2']:.0f})",
                "",
            ],
            row("ask round trips/s, 1 caller", "ping_seq_s"),
            row(f"ask round trips/s, {PING_CONCURRENCY} callers", "ping_conc_s"),
        ]
    table = md_table(["N", "metric", "baseline", "actorchat", "actorchat / baseline"], rows)
    hi = max(results)
    a, b = results[hi]["actorchat"], results[hi]["baseline"]
    targets = [
        {
            "target": f"broadcast >= 0.4x baseline token events/s (N={hi:,})",
            "value": a["tokens_s"] / b["tokens_s"],
            "ok": a["tokens_s"] >= 0.4 * b["tokens_s"] and not a["errors"],
        },
        {
            "target": "no GC pause over 100 ms during the broadcast (longest, s)",
            "value": a["gc_max_pause_s"],
            "ok": a["gc_pauses_over_100ms"] == 0,
        },
    ]
    return table, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload (median)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--worker", choices=["baseline", "actorchat"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        n = args.n[0]
        if args.worker == "baseline":
            emit(_baseline.broadcast(n, PING_COUNT, PING_CONCURRENCY))
        else:
            emit(run_actorchat(n))
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = run_pairs(__file__, args.n, args.repeat, (), log)
    table, targets = report(results)
    print_report(results, table, targets, args.repeat, bool(args.json))


if __name__ == "__main__":
    main()
