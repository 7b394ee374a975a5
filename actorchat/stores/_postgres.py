"""PostgreSQL: one database shared by many processes, with fenced ownership.

Why a writer greenlet: a commit costs a round trip and (with the default
``synchronous_commit``) a WAL flush, about 3,900 one-row transactions a
second here, so appends are queued and one writer greenlet drains the whole
queue as one transaction (group commit, as ``SQLiteStore`` does), its
appends in one ``COPY``. Completions are called in submission order,
without yielding between a commit and its callbacks' start. psycopg 3
cooperates with gevent in a monkey-patched process: waiting on the
database lets the hub run every other greenlet, so there is no thread here.

Reads go to the pool's connections directly, in parallel with the writer,
after a *barrier*: a read waits until every write queued before it has
committed, so it sees them (the guarantee ``SQLiteStore`` gives by reading
on its writer thread).

Fencing (see ``actorchat.stores._base``): every write transaction reads the
owner epochs of the conversations it touches, takes over those older than
its own, and refuses with ``Fenced`` the writes where the row's is newer. A
stale process's transaction in flight either commits before the new
owner's takeover ends (which waits for it) or is refused after it: its
writes never interleave with the new owner's (``_pg_fencing.py``).

Schema changes are numbered (``_pg_schema.MIGRATIONS``, the same logical
model as the SQLite store's) and applied at ``open`` under an advisory lock,
so that many processes starting at once migrate once.

A password (in the URL, ``database_password_file`` or ``PGPASSWORD``) is
scrubbed from every error message this module raises or logs.

One module of ~650 lines on purpose, as ``_sqlite.py``: the writer's
batching, its barrier for reads and the fencing check inside each batch's
transaction depend on one another; the schema and the fencing SQL live in
their own modules.

Past 500 lines as one piece, like ``_sqlite.py``: the writer and the reads
share the pool, the queue and the barrier; the schema and the fencing, which
change on their own, live in ``_pg_schema.py`` and ``_pg_fencing.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import psycopg
from gevent.event import AsyncResult, Event
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from actorchat._gevent import yielding
from actorchat._records import Conversation, Message
from actorchat._redact import redact, scrub
from actorchat.errors import StoreError
from actorchat.stores._base import Done, Store
from actorchat.stores._paging import ORDER, conversations_page, messages_page
from actorchat.stores._pg_fencing import Checked, EpochGuard, fenced
from actorchat.stores._pg_schema import (
    CONV_COLS,
    CONV_SELECT,
    COPY_CONVERSATIONS,
    COPY_MESSAGES,
    MSG_COLS,
    conv_from_row,
    message_from_row,
    message_row,
    migrate,
)

__all__ = ["PostgresStore"]

log = logging.getLogger("actorchat.store")

#: Ids per statement of ``load_many`` (bounded memory per round trip).
_CHUNK = 2000
#: Attempts of a batch that lost a deadlock or serialization race (nothing
#: of it was committed, so running it again is safe).
_RACE_ATTEMPTS = 3


# -- the queue -------------------------------------------------------------

_APPEND, _SUPERSEDE, _CREATE, _UPDATE, _DELETE, _CLAIM, _MARK = range(7)


class _Op:
    """One queued write: a waiting caller's ``result``, or a ``done`` callback."""

    __slots__ = ("args", "cid", "done", "epoch", "kind", "result")

    def __init__(
        self,
        kind: int,
        cid: str,
        epoch: int,
        args: Any,
        done: Done | None = None,
    ) -> None:
        self.kind = kind
        self.cid = cid
        self.epoch = epoch
        self.args = args
        self.done = done
        self.result: AsyncResult[Any] | None = None if done is not None else AsyncResult()


def _ignore(error: StoreError | None) -> None:
    if error is not None:
        log.warning("store write failed: %s", error)


