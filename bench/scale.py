"""Scale bench: start N conversations, memory, kill 10%, stop all.

For each N, in a fresh process per workload, actorchat (SQLite store in a
temp dir) and the bare-gevent baseline (``_baseline.py``) run the same steps:

1. start N conversations (actorchat: ``start_conversations``, store write
   included, until no actor is still starting) -> microseconds per
   conversation, and its linearity (per-conversation cost at the largest N
   over that at the smallest);
2. RSS per live idle conversation: RSS delta over N, each after
   ``gc.collect()``;
3. one message to every conversation, so that each has a history to reload;
4. kill 10% at random (``kill_many(fraction=0.1)``) -> seconds until every
   killed one has restarted with its history reloaded (its
   ``ConversationState("idle", "restarted")`` event, published once its
   history is loaded, seen on a global subscription), and until
   ``get_history`` on each of them returned the history it had before;
5. stop all (``ChatSystem.stop()``) -> seconds.

With matplotlib (the ``bench`` extra) it also draws these figures against N
in ``bench/charts/scale.png`` (``--charts DIR`` elsewhere, ``--no-charts``
not at all).

Usage: ``python bench/scale.py --n 10000 100000 [--repeat 3] [--json]``.
"""

from __future__ import annotations

import actorchat

actorchat.patch()

import argparse
import sys
from pathlib import Path
from typing import Any

import _baseline
import _charts
import gevent
from _common import (
    TEXT,
    TempDir,
    cpu,
    emit,
    fmt,
    machine,
    make_config,
    md_table,
    now,
    print_report,
    ratio,
    run_pairs,
    settled_rss,
)
from gevent.event import Event
from gevent.pool import Pool

from actorchat import ChatSystem, ConversationState


def run_actorchat(n: int, history_turns: int = 1) -> dict[str, Any]:
    with TempDir() as data_dir:
        chat = ChatSystem(make_config(data_dir)).start()
        rss0 = settled_rss()
        c0 = cpu()
        t0 = now()
        ids = chat.start_conversations(n)
        while chat.states("starting", limit=1):
            gevent.sleep(0.001)
        start_s = now() - t0
        start_cpu = cpu() - c0
        rss1 = settled_rss()

        replies: dict[str, Any] = {}
        for _ in range(history_turns):
            replies = chat.broadcast_message(ids, TEXT, timeout=3600)
        failed_replies = sum(1 for v in replies.values() if not isinstance(v, str))

        # Kill 10%: watch the restarts on one global subscription.
        restarted: dict[str, float] = {}
        waiting: set[str] = set()
        all_back = Event()
        sub = chat.subscribe(None, replay=False, maxsize=50_000_000)

        def watch() -> None:
            for event in sub:
                if (
                    type(event) is ConversationState
                    and event.state == "idle"
                    and event.reason == "restarted"
                ):
                    restarted[event.conversation_id] = now()
                    waiting.discard(event.conversation_id)
                    if armed[0] and not waiting:
                        all_back.set()

        armed = [False]
        watcher = gevent.spawn(watch)
        gevent.sleep(0)
        t_kill = now()
        killed = chat.kill_many(fraction=0.1)
        waiting.update(cid for cid in killed if cid not in restarted)
        armed[0] = True
        if not waiting:
            all_back.set()
        all_back.wait(600)
        recover_s = max(restarted[cid] for cid in killed) - t_kill if killed else 0.0

        def check(cid: str) -> bool:
            history = chat.get_history(cid)
            return len(history) == 2 * history_turns and (
                not history_turns or history[-1].content == replies[cid]
            )

        ok = Pool(100).map(check, killed)
        verified_s = now() - t_kill
        sub.close()
        watcher.kill()

        t_stop = now()
        chat.stop()
        stop_s = now() - t_stop
    return {
        "n": n,
        "start_s": start_s,
        "start_us": start_s / n * 1e6,
        "start_cpu_us": start_cpu / n * 1e6,
        "rss_kb": (rss1 - rss0) / n / 1024,
        "failed_replies": failed_replies,
        "killed": len(killed),
        "recover_s": recover_s,
        "recover_verified_s": verified_s,
        "verify_failures": sum(1 for x in ok if not x),
        "stop_s": stop_s,
    }


