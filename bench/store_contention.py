"""Store bench: the SQLite thread's reads and writes while the hub is busy.

What it answers: how long the store's thread takes to append N messages and
to read 1,000 of them back while the hub (the gevent thread, where every
actor runs) keeps the GIL busy, row by row (``executemany``; iterating a
cursor) against one step per statement (multi-row ``INSERT``; rows
aggregated into one JSON value, as ``SQLiteStore`` does). Python's
``sqlite3`` lets go of the GIL around every SQLite step; a thread that
wants it back waits until the busy one lets go, up to a switch interval
(5 ms), so per-row steps crawl beside a busy hub.

Each variant runs twice: with an idle hub, and with a busy one (a greenlet
running pure Python until the store call returns, yielding every 50 ms).
Same process, same run. The figure is the thread's own time for the work,
from its start to its end on the thread (handing the result back to a hub
that yields only by ``sleep(0)`` adds its own delay, not measured here).

Run: ``python bench/store_contention.py [--rows 10000] [--read 1000]``.
"""

from __future__ import annotations

import actorchat

actorchat.patch()

import argparse
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
from gevent.threadpool import ThreadPool

from actorchat import Conversation, Message
from actorchat.stores import SQLiteStore
from actorchat.stores._sqlite import (
    _INSERT_MESSAGE,
    _MSG_COLS,
    _MSG_JSON,
    _ORDER,
    _insert_rows_sql,
    _message_row,
    _select_rows,
)


def busy_hub(done: list[bool]) -> int:
    """Pure Python on the hub until ``done``; yields only every ~50 ms."""
    n = 0
    last = time.monotonic()
    while not done[0]:
        for _ in range(1000):
            n += 1
        if time.monotonic() - last > 0.05:
            gevent.sleep(0)  # let the hub see the thread's result
            last = time.monotonic()
    return n


def _inside(fn: Callable[[], Any]) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def timed(pool: ThreadPool, fn: Callable[[], Any], busy: bool) -> float:
    done = [False]
    spinner = gevent.spawn(busy_hub, done) if busy else None
    inner: float = pool.spawn(_inside, fn).get()
    done[0] = True
    if spinner is not None:
        spinner.join()
    return inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="messages appended")
    parser.add_argument("--read", type=int, default=1000, help="messages read back")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="actorchat-bench-store-"))
    try:
        store = SQLiteStore(tmp / "s.sqlite3")
        store.open()
        store.create_conversations([Conversation("c", "u")])
        store.close()
        import sqlite3

        db = sqlite3.connect(tmp / "s.sqlite3", isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        pool = ThreadPool(1)
        made = [0]

        def rows(n: int) -> list[tuple[Any, ...]]:
            out = []
            for _ in range(n):
                made[0] += 1
                i = made[0]
                out.append(
                    _message_row(Message(f"m{i}", "c", "user", "hello " * 20, "u", time.time(), i))
                )
            return out

        def per_row_insert() -> None:
            batch = rows(args.rows)
            db.execute("BEGIN")
            db.executemany(_INSERT_MESSAGE, batch)
            db.execute("COMMIT")

        def multi_row_insert() -> None:
            batch = rows(args.rows)
            db.execute("BEGIN")
            for i in range(0, len(batch), 2000):
                part = batch[i : i + 2000]
                db.execute(_insert_rows_sql(len(part)), [v for r in part for v in r])
            db.execute("COMMIT")

        read_sql = f"SELECT {_MSG_COLS} FROM messages WHERE conversation_id = 'c' "
        read_sql += f"ORDER BY {_ORDER} LIMIT {args.read}"

        def per_row_read() -> None:
            assert len(db.execute(read_sql).fetchall()) == args.read

        def one_step_read() -> None:
            assert len(_select_rows(db, read_sql, (), _MSG_JSON)) == args.read

        results: dict[str, dict[str, float]] = {}
        for name, fn in (
            ("append, executemany", per_row_insert),
            ("append, multi-row INSERT", multi_row_insert),
            (f"read {args.read}, row by row", per_row_read),
            (f"read {args.read}, one JSON step", one_step_read),
        ):
            results[name] = {
                "idle hub": timed(pool, fn, busy=False),
                "busy hub": timed(pool, fn, busy=True),
            }
        pool.kill()
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, ", end="")
    print(f"appends of {args.rows:,} rows, reads of {args.read:,}")
    print()
    print("| store thread work | idle hub, s | busy hub, s | busy / idle |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        ratio = r["busy hub"] / r["idle hub"] if r["idle hub"] else float("nan")
        print(f"| {name} | {r['idle hub']:.3f} | {r['busy hub']:.3f} | {ratio:.0f}x |")
    print()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
