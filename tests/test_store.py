"""The store contract, run against every store: memory, SQLite on real files, and a
real PostgreSQL started by the tests (``tests/pg_support.py``)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actorchat import ChatSystem, Conversation, Message, Usage
from actorchat.errors import StoreError
from actorchat.stores import MemoryStore, SQLiteStore, Store
from tests.helpers import WAIT


def make_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "s.sqlite3")
    if kind == "postgres":
        from actorchat.stores._postgres import PostgresStore

        return PostgresStore(request.getfixturevalue("pg_url"))
    return MemoryStore()


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    s = make_store(request.param, request, tmp_path)
    s.open()
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgres"])
def durable(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An unopened store that batches its writes (group commit)."""
    return make_store(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_config(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.conftest import make_config

    if request.param == "postgres":
        return make_config(
            tmp_path, store="postgres", database_url=request.getfixturevalue("pg_url")
        )
    return make_config(tmp_path)


def msg(cid: str, mid: str, role: str, turn: int, text: str = "") -> Message:
    usage = Usage(3, 5) if role == "assistant" else None
    return Message(
        mid,
        cid,
        role,
        text or mid,
        "u1",
        1000.0 + turn,
        turn,
        usage,
        "stop" if role == "assistant" else None,
    )


def test_every_value_reads_back_exactly(store: Store) -> None:
    # Reads come back aggregated as JSON (one SQLite step): text of every
    # kind and timestamps to the last bit must survive it.
    created = 1_795_320_835.1507435
    store.create_conversations([Conversation("c\u00e9", 'al"ice', "t\\1", created_at=created)])
    texts = [
        "nul \x00 inside",
        "emoji \U0001f600 and \u2028 line sep",
        '"quoted" \\ back',
        "tab\t newline\n",
    ]
    sent = []
    for i, text in enumerate(texts, start=1):
        m = msg("c\u00e9", f"u{i}", "user", i, text)
        m.created_at = created + i / 1e6
        sent.append(m)
        store.append_message(m)
    reply = msg("c\u00e9", "a1", "assistant", 1, "reply")
    reply.usage = Usage(7, 11, estimated=True)
    store.append_message(reply)
    loaded = store.load("c\u00e9")
    assert loaded is not None
    conv, history = loaded
    assert (conv.owner, conv.title, conv.created_at) == ('al"ice', "t\\1", created)
    assert [m.content for m in history] == [texts[0], "reply", *texts[1:]]
    assert [m.created_at for m in history if m.role == "user"] == [m.created_at for m in sent]
    assert history[1].usage == Usage(7, 11, estimated=True)
    assert store.messages("c\u00e9") == history
    assert store.load_many(["c\u00e9"])["c\u00e9"] == (conv, history)
    assert store.list_conversations('al"ice')[0].id == "c\u00e9"


def test_row_by_row_reads_give_the_same_answers(tmp_path: Path) -> None:
    # Where SQLite's printf cannot round-trip a REAL, the store reads row by row.
    fast = SQLiteStore(tmp_path / "r.sqlite3")
    fast.open()
    fast.create_conversations([Conversation("c", "u", "t")])
    for i in range(1, 6):
        fast.append_message(msg("c", f"u{i}", "user", i))
        fast.append_message(msg("c", f"a{i}", "assistant", i))
    answers = (fast.load("c"), fast.load_many(["c"]), fast.messages("c", limit=4, before="u5"))
    listed = fast.list_conversations("u")
    fast._one_step_reads = False
    assert (fast.load("c"), fast.load_many(["c"]), fast.messages("c", limit=4, before="u5")) == (
        answers
    )
    assert fast.list_conversations("u") == listed
    fast.close()


def test_a_value_the_store_cannot_hold_fails_that_write_alone(durable: Store) -> None:
    s = durable
    s.open()
    s.create_conversations([Conversation("c", "u")])
    bad = msg("c", "huge", "assistant", 1)
    bad.usage = Usage(2**63, 1)  # a provider's absurd token count
    with pytest.raises(StoreError):
        s.append_message(bad)
    # The store goes on: no transaction was left open.
    s.append_message(msg("c", "ok", "user", 2))
    assert [m.id for m in s.messages("c")] == ["ok"]
    s.close()


def test_a_history_too_big_for_one_value_is_read_row_by_row(tmp_path: Path) -> None:
    import sqlite3

    s = SQLiteStore(tmp_path / "big.sqlite3")
    s.open()
    s.create_conversations([Conversation("c", "u")])
    for i in range(1, 41):
        s.append_message(msg("c", f"m{i}", "user", i, "x" * 500))
    before = s.messages("c")
    # Shrink SQLite's longest string below the history's JSON (~21 KB).
    s._call(lambda db: db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000))
    assert s.messages("c") == before and len(before) == 40
    loaded = s.load("c")
    assert loaded is not None and loaded[1] == before
    assert s.load_many(["c"])["c"][1] == before
    s.close()


def test_turn_order_paging_and_versions(store: Store) -> None:
    store.create_conversations([Conversation("c1", "alice", "t")])
    # u2 arrives while a1 is streaming: stored order u1, u2, a1, a2.
    for m in (
        msg("c1", "u1", "user", 1),
        msg("c1", "u2", "user", 2),
        msg("c1", "a1", "assistant", 1),
        msg("c1", "a2", "assistant", 2),
    ):
        store.append_message(m)
    loaded = store.load("c1")
    assert loaded is not None
    conv, history = loaded
    assert [m.id for m in history] == ["u1", "a1", "u2", "a2"]
    assert conv.message_count == 4 and history[1].usage == Usage(3, 5)
    assert [m.id for m in store.messages("c1", limit=2)] == ["u2", "a2"]
    assert [m.id for m in store.messages("c1", limit=2, before="u2")] == ["u1", "a1"]
    store.supersede_message("c1", "a1")
    store.append_message(msg("c1", "a1b", "assistant", 1))
    assert [m.id for m in store.load("c1")[1]] == ["u1", "a1b", "u2", "a2"]  # type: ignore[index]
    versions = store.messages("c1", versions=True)
    assert [m.id for m in versions if m.superseded] == ["a1"]


def test_conversations_list_rename_delete(store: Store) -> None:
    owners = ["alice" if i % 2 else "bob" for i in range(6)]
    store.create_conversations([Conversation(f"c{i}", o) for i, o in enumerate(owners)])
    alice = store.list_conversations("alice")
    assert [c.id for c in alice] == ["c5", "c3", "c1"]
    assert [c.id for c in store.list_conversations("alice", limit=1, before="c5")] == ["c3"]
    assert store.count_conversations() == 6 and store.count_conversations("bob") == 3
    conv = store.get_conversation("c1")
    assert conv is not None
    conv.title = "renamed"
    store.update_conversation(conv)
    assert store.get_conversation("c1").title == "renamed"  # type: ignore[union-attr]
    assert store.delete_conversation("c1") and not store.delete_conversation("c1")
    assert store.load("c1") is None


def test_sqlite_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite3"
    s = SQLiteStore(path)
    s.open()
    s.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SQLiteStore(path)  # reopening runs no migration twice
    again.open()
    again.close()


def test_group_commit_batches_concurrent_writes(durable: Store) -> None:
    import gevent

    s = durable
    s.open()
    s.create_conversations([Conversation("c", "u")])
    jobs = [gevent.spawn(s.append_message, msg("c", f"m{i}", "user", i)) for i in range(1, 501)]
    gevent.joinall(jobs, raise_error=True)
    assert s.count_conversations() == 1
    assert len(s.messages("c")) == 500
    assert s.batches < 100, "500 concurrent appends should share commits"  # type: ignore[attr-defined]
    s.close()


def test_one_bad_row_in_a_batch_fails_alone(durable: Store) -> None:
    from gevent.event import Event

    s = durable
    s.open()
    s.create_conversations([Conversation("c", "u")])
    s.append_message(msg("c", "m0", "user", 0))
    # 3,000 appends queued without yielding share one batch (several
    # multi-row INSERTs); one reuses an id already stored.
    outcomes: dict[int, object] = {}
    done = Event()
    ids = [f"m{i}" for i in range(1, 3001)]
    ids[1234] = "m0"

    def record(i: int):  # type: ignore[no-untyped-def]
        def cb(error: object) -> None:
            outcomes[i] = error
            if len(outcomes) == len(ids):
                done.set()

        return cb

    for i, mid in enumerate(ids):
        s.append_message_async(msg("c", mid, "user", i + 1), record(i))
    assert done.wait(WAIT)
    failed = [i for i, e in outcomes.items() if e is not None]
    assert failed == [1234]
    stored = [m.id for m in s.messages("c")]
    assert len(stored) == 3000 and stored.count("m0") == 1
    assert stored[1:] == [mid for i, mid in enumerate(ids) if i != 1234]
    s.close()


def test_acknowledged_messages_are_durable_across_processes(tmp_path: Path, config) -> None:  # type: ignore[no-untyped-def]
    with ChatSystem(config) as chat:
        cid = chat.start_conversation()
        acked = [chat.post_message(cid, f"durable {i}").id for i in range(20)]
        reply = chat.send_message(cid, "last one", timeout=WAIT)
        # While this process still runs, a second one reads the same file.
        script = textwrap.dedent(f"""
            import json, sqlite3
            db = sqlite3.connect({str(config.data_dir / "actorchat.sqlite3")!r})
            rows = db.execute("SELECT id, role, content FROM messages "
                              "WHERE conversation_id = ? ORDER BY seq", ({cid!r},)).fetchall()
            print(json.dumps(rows))
        """)
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
        )
        rows = json.loads(out.stdout)
        ids = [r[0] for r in rows]
        assert all(mid in ids for mid in acked)
        assert reply in [r[2] for r in rows]