def report(results: dict[int, dict[str, dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown table and the target verdicts."""
    rows = []
    for n, pair in results.items():
        b, a = pair["baseline"], pair["actorchat"]
        rows += [
            [
                f"{n:,}",
                "start, us/conversation",
                fmt(b["start_us"]),
                fmt(a["start_us"]),
                ratio(a["start_us"], b["start_us"]),
            ],
            [
                f"{n:,}",
                "start, CPU us/conversation (all threads)",
                fmt(b["start_cpu_us"]),
                fmt(a["start_cpu_us"]),
                ratio(a["start_cpu_us"], b["start_cpu_us"]),
            ],
            [
                f"{n:,}",
                "RSS, KB/live idle conversation",
                fmt(b["rss_kb"], 2),
                fmt(a["rss_kb"], 2),
                ratio(a["rss_kb"], b["rss_kb"]),
            ],
            [
                f"{n:,}",
                f"kill 10% ({a['killed']:,}): all restarted, s",
                fmt(b["recover_s"], 3),
                fmt(a["recover_s"], 3),
                ratio(a["recover_s"], b["recover_s"]),
            ],
            [
                f"{n:,}",
                "kill 10%: all histories verified, s",
                fmt(b["recover_verified_s"], 3),
                fmt(a["recover_verified_s"], 3),
                ratio(a["recover_verified_s"], b["recover_verified_s"]),
            ],
            [
                f"{n:,}",
                "stop all, s",
                fmt(b["stop_s"], 3),
                fmt(a["stop_s"], 3),
                ratio(a["stop_s"], b["stop_s"]),
            ],
        ]
    ns = sorted(results)
    lo, hi = ns[0], ns[-1]
    lin_a = results[hi]["actorchat"]["start_us"] / results[lo]["actorchat"]["start_us"]
    lin_b = results[hi]["baseline"]["start_us"] / results[lo]["baseline"]["start_us"]
    if hi != lo:
        rows.append(
            [
                f"{hi:,} vs {lo:,}",
                "start linearity (per-conv cost ratio)",
                f"{lin_b:.2f}x",
                f"{lin_a:.2f}x",
                "",
            ]
        )
    table = md_table(["N", "metric", "baseline", "actorchat", "actorchat / baseline"], rows)

    a, b = results[hi]["actorchat"], results[hi]["baseline"]
    targets = [
        {
            "target": f"start <= 2x baseline per conversation (N={hi:,})",
            "value": a["start_us"] / b["start_us"],
            "ok": a["start_us"] <= 2 * b["start_us"],
        },
        {
            "target": "RSS per idle live conversation <= 1.2x baseline",
            "value": a["rss_kb"] / b["rss_kb"],
            "ok": a["rss_kb"] <= 1.2 * b["rss_kb"],
        },
        {
            "target": "10% killed: all serving again, history reloaded, <= 1 s",
            "value": a["recover_s"],
            "ok": a["recover_s"] <= 1.0 and not a["verify_failures"],
        },
        {"target": "stop all <= 2 s", "value": a["stop_s"], "ok": a["stop_s"] <= 2.0},
    ]
    if hi != lo:
        targets.insert(
            1,
            {
                "target": f"start linear: per-conv cost at {hi:,} <= 1.3x at {lo:,}",
                "value": lin_a,
                "ok": lin_a <= 1.3,
            },
        )
    return table, targets


def charts(
    results: dict[int, dict[str, dict[str, Any]]], out_dir: Path, argv: list[str]
) -> Path | None:
    """The figures against N, actorchat vs bare gevent, in ``out_dir/scale.png``."""
    names = {"actorchat": "actorchat", "baseline": "bare gevent"}

    def series(key: str, suffix: str = "", dashed: bool = False) -> list[_charts.Series]:
        return [
            _charts.Series(
                names[kind] + suffix,
                [(n, pair[kind][key]) for n, pair in sorted(results.items()) if key in pair[kind]],
                group=kind,
                dashed=dashed,
            )
            for kind in ("actorchat", "baseline")
        ]

    def has(*keys: str) -> bool:
        return all(k in pair[kind] for pair in results.values() for kind in names for k in keys)

    x = "conversations (N)"
    panels = []
    if has("start_us"):
        panels.append(
            _charts.Panel(
                "Start (store write included)", x, "µs per conversation", series("start_us")
            )
        )
    if has("rss_kb"):
        panels.append(
            _charts.Panel("Memory", x, "RSS, KB per live idle conversation", series("rss_kb"))
        )
    if has("recover_s", "recover_verified_s"):
        panels.append(
            _charts.Panel(
                "Kill 10%: recovery",
                x,
                "seconds after the kill",
                series("recover_s", ": all restarted")
                + series("recover_verified_s", ": histories verified", dashed=True),
            )
        )
    if has("stop_s"):
        panels.append(_charts.Panel("Stop all", x, "seconds", series("stop_s")))
    if not panels:
        return None
    m = machine()
    note = (
        f"{m['date']}, commit {m['commit']}, {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['mem_total_gb']} GB; python bench/scale.py {' '.join(argv)}"
    )
    return _charts.line_panels(
        out_dir / "scale.png", panels, "Scale: actorchat vs bare gevent", note=note
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload (median)")
    parser.add_argument(
        "--history-turns",
        type=int,
        default=1,
        help="messages sent to each conversation before the kill",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--worker", choices=["baseline", "actorchat"], help=argparse.SUPPRESS)
    _charts.add_arguments(parser)
    args = parser.parse_args()

    if args.worker:
        n = args.n[0]
        if args.worker == "baseline":
            emit(_baseline.scale(n, args.history_turns))
        else:
            emit(run_actorchat(n, args.history_turns))
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    chart_dir = _charts.output_dir(args)
    extra = ["--history-turns", str(args.history_turns)]
    results = run_pairs(__file__, args.n, args.repeat, extra, log)
    table, targets = report(results)
    print_report(results, table, targets, args.repeat, bool(args.json))
    if chart_dir is not None and (path := charts(results, chart_dir, sys.argv[1:])):
        _charts.wrote(path)


if __name__ == "__main__":
    main()
