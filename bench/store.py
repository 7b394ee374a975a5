"""Store bench: SQLite vs PostgreSQL in the same run, on this machine.

PostgreSQL is a throwaway cluster this script starts itself (``initdb`` as an
unprivileged user, ``tests/pg_support.py``) with PostgreSQL's default
durability (``fsync``, ``synchronous_commit = on``); or ``--database-url``
names one to use (each run gets a schema of its own there). SQLite is the
default store in a temp dir (WAL, ``synchronous = NORMAL``). For each store,
in a fresh process per workload:

1. appends/s, store alone: 100,000 ``append_message_async`` queued at once
   (spread over 10,000 conversations), until the last completion; and 1,000
   greenlets each awaiting ``append_message`` 20 times (20,000 appends);
2. for each N: ``start_conversations(N)`` and ``broadcast_message`` to all N
   (the mock model, 20 tokens, 0 ms between them): replies/s, wall time.

Usage: ``python bench/store.py --n 10000 100000 [--repeat 3] [--json]``.
"""

from __future__ import annotations

import actorchat

actorchat.patch()

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from _common import (
    TEXT,
    TempDir,
    cpu,
    emit,
    fmt,
    make_config,
    md_table,
    median_of,
    now,
    print_report,
    ratio,
    run_worker,
)
from gevent.event import Event

from actorchat import ChatSystem, Conversation, Message

STORES = ("sqlite", "postgres")
ASYNC_APPENDS = 100_000
AWAITERS, PER_AWAITER = 1000, 20


def _config(kind: str, data_dir: Path, url: str) -> Any:
    cfg = make_config(data_dir)
    if kind == "postgres":
        cfg = cfg.replace(store="postgres", database_url=url)
    return cfg


def appends(kind: str, url: str) -> dict[str, Any]:
    from actorchat.stores import create_store

    with TempDir() as data_dir:
        store = create_store(_config(kind, data_dir, url))
        store.open()
        convs = [Conversation(f"c{i}", "bench") for i in range(10_000)]
        store.create_conversations(convs)
        stamp = time.time()
        msgs = [
            Message(f"a{i}", f"c{i % 10_000}", "user", TEXT, "bench", stamp, i // 10_000 + 1)
            for i in range(ASYNC_APPENDS)
        ]
        done = Event()
        left = [len(msgs)]
        failed = [0]

        def cb(error: object) -> None:
            failed[0] += error is not None
            left[0] -= 1
            if not left[0]:
                done.set()

        c0, t0 = cpu(), now()
        for m in msgs:
            store.append_message_async(m, cb)
        done.wait()
        async_s = now() - t0
        async_cpu = cpu() - c0

        def awaiter(k: int) -> None:
            for j in range(PER_AWAITER):
                cid = f"c{k}"
                store.append_message(
                    Message(f"w{k}-{j}", cid, "user", TEXT, "bench", stamp, 100 + j)
                )

        t0 = now()
        gevent.joinall([gevent.spawn(awaiter, k) for k in range(AWAITERS)], raise_error=True)
        awaited_s = now() - t0
        store.close()
    return {
        "async_appends_s": ASYNC_APPENDS / async_s,
        "async_cpu_us": async_cpu / ASYNC_APPENDS * 1e6,
        "awaited_appends_s": AWAITERS * PER_AWAITER / awaited_s,
        "errors": failed[0],
    }


def broadcast(kind: str, n: int, url: str) -> dict[str, Any]:
    with TempDir() as data_dir:
        chat = ChatSystem(_config(kind, data_dir, url)).start()
        t0 = now()
        ids = chat.start_conversations(n)
        while chat.states("starting", limit=1):
            gevent.sleep(0.001)
        start_s = now() - t0
        c0, t0 = cpu(), now()
        results = chat.broadcast_message(ids, TEXT, timeout=3600)
        wall = now() - t0
        cpu_s = cpu() - c0
        chat.stop()
    errors = sum(1 for v in results.values() if not isinstance(v, str))
    return {
        "n": n,
        "start_s": start_s,
        "replies_s": n / wall,
        "broadcast_s": wall,
        "cpu_us": cpu_s / n * 1e6,
        "errors": errors,
    }


def report(results: dict[str, dict[str, dict[str, Any]]]) -> tuple[str, list[dict[str, Any]]]:
    rows = []

    def row(work: str, label: str, key: str, digits: int = 0) -> list[str]:
        s, p = results[work]["sqlite"], results[work]["postgres"]
        return [work, label, fmt(s[key], digits), fmt(p[key], digits), ratio(p[key], s[key])]

    rows.append(row("appends", f"{ASYNC_APPENDS:,} queued at once, appends/s", "async_appends_s"))
    rows.append(row("appends", "  CPU us per append (this process)", "async_cpu_us", 1))
    rows.append(
        row("appends", f"{AWAITERS:,} greenlets awaiting each, appends/s", "awaited_appends_s")
    )
    targets = []
    for work in results:
        if not work.startswith("broadcast"):
            continue
        rows.append(row(work, "start all, s", "start_s", 2))
        rows.append(row(work, "replies/s", "replies_s"))
        rows.append(row(work, "broadcast wall time, s", "broadcast_s", 2))
        rows.append(row(work, "CPU us per reply (this process)", "cpu_us", 1))
        s, p = results[work]["sqlite"], results[work]["postgres"]
        targets.append(
            {
                "target": f"PostgreSQL broadcast >= 0.7x SQLite's replies/s ({work})",
                "value": p["replies_s"] / s["replies_s"],
                "ok": p["replies_s"] >= 0.7 * s["replies_s"] and not p["errors"],
            }
        )
    table = md_table(["workload", "metric", "SQLite", "PostgreSQL", "PostgreSQL / SQLite"], rows)
    return table, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload (median)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--database-url", default="", help="use this PostgreSQL (default: start one)"
    )
    parser.add_argument("--worker", choices=STORES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        if args.work == "appends":
            emit(appends(args.worker, args.database_url))
        else:
            emit(broadcast(args.worker, args.n[0], args.database_url))
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pg_support import Cluster, find_bindir

    cluster = None
    if args.database_url:
        base = args.database_url
    else:
        bindir = find_bindir()
        if bindir is None:
            sys.exit("bench/store.py: no PostgreSQL found (install Debian's postgresql)")
        log(f"starting a throwaway PostgreSQL from {bindir} (default durability) ...")
        cluster = Cluster(bindir, durable=True)
        base = cluster.url()

    def fresh_url() -> str:
        import secrets

        import psycopg

        name = "bench_" + secrets.token_hex(4)
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}options=-csearch_path%3D{name}"

    try:
        works = ["appends", *(f"broadcast N={n:,}" for n in args.n)]
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for work in works:
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in STORES}
            for r in range(args.repeat):
                for kind in STORES:
                    log(f"{work} {kind} run {r + 1}/{args.repeat} ...")
                    extra = ["--work", "appends", "--n", "0"]
                    if work != "appends":
                        extra = ["--work", "broadcast", "--n", work.split("=")[1].replace(",", "")]
                    url = fresh_url() if kind == "postgres" else ""
                    runs[kind].append(
                        run_worker(__file__, ["--worker", kind, "--database-url", url, *extra])
                    )
            results[work] = {kind: median_of(rs) for kind, rs in runs.items()}
    finally:
        if cluster is not None:
            cluster.destroy()
    table, targets = report(results)
    print_report(results, table, targets, args.repeat, bool(args.json))


if __name__ == "__main__":
    main()