def test_one_store_file_has_one_owner_at_a_time(tmp_path: Path) -> None:
    import os

    first = SQLiteStore(tmp_path / "a.sqlite3")
    first.open()
    first.open()  # opening an open store changes nothing
    second = SQLiteStore(tmp_path / "a.sqlite3")
    with pytest.raises(StoreError, match=r"a\.sqlite3 is already open in this process"):
        second.open()
    # A child forked meanwhile shares the lock's descriptor: closing must
    # still free the file (a fork is how servers daemonise or pre-fork).
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only waits, then leaves
        os.read(r, 1)
        os._exit(0)
    try:
        first.close()
        second.open()  # free again once the owner closed it
        second.close()
    finally:
        os.write(w, b"x")
        os.waitpid(pid, 0)
    # In-memory databases have no file to share.
    a, b = SQLiteStore(":memory:"), SQLiteStore(":memory:")
    a.open()
    b.open()
    a.close()
    b.close()


def test_history_survives_a_restart_of_the_whole_system(durable_config) -> None:  # type: ignore[no-untyped-def]
    config = durable_config
    with ChatSystem(config) as chat:
        cid = chat.start_conversation(title="keep me")
        chat.send_message(cid, "persist", timeout=WAIT)
        before = chat.get_history(cid)
    with ChatSystem(config) as chat:
        assert chat.get_history(cid) == before
        assert chat.list_conversations("local")[0].title == "keep me"


