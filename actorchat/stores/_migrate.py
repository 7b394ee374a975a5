"""Copy an SQLite store into PostgreSQL: ``actorchat migrate``.

Idempotent and resumable: rows go over in chunks, one transaction each,
and a row already at the destination (same id) is left as it is, so a copy
that was interrupted is finished by running it again, and running it twice
copies nothing twice. The source is locked as a running server locks it, so
nothing changes it during the copy. At the end every conversation and
message of the source is looked up at the destination by id: the counts
must match, or the command fails.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from actorchat._redact import redact, scrub
from actorchat.errors import StoreError
from actorchat.stores._postgres import PostgresStore
from actorchat.stores._sqlite import _lock, _unlock

__all__ = ["migrate_sqlite_to_postgres"]

#: Rows per transaction.
CHUNK = 5000

_CONV_COLS = "id, owner, title, model, system_prompt, created_at, updated_at"
_MSG_COLS = (
    "id, conversation_id, turn, role, content, sender_id, created_at, prompt_tokens, "
    "completion_tokens, usage_estimated, finish_reason, model, superseded"
)

#: Called with (what, done, total) as the copy goes.
Progress = Callable[[str, int, int], None]


def _source(path: Path) -> Path:
    if path.is_dir():
        path = path / "actorchat.sqlite3"
    if not path.is_file():
        raise StoreError(f"no SQLite store at {path}")
    return path


def migrate_sqlite_to_postgres(
    source: Path,
    url: str,
    *,
    password: str | None = None,
    progress: Progress | None = None,
    notes: list[str] | None = None,
) -> tuple[int, int]:
    """Copy every conversation and message (versions included); returns their counts.

    PostgreSQL's text cannot hold NUL, which older SQLite stores may have in
    a title, a system prompt or a name: each such character is replaced with
    U+FFFD on the way, and ``notes`` gets one line saying how many.
    """
    path = _source(source)
    fd = _lock(path)  # refused while a server owns the file
    try:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            if db.execute("PRAGMA user_version").fetchone()[0] < 1:
                raise StoreError(f"{path} is not an actorchat store (no schema)")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {path}: {exc}") from None
        try:
            # Opening the store creates or upgrades the schema (under its lock).
            target = PostgresStore(url, password=password, pool_size=1)
            target.open()
            target.close()
            kwargs: dict[str, Any] = {} if password is None else {"password": password}
            secrets = [s for s in (password,) if s]
            try:
                with psycopg.connect(url, **kwargs) as conn:
                    replaced = [0]
                    counts = _copy(db, conn, progress or (lambda *_: None), replaced)
                    if replaced[0] and notes is not None:
                        notes.append(
                            f"replaced {replaced[0]:,} NUL character(s) in titles, prompts or "
                            "names with U+FFFD (PostgreSQL text cannot hold NUL)"
                        )
                    return counts
            except psycopg.Error as exc:
                detail = scrub(" ".join(str(exc).split()), secrets)
                raise StoreError(f"copying into {redact(url)} failed: {detail}") from None
            except sqlite3.Error as exc:
                raise StoreError(f"reading {path} failed: {exc}") from None
        finally:
            db.close()
    finally:
        _unlock(fd)


def _copy(
    db: sqlite3.Connection,
    conn: psycopg.Connection[Any],
    progress: Progress,
    replaced: list[int],
) -> tuple[int, int]:
    def clean(row: tuple[Any, ...]) -> tuple[Any, ...]:
        out = []
        for value in row:
            if isinstance(value, str) and "\x00" in value:
                replaced[0] += value.count("\x00")
                value = value.replace("\x00", "\ufffd")
            out.append(value)
        return tuple(out)

    n_convs = db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    n_msgs = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    found_convs = _table(
        db,
        conn,
        f"SELECT {_CONV_COLS} FROM conversations ORDER BY rowid",
        "conversations",
        _CONV_COLS,
        "id TEXT, owner TEXT, title TEXT, model TEXT, system_prompt TEXT, "
        "created_at DOUBLE PRECISION, updated_at DOUBLE PRECISION",
        "ON CONFLICT (id) DO NOTHING",
        n_convs,
        clean,
        progress,
    )
    found_msgs = _table(
        db,
        conn,
        f"SELECT {_MSG_COLS} FROM messages ORDER BY seq",
        "messages",
        _MSG_COLS,
        "id TEXT, conversation_id TEXT, turn INTEGER, role TEXT, content BYTEA, "
        "sender_id TEXT, created_at DOUBLE PRECISION, prompt_tokens BIGINT, "
        "completion_tokens BIGINT, usage_estimated BOOLEAN, finish_reason TEXT, model TEXT, "
        "superseded BOOLEAN",
        # A reply regenerated since an earlier, interrupted copy.
        "ON CONFLICT (id) DO UPDATE SET superseded = EXCLUDED.superseded "
        "WHERE messages.superseded IS DISTINCT FROM EXCLUDED.superseded",
        n_msgs,
        lambda row: clean(_message(row)),
        progress,
    )
    if (found_convs, found_msgs) != (n_convs, n_msgs):
        raise StoreError(
            f"verification failed: {found_convs} of {n_convs} conversations and "
            f"{found_msgs} of {n_msgs} messages are at the destination"
        )
    return n_convs, n_msgs


def _message(row: tuple[Any, ...]) -> tuple[Any, ...]:
    r = list(row)
    content = r[4]
    r[4] = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    r[9] = bool(r[9])
    r[12] = bool(r[12])
    return tuple(r)


def _table(
    db: sqlite3.Connection,
    conn: psycopg.Connection[Any],
    select: str,
    table: str,
    cols: str,
    staging_cols: str,
    conflict: str,
    total: int,
    convert: Callable[[tuple[Any, ...]], tuple[Any, ...]],
    progress: Progress,
) -> int:
    """Copy ``table`` in chunks through a staging table; how many source ids are there."""
    done = found = 0
    progress(table, 0, total)
    cur = db.execute(select)
    while True:
        rows = cur.fetchmany(CHUNK)
        if not rows:
            break
        with conn.transaction():
            conn.execute(f"CREATE TEMP TABLE staging (ord SERIAL, {staging_cols}) ON COMMIT DROP")
            with conn.cursor() as pg, pg.copy(f"COPY staging ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(convert(row))
            # In the source's order, so that the destination's sequence numbers
            # keep turn order and listing order.
            conn.execute(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM staging ORDER BY ord {conflict}"
            )
            got = conn.execute(
                f"SELECT COUNT(*) FROM {table} t JOIN staging s ON s.id = t.id"
            ).fetchone()
        found += int(got[0]) if got else 0
        done += len(rows)
        progress(table, done, total)
    return found