class PostgresStore(Store):
    """PostgreSQL through a psycopg pool, with group commit and fenced ownership.

    Args:
        url: a libpq connection URL or string (``postgresql://user@host/db``).
        password: the password, when not in ``url`` (libpq also reads
            ``PGPASSWORD`` by itself).
        pool_size: connections at most (the writer uses one at a time, reads
            the others).
        epoch: the owner epoch of this store's writes; None takes a new one
            from the database's sequence at ``open``.
        timeout: seconds to wait for a connection before a call fails.
        claim_on_load: ``load`` and ``load_many`` take the conversations
            over first (False: a reader that only looks).
    """

    callbacks_never_wait = True  # the *_async methods only queue for the writer

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        pool_size: int = 10,
        epoch: int | None = None,
        timeout: float = 10.0,
        claim_on_load: bool = True,
    ) -> None:
        self.claim_on_load = claim_on_load
        self.url = url
        self.pool_size = pool_size
        self.timeout = timeout
        self._fixed_epoch = epoch
        self.epoch: int | None = epoch
        self._epochs: dict[str, int] = {}
        self._guard = EpochGuard()
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if password is not None:
            self._kwargs["password"] = password
        try:
            in_url = conninfo_to_dict(url).get("password")
        except psycopg.Error:
            in_url = None  # reported by open(), scrubbed
        self._secrets = [
            s for s in (password, in_url, os.environ.get("PGPASSWORD")) if isinstance(s, str) and s
        ]
        self._pool: ConnectionPool[Any] | None = None
        self._pending: list[_Op] = []
        self._wake = Event()
        self._writer: gevent.Greenlet[Any] | None = None
        self._busy = False
        self._closing = False
        self._writer_done = False
        self._schema: int | None = None
        self.batches = 0
        self.ops = 0

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)!r})"

    def _error(self, what: str, exc: BaseException) -> StoreError:
        # One line: libpq adds hints on lines of their own.
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(scrub(f"{what}: {detail}", self._secrets))

    # -- life cycle -----------------------------------------------------

    def open(self) -> None:
        if self._pool is not None:
            return
        where = redact(self.url)
        try:
            timeout = max(1, int(self.timeout))
            with psycopg.connect(self.url, connect_timeout=timeout, **self._kwargs) as conn:
                self._schema = migrate(conn)
                if self._fixed_epoch is None:
                    row = conn.execute("SELECT nextval('owner_epochs')").fetchone()
                    assert row is not None
                    self.epoch = int(row[0])
        except psycopg.Error as exc:
            raise self._error(f"cannot open PostgreSQL store {where}", exc) from None
        pool: ConnectionPool[Any] = ConnectionPool(
            self.url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.timeout,
            name="actorchat",
            # A connection that died with a database restart is found and
            # replaced when taken, not by the caller's first statement.
            check=ConnectionPool.check_connection,
            reconnect_failed=self._reconnect_failed,
        )
        try:
            pool.open(wait=True, timeout=self.timeout)
        except PoolTimeout as exc:
            pool.close(timeout=0)
            raise self._error(f"cannot open PostgreSQL store {where}", exc) from None
        self._pool = pool
        self._closing = self._writer_done = False
        self._writer = gevent.spawn(self._write_loop)

    def _reconnect_failed(self, _pool: ConnectionPool[Any]) -> None:
        log.warning("store: cannot reconnect to PostgreSQL %s", redact(self.url))

    def close(self) -> None:
        if self._pool is None:
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            self._writer.join()
        pool, self._pool = self._pool, None
        pool.close(timeout=self.timeout)

    def check(self) -> bool:
        if self._pool is None:
            return False
        try:
            with self._pool.connection(timeout=min(self.timeout, 2.0)) as conn:
                return bool(conn.execute("SELECT 1").fetchone() == (1,))
        except (psycopg.Error, PoolTimeout):
            return False

    def schema_version(self) -> int | None:
        return self._schema

    # -- epochs ---------------------------------------------------------

    def set_epoch(self, conversation_id: str, epoch: int | None) -> None:
        if epoch is None:
            self._epochs.pop(conversation_id, None)
        else:
            self._epochs[conversation_id] = epoch

    def _epoch_of(self, conversation_id: str) -> int:
        epoch = self._epochs.get(conversation_id, self.epoch)
        return 0 if epoch is None else epoch

    def claim(self, conversation_ids: Sequence[str]) -> None:
        self._call(_CLAIM, "", ({cid: self._epoch_of(cid) for cid in conversation_ids}, True))

    # -- the writer -----------------------------------------------------

    def _closed(self) -> bool:
        return self._pool is None or self._writer_done

    def _call(self, kind: int, cid: str, args: Any) -> Any:
        if self._closed():
            raise StoreError("the store is closed")
        op = _Op(kind, cid, self._epoch_of(cid), args)
        self._pending.append(op)
        self._wake.set()
        assert op.result is not None
        return op.result.get()

    def _submit(self, kind: int, cid: str, args: Any, done: Done) -> None:
        if self._closed():
            # Also once the writer has left, before close() finishes: queued
            # then, a write would never run and its caller never hear back.
            done(StoreError("the store is closed"))
            return
        self._pending.append(_Op(kind, cid, self._epoch_of(cid), args, done))
        self._wake.set()

    def _barrier(self) -> None:
        """Wait until every write queued so far has committed (or failed)."""
        if (self._pending or self._busy) and not self._closed():
            op = _Op(_MARK, "", 0, None)
            self._pending.append(op)
            self._wake.set()
            assert op.result is not None
            op.result.get()

    def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    self._writer_done = True
                    return
                self._wake.wait()
                self._wake.clear()
                continue
            batch, self._pending = self._pending, []
            self._busy = True
            try:
                outcomes = self._run_batch(batch)
            finally:
                self._busy = False
            self.batches += 1
            self.ops += len(batch)
            # A batch can hold 100,000 completions, each setting off work (a
            # reply starts): sockets and timers run between slices of them.
            for op, (ok, value) in yielding(zip(batch, outcomes, strict=True)):
                if op.done is not None:
                    try:
                        op.done(None if ok else value)
                    except Exception:  # one bad callback must not stop the writer
                        log.exception("store completion callback failed")
                elif op.result is not None:
                    if ok:
                        op.result.set(value)
                    else:
                        op.result.set_exception(value)
            del batch, outcomes

    def _run_batch(self, batch: list[_Op]) -> list[tuple[bool, Any]]:
        """Run ``batch`` as one transaction; never raises (failures are outcomes)."""
        assert self._pool is not None
        error: StoreError
        for attempt in range(1, _RACE_ATTEMPTS + 1):
            try:
                with self._pool.connection(timeout=self.timeout) as conn:
                    return self._run_tx(conn, batch)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                error = self._error("store batch failed", exc)
                if attempt < _RACE_ATTEMPTS:
                    continue
            except PoolTimeout as exc:
                error = self._error("store unavailable", exc)
            except psycopg.Error as exc:
                # Not retried: a commit whose answer was lost may have been
                # applied, and running it again could store a message twice.
                # Its callers are told it failed; nothing was acknowledged.
                error = self._error("store batch failed", exc)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear back
                error = self._error("store batch failed", exc)
            break
        log.warning("%s", error)
        return [(True, None) if op.kind == _MARK else (False, error) for op in batch]

    def _run_tx(self, conn: psycopg.Connection[Any], batch: list[_Op]) -> list[tuple[bool, Any]]:
        out: list[tuple[bool, Any]] = [(True, None)] * len(batch)
        owners = self._guard.begin()
        with conn.transaction():
            i, n = 0, len(batch)
            while i < n:
                op = batch[i]
                if op.kind == _APPEND:
                    j = i
                    while j < n and batch[j].kind == _APPEND:
                        j += 1
                    self._appends(conn, batch, i, j, out, owners)
                    i = j
                    continue
                if op.kind != _MARK:
                    out[i] = self._one(conn, op, owners)
                i += 1
        self._guard.committed(owners)
        return out

    def _appends(
        self,
        conn: psycopg.Connection[Any],
        batch: list[_Op],
        start: int,
        stop: int,
        out: list[tuple[bool, Any]],
        owners: Checked,
    ) -> None:
        """Consecutive appends: one ``COPY``, or row by row should it fail."""
        wanted: dict[str, int] = {}
        for k in range(start, stop):
            op = batch[k]
            if wanted.get(op.cid, -1) < op.epoch:
                wanted[op.cid] = op.epoch
        self._guard.check(conn, wanted, owners)
        rows: list[int] = []
        for k in range(start, stop):
            refused = fenced(batch[k].epoch, owners, batch[k].cid)
            if refused is not None:
                out[k] = (False, refused)
            else:
                rows.append(k)
        if not rows:
            return
        try:
            with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_MESSAGES) as copy:
                for k in rows:
                    copy.write_row(batch[k].args)
            return
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError):
            pass  # one bad row spoils the COPY: find it (the savepoint undid the rest)
        for k in rows:
            out[k] = self._one(conn, batch[k], owners)

    def _one(self, conn: psycopg.Connection[Any], op: _Op, owners: Checked) -> tuple[bool, Any]:
        """One operation, its change in a savepoint of its own so that its failure is its alone.

        Epochs are checked (and rows taken over) before the savepoint: undone
        with it, a lock would be gone while ``owners`` still counted on it.
        """
        try:
            if op.kind == _CLAIM:
                # args: ({id: epoch}, strict); not strict (a load) reads what
                # a newer owner holds, and its writes will be refused.
                epochs, strict = op.args
                self._guard.check(conn, epochs, owners)
                for cid, epoch in epochs.items():
                    refused = fenced(epoch, owners, cid)
                    if refused is not None and strict:
                        return (False, refused)
                return (True, None)
            if op.kind != _CREATE:
                self._guard.check(conn, {op.cid: op.epoch}, owners)
                refused = fenced(op.epoch, owners, op.cid)
                if refused is not None:
                    return (False, refused)
            with conn.transaction():
                return (True, self._apply(conn, op, owners))
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            # A value the database cannot hold, or an id stored already;
            # anything else (the connection) fails the whole batch.
            return (False, self._error("store operation failed", exc))

    def _apply(self, conn: psycopg.Connection[Any], op: _Op, owners: Checked) -> Any:
        kind = op.kind
        if kind == _CREATE:
            with conn.cursor() as cur, cur.copy(COPY_CONVERSATIONS) as copy:
                for row in op.args:
                    copy.write_row((*row, op.epoch))
            for row in op.args:
                owners[row[0]] = op.epoch
            return None
        if kind == _APPEND:
            with conn.cursor() as cur, cur.copy(COPY_MESSAGES) as copy:
                copy.write_row(op.args)
            return None
        if kind == _SUPERSEDE:
            conn.execute(
                "UPDATE messages SET superseded = TRUE WHERE id = %s AND conversation_id = %s",
                (op.args, op.cid),
            )
            return None
        if kind == _UPDATE:
            c: Conversation = op.args
            conn.execute(
                "UPDATE conversations SET title = %s, model = %s, system_prompt = %s, "
                "updated_at = %s WHERE id = %s",
                (c.title, c.model, c.system_prompt, c.updated_at, c.id),
            )
            return None
        if kind == _DELETE:
            conn.execute("DELETE FROM messages WHERE conversation_id = %s", (op.cid,))
            cur = conn.execute("DELETE FROM conversations WHERE id = %s", (op.cid,))
            owners.pop(op.cid, None)
            owners.deleted.add(op.cid)
            return cur.rowcount > 0
        raise AssertionError(f"unknown store operation {kind}")

    # -- writes ---------------------------------------------------------

    def create_conversations(self, conversations: Sequence[Conversation]) -> None:
        rows = [
            (c.id, c.owner, c.title, c.model, c.system_prompt, c.created_at, c.updated_at)
            for c in conversations
        ]
        if rows:
            self._call(_CREATE, "", rows)

    def append_message(self, message: Message) -> None:
        self._call(_APPEND, message.conversation_id, message_row(message))

    def append_message_async(self, message: Message, done: Done) -> None:
        self._submit(_APPEND, message.conversation_id, message_row(message), done)

    def supersede_message(self, conversation_id: str, message_id: str) -> None:
        self._call(_SUPERSEDE, conversation_id, message_id)

    def supersede_message_async(
        self, conversation_id: str, message_id: str, done: Done | None = None
    ) -> None:
        self._submit(_SUPERSEDE, conversation_id, message_id, done or _ignore)

    def update_conversation(self, conversation: Conversation) -> None:
        self._call(_UPDATE, conversation.id, conversation)

    def delete_conversation(self, conversation_id: str) -> bool:
        if "\x00" in conversation_id:
            return False
        result: bool = self._call(_DELETE, conversation_id, None)
        return result

    # -- reads ----------------------------------------------------------

    def _read(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        self._barrier()
        if self._pool is None:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection(timeout=self.timeout) as conn:
                return fn(conn)
        except PoolTimeout as exc:
            raise self._error("store unavailable", exc) from None
        except psycopg.Error as exc:
            raise self._error("store read failed", exc) from None

    def load(self, conversation_id: str) -> tuple[Conversation, list[Message]] | None:
        return self.load_many([conversation_id]).get(conversation_id)

    # PostgreSQL's text cannot hold NUL, so no id with one names a row: such
    # an id is answered "none" here, as by SQLite, not with a failed query
    # (which crashed the conversation that tried to load it).

    def load_many(
        self, conversation_ids: Sequence[str]
    ) -> dict[str, tuple[Conversation, list[Message]]]:
        """Take the conversations over (``claim_on_load``), then read them.

        Loading is how a conversation starts in a process: taken over first,
        it reads every message an older owner committed, and that owner's
        writes after are refused, so the turns it numbers next are free.
        """
        ids = sorted(cid for cid in set(conversation_ids) if "\x00" not in cid)
        if self.claim_on_load and ids:
            self._call(_CLAIM, "", ({cid: self._epoch_of(cid) for cid in ids}, False))

        def run(conn: psycopg.Connection[Any]) -> dict[str, tuple[Conversation, list[Message]]]:
            out: dict[str, tuple[Conversation, list[Message]]] = {}
            # Binary: bytea and doubles arrive without parsing text.
            with conn.cursor(binary=True) as cur:
                for i in range(0, len(ids), _CHUNK):
                    chunk = ids[i : i + _CHUNK]
                    cur.execute(
                        f"SELECT {CONV_COLS}, 0 FROM conversations WHERE id = ANY(%s)", (chunk,)
                    )
                    for row in cur.fetchall():
                        out[row[0]] = (conv_from_row(row), [])
                    cur.execute(
                        f"SELECT {MSG_COLS} FROM messages WHERE conversation_id = ANY(%s) "
                        f"AND NOT superseded ORDER BY conversation_id, {ORDER}",
                        (chunk,),
                    )
                    for row in cur.fetchall():
                        state = out.get(row[1])
                        if state is not None:
                            state[1].append(message_from_row(row))
            for conv, messages in out.values():
                conv.message_count = len(messages)
                if messages:
                    conv.updated_at = max(conv.updated_at, max(m.created_at for m in messages))
            return out

        result: dict[str, tuple[Conversation, list[Message]]] = self._read(run)
        return result

    def shared_secret(self, name: str, make: Callable[[], str]) -> str | None:
        """Kept in ``actorchat_secrets``: the first process to ask makes it."""
        candidate = make()

        def run(conn: psycopg.Connection[Any]) -> str:
            conn.execute(
                "INSERT INTO actorchat_secrets (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (name, candidate),
            )
            row = conn.execute(
                "SELECT value FROM actorchat_secrets WHERE name = %s", (name,)
            ).fetchone()
            assert row is not None  # inserted just above, or by another process
            return str(row[0])

        result: str = self._read(run)
        return result

    def get_conversation(self, conversation_id: str) -> Conversation | None:
        if "\x00" in conversation_id:
            return None

        def run(conn: psycopg.Connection[Any]) -> Conversation | None:
            row = conn.execute(f"{CONV_SELECT} WHERE c.id = %s", (conversation_id,)).fetchone()
            return None if row is None else conv_from_row(row)

        result: Conversation | None = self._read(run)
        return result

    def list_conversations(
        self, owner: str | None, limit: int = 50, before: str | None = None
    ) -> list[Conversation]:
        if before is not None and "\x00" in before:
            return []

        sql, args = conversations_page(CONV_SELECT, "%s", "seq", owner, limit, before)

        def run(conn: psycopg.Connection[Any]) -> list[Conversation]:
            return [conv_from_row(r) for r in conn.execute(sql, args).fetchall()]

        result: list[Conversation] = self._read(run)
        return result

    def messages(
        self,
        conversation_id: str,
        limit: int | None = None,
        before: str | None = None,
        versions: bool = False,
    ) -> list[Message]:
        if "\x00" in conversation_id or (before is not None and "\x00" in before):
            return []

        sql, args = messages_page(
            MSG_COLS, "%s", "NOT superseded", conversation_id, limit, before, versions
        )

        def run(conn: psycopg.Connection[Any]) -> list[Message]:
            with conn.cursor(binary=True) as cur:
                rows = cur.execute(sql, args).fetchall()
            rows.reverse()
            return [message_from_row(r) for r in rows]

        result: list[Message] = self._read(run)
        return result

    def count_conversations(self, owner: str | None = None) -> int:
        def run(conn: psycopg.Connection[Any]) -> int:
            if owner is None:
                row = conn.execute("SELECT COUNT(*) FROM conversations").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM conversations WHERE owner = %s", (owner,)
                ).fetchone()
            assert row is not None
            return int(row[0])

        result: int = self._read(run)
        return result