def test_export_formats(system: ChatSystem) -> None:
    import csv
    import io

    from actorchat.errors import InvalidRequest

    cid = system.start_conversation(title="Export me")
    reply = system.send_message(cid, "hello, export", timeout=WAIT)
    data = json.loads(system.export(cid, "json"))
    assert data["conversation"]["title"] == "Export me"
    assert [m["content"] for m in data["messages"]] == ["hello, export", reply]
    md = system.export(cid, "md")
    assert md.startswith("# Export me") and reply in md
    rows = list(csv.reader(io.StringIO(system.export(cid, "csv"))))
    assert rows[0][:3] == ["id", "turn", "role"] and rows[2][5] == reply
    with pytest.raises(InvalidRequest):
        system.export(cid, "pdf")


def test_load_many_matches_load(store: Store) -> None:
    store.create_conversations([Conversation(f"c{i}", "u") for i in range(3)])
    store.append_message(msg("c1", "u1", "user", 1))
    store.append_message(msg("c1", "a1", "assistant", 1))
    many = store.load_many(["c0", "c1", "nope"])
    assert set(many) == {"c0", "c1"}
    for cid in ("c0", "c1"):
        assert many[cid] == store.load(cid)
    assert many["c1"][0].message_count == 2


def test_a_write_submitted_while_the_store_closes_is_answered_not_dropped(durable: Store) -> None:
    # Completions set off more writes (a reply starting); some arrive after
    # the writer's last look at its queue. Each must hear back.
    import time

    import gevent
    from gevent.event import Event as GEvent

    store = durable
    store.open()
    conv = Conversation("c1", "owner")
    store.create_conversations([conv])
    late: list[StoreError | None] = []
    all_answered = GEvent()

    def message(turn: int) -> Message:
        return Message(f"m{turn}", "c1", "user", "x", "s", time.time(), turn)

    def late_done(error: StoreError | None) -> None:
        late.append(error)
        if len(late) == 10:
            all_answered.set()

    def first_done(_error: StoreError | None) -> None:
        gevent.spawn_raw(store.append_message_async, message(1000 + len(late)), late_done)

    for turn in range(1, 11):
        store.append_message_async(message(turn), first_done)
    gevent.spawn(store.close).join(WAIT)
    assert all_answered.wait(WAIT)
    assert all(e is None or isinstance(e, StoreError) for e in late)
