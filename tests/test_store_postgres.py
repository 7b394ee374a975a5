"""What only a store shared by many processes has to get right, on a real PostgreSQL.

The store contract itself runs in ``test_store.py`` against every store;
these are about processes: migrating once, writing side by side, fencing a
stale owner, surviving ``kill -9`` of the server and a restart of the database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests

from actorchat import Conversation, Message
from actorchat.errors import Fenced, StoreError
from tests.helpers import WAIT
from tests.pg_support import Cluster, wait_until
from tests.server_support import Client, free_port, running_server

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("ACTORCHAT_", "PG"))}


def store(url: str, **kwargs: Any) -> Any:
    from actorchat.stores import PostgresStore

    s = PostgresStore(url, **kwargs)
    s.open()
    return s


def msg(cid: str, mid: str, turn: int, role: str = "user") -> Message:
    return Message(mid, cid, role, f"text of {mid}", "u", time.time(), turn)


def python(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        **kwargs,
    )


def test_waiting_on_the_database_never_blocks_the_hub(pg_url: str) -> None:
    s = store(pg_url)
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            gevent.sleep(0.01)

    t = gevent.spawn(ticker)
    started = time.monotonic()
    # A slow query on a read connection and another holding the writer.
    s._read(lambda conn: conn.execute("SELECT pg_sleep(1)"))
    elapsed = time.monotonic() - started
    t.kill()
    s.close()
    assert elapsed >= 1.0
    # 100 ticks a second while the hub is free; a blocked hub would give ~1.
    assert ticks >= 30, f"the hub ran other greenlets only {ticks} times in {elapsed:.1f} s"


def test_many_processes_migrate_once_and_get_distinct_epochs(pg_cluster: Cluster) -> None:
    schema = pg_cluster.new_schema()
    url = pg_cluster.url(schema)
    code = """
        import sys
        from actorchat._gevent import patch; patch()
        from actorchat.stores import PostgresStore
        s = PostgresStore(sys.argv[1]); s.open()
        print(s.epoch, s.schema_version()); s.close()
    """
    procs = [python(code, url) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    epochs = [int(o[0].split()[0]) for o in outs]
    assert len(set(epochs)) == 6
    assert {o[0].split()[1] for o in outs} == {"3"}
    assert pg_cluster.sql("SELECT version FROM actorchat_schema", schema) == [(3,)]


def test_many_processes_write_side_by_side(pg_cluster: Cluster) -> None:
    schema = pg_cluster.new_schema()
    url = pg_cluster.url(schema)
    code = """
        import sys, time
        from actorchat._gevent import patch; patch()
        import gevent
        from actorchat import Conversation, Message
        from actorchat.stores import PostgresStore
        s = PostgresStore(sys.argv[1]); s.open()
        me = sys.argv[2]
        s.create_conversations([Conversation(f"{me}-{i}", me) for i in range(20)])
        def one(i):
            for turn in range(1, 26):
                cid = f"{me}-{i}"
                s.append_message(Message(f"{cid}-{turn}", cid, "user", "x", me, time.time(), turn))
        gevent.joinall([gevent.spawn(one, i) for i in range(20)], raise_error=True)
        print(s.batches); s.close()
    """
    procs = [python(code, url, f"p{n}") for n in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    counts = pg_cluster.sql(
        "SELECT c.owner, COUNT(m.*) FROM conversations c JOIN messages m "
        "ON m.conversation_id = c.id GROUP BY c.owner ORDER BY c.owner",
        schema,
    )
    assert counts == [(f"p{n}", 500) for n in range(4)]
    # Each process shared its commits among its concurrent appends.
    assert all(int(o[0]) < 500 for o in outs)


def test_a_stale_owner_is_fenced_and_nothing_interleaves(pg_url: str) -> None:
    old, new = store(pg_url), store(pg_url)
    assert new.epoch > old.epoch  # opened later: a newer epoch from the sequence
    old.create_conversations([Conversation("c", "u")])
    old.append_message(msg("c", "old-1", 1))
    new.claim(["c"])  # the new owner takes over before reading the history
    with pytest.raises(Fenced, match="owned by a newer process"):
        old.append_message(msg("c", "old-2", 2))
    for write in (
        lambda: old.supersede_message("c", "old-1"),
        lambda: old.update_conversation(Conversation("c", "u", "stale title")),
        lambda: old.delete_conversation("c"),
        lambda: old.claim(["c"]),
    ):
        with pytest.raises(Fenced):
            write()
    new.append_message(msg("c", "new-2", 2))
    assert [m.id for m in new.messages("c")] == ["old-1", "new-2"]
    assert isinstance(Fenced("x"), StoreError)
    # A cluster layer can give one conversation an epoch of its own.
    old.set_epoch("c", new.epoch + 100)
    old.append_message(msg("c", "moved-back", 3))
    with pytest.raises(Fenced):
        new.append_message(msg("c", "new-3", 3))
    old.close()
    new.close()


def test_loading_a_conversation_takes_it_over(pg_url: str) -> None:
    old, new = store(pg_url), store(pg_url)
    old.create_conversations([Conversation("c", "u")])
    old.append_message(msg("c", "u1", 1))
    loaded = new.load("c")  # a restart in the newer process
    assert loaded is not None and [m.id for m in loaded[1]] == ["u1"]
    with pytest.raises(Fenced):
        old.append_message(msg("c", "u2", 2))
    # The older one may still look (a load that cannot take over reads, and
    # its writes are refused), and a reader that only looks claims nothing.
    assert old.load("c") is not None and old.load_many(["c"])
    reader = store(pg_url, claim_on_load=False)
    assert reader.load("c") is not None
    new.append_message(msg("c", "u2", 2))
    with pytest.raises(Fenced):
        old.append_message(msg("c", "u3", 3))
    for s in (old, new, reader):
        s.close()


def test_two_processes_racing_for_one_conversation(pg_cluster: Cluster) -> None:
    schema = pg_cluster.new_schema()
    url = pg_cluster.url(schema)
    # Each process appends as fast as it can, printing every acknowledged
    # id, until it is fenced (or has written 400).
    code = """
        import sys, time
        from actorchat._gevent import patch; patch()
        import gevent
        from actorchat import Conversation, Message
        from actorchat.errors import Fenced
        from actorchat.stores import PostgresStore
        s = PostgresStore(sys.argv[1]); s.open()
        me = sys.argv[2]
        if me == "a":
            s.create_conversations([Conversation("c", "u")])
        print("open", s.epoch, flush=True)
        sys.stdin.readline()  # go
        def writer(k):
            for turn in range(100):
                mid = f"{me}-{k}-{turn}"
                try:
                    s.append_message(Message(mid, "c", "user", "x", me, time.time(), turn))
                except Fenced:
                    print("fenced", flush=True)
                    return
                print("ack", mid, flush=True)
        gevent.joinall([gevent.spawn(writer, k) for k in range(4)])
        s.close()
    """
    a = python(code, url, "a", stdin=subprocess.PIPE)
    assert a.stdout is not None and a.stdin is not None
    assert a.stdout.readline().startswith("open")
    b = python(code, url, "b", stdin=subprocess.PIPE)
    assert b.stdout is not None and b.stdin is not None
    assert b.stdout.readline().startswith("open")
    a.stdin.write("\n")
    a.stdin.flush()
    time.sleep(0.05)  # let a get going: the race is b's takeover in the middle of it
    b.stdin.write("\n")
    b.stdin.flush()
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    acked_a = {line.split()[1] for line in out_a.splitlines() if line.startswith("ack")}
    acked_b = {line.split()[1] for line in out_b.splitlines() if line.startswith("ack")}
    assert acked_a, "the older process never wrote: no race"
    assert "fenced" in out_a, "the older process kept writing after the newer one took over"
    assert "fenced" not in out_b and len(acked_b) == 400
    rows = pg_cluster.sql(
        "SELECT id FROM messages WHERE conversation_id = 'c' ORDER BY seq", schema
    )
    stored = [r[0] for r in rows]
    assert set(stored) == acked_a | acked_b  # every acknowledged write, and nothing else
    first_b = min(i for i, mid in enumerate(stored) if mid.startswith("b-"))
    assert all(mid.startswith("b-") for mid in stored[first_b:]), "a stale write interleaved"


def _serve(url: str, port: int, data: Path) -> subprocess.Popen[str]:
    env = dict(
        ENV,
        ACTORCHAT_STORE="postgres",
        ACTORCHAT_DATABASE_URL=url,
        ACTORCHAT_DATA_DIR=str(data),
        ACTORCHAT_PORT=str(port),
        ACTORCHAT_MOCK_DELAY_MS="1",
        ACTORCHAT_MOCK_TOKENS="5",
        ACTORCHAT_RATE_LIMIT_MESSAGES="100000",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorchat", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    assert wait_until(up, WAIT), "the server did not start"
    return proc


class _Remote:
    """Just enough of a Server for ``tests.server_support.Client``."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/api/v1/chat/ws"


def test_kill_9_mid_load_loses_nothing_acknowledged(pg_cluster: Cluster, tmp_path: Path) -> None:
    schema = pg_cluster.new_schema()
    url = pg_cluster.url(schema)
    port = free_port()
    proc = _serve(url, port, tmp_path / "data")
    remote = _Remote(port)
    acked: set[str] = set()
    clients = [Client(remote, f"user{i}") for i in range(4)]  # type: ignore[arg-type]
    cids = [c.create() for c in clients]

    def load(c: Client, cid: str) -> None:
        try:
            for n in range(10_000):
                # Pipelined: acknowledgements arrive (to the reader) while more are sent.
                c.send("send_message", {"conversation_id": cid, "content": f"load {n}"})
                gevent.sleep(0.001)
        except Exception:  # the server died under us: expected
            return

    def reader(c: Client) -> None:
        try:
            while True:
                f = c.recv()
                if f["type"] == "message_received":
                    acked.add(f["data"]["message"]["id"])
        except Exception:
            return

    readers = [gevent.spawn(reader, c) for c in clients]
    writers = [gevent.spawn(load, c, cid) for c, cid in zip(clients, cids, strict=True)]
    assert wait_until(lambda: len(acked) >= 300, WAIT), "no load reached the server"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=WAIT)
    gevent.joinall(readers + writers, timeout=WAIT)
    for c in clients:
        c.close()
    # Restarted on the same database: everything acknowledged is there.
    proc = _serve(url, port, tmp_path / "data")
    try:
        stored = {r[0] for r in pg_cluster.sql("SELECT id FROM messages", schema)}
        assert acked <= stored, f"{len(acked - stored)} acknowledged messages lost"
        c = Client(remote, "user0")  # type: ignore[arg-type]
        rid = c.send("join_conversation", {"conversation_id": cids[0]})
        joined = c.expect("conversation_joined", lambda f: f.get("reply_to") == rid)
        assert joined["data"]["messages"]
        c.close()
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT)


def test_a_database_restart_under_load(pg_cluster: Cluster, tmp_path: Path) -> None:
    schema = pg_cluster.new_schema()
    settings = {
        "store": "postgres",
        "database_url": pg_cluster.url(schema),
        "mock_tokens": 3,
        "rate_limit_messages": 100_000,
    }
    acked: set[str] = set()
    errors: list[dict[str, Any]] = []
    stop = False
    with running_server(tmp_path, **settings) as srv:
        clients = [Client(srv, f"user{i}") for i in range(3)]
        cids = [c.create() for c in clients]

        def load(c: Client, cid: str) -> None:
            n = 0
            while not stop:
                n += 1
                rid = c.send("send_message", {"conversation_id": cid, "content": f"m{n}"})
                # The acknowledgement, or an error: never a hang (recv has a deadline).
                while True:
                    frame = c.recv()
                    if frame.get("reply_to") == rid and frame["type"] == "error":
                        errors.append(frame["data"])
                        gevent.sleep(0.05)
                        break
                    data = frame.get("data", {})
                    if frame["type"] == "message_received" and data["message"]["content"] == (
                        f"m{n}"
                    ):
                        acked.add(data["message"]["id"])
                        break

        jobs = [gevent.spawn(load, c, cid) for c, cid in zip(clients, cids, strict=True)]
        assert wait_until(lambda: len(acked) >= 50, WAIT)
        before = len(acked)
        pg_cluster.restart("fast")
        after_restart = len(acked)
        # The pool reconnects by itself: service resumes.
        assert wait_until(lambda: len(acked) >= after_restart + 50, WAIT), errors[-3:]
        stop = True
        gevent.joinall(jobs, timeout=WAIT, raise_error=True)
        assert before > 0
        for e in errors:
            assert "Traceback" not in e["message"] and e["code"] != ""
    stored = {r[0] for r in pg_cluster.sql("SELECT id FROM messages", schema)}
    assert acked <= stored, f"{len(acked - stored)} acknowledged messages lost"


def test_errors_never_show_the_password(pg_cluster: Cluster, tmp_path: Path) -> None:
    from actorchat.stores import PostgresStore

    secret = pg_cluster.password
    wrong = f"postgresql://{pg_cluster.user}:not-{secret}@127.0.0.1:{pg_cluster.port}/postgres"
    with pytest.raises(StoreError) as caught:
        PostgresStore(wrong).open()
    assert f"not-{secret}" not in str(caught.value) and "***" in repr(PostgresStore(wrong))
    assert "authentication failed" in str(caught.value)
    # The password from a file: right, then no server there.
    pwfile = tmp_path / "pw"
    pwfile.write_text(secret + "\n")
    from actorchat import load_config
    from actorchat.stores import create_store

    cfg = load_config(
        env={},
        store="postgres",
        database_url=pg_cluster.url(password=False),
        database_password_file=str(pwfile),
        data_dir=tmp_path,
    )
    s = create_store(cfg)
    s.open()
    assert s.check() and s.schema_version() == 3
    s.close()
    dead = f"postgresql://{pg_cluster.user}:{secret}@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(StoreError) as caught:
        PostgresStore(dead, timeout=2).open()
    assert secret not in str(caught.value)


def test_the_server_reports_the_schema_version(pg_cluster: Cluster, tmp_path: Path) -> None:
    url = pg_cluster.url(pg_cluster.new_schema())
    with running_server(tmp_path, store="postgres", database_url=url) as srv:
        body = requests.get(f"{srv.url}/readyz", timeout=WAIT).json()
        assert body["checks"] == {"store": True, "schema": 3}
        assert json.dumps(body).count(pg_cluster.password) == 0


def _migrate(source: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorchat", "migrate", "--from", f"sqlite:{source}", "--to", url],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )


def test_migrate_from_sqlite_copies_everything_once(pg_cluster: Cluster, tmp_path: Path) -> None:
    from actorchat import ChatSystem
    from actorchat.stores import SQLiteStore
    from tests.conftest import make_config

    with ChatSystem(make_config(tmp_path)) as chat:
        cids = [chat.start_conversation(title=f"t{i}") for i in range(5)]
        for cid in cids:
            chat.send_message(cid, "hello \x00 there", timeout=WAIT)
        chat.regenerate(cids[0], wait=True)  # an earlier version to copy too
    data = tmp_path / "data"
    schema = pg_cluster.new_schema()
    url = pg_cluster.url(schema)
    out = _migrate(data, url)
    assert out.returncode == 0, out.stderr
    assert "verified: 5 conversations and 11 messages" in out.stdout
    assert "messages: 11 / 11 (100%)" in out.stderr
    # Interrupted half way (some rows missing), then run again: finished, no duplicates.
    pg_cluster.sql("DELETE FROM messages WHERE seq > 4", schema)
    again = _migrate(data, url)
    assert again.returncode == 0 and "verified: 5 conversations and 11 messages" in again.stdout
    assert pg_cluster.sql("SELECT COUNT(*) FROM messages", schema) == [(11,)]
    src = SQLiteStore(data / "actorchat.sqlite3")
    src.open()
    dst = store(url)
    try:
        assert dst.list_conversations(None, 100) == src.list_conversations(None, 100)
        for cid in cids:
            assert dst.messages(cid, versions=True) == src.messages(cid, versions=True)
            assert dst.load(cid) == src.load(cid)
    finally:
        src.close()
        dst.close()


def test_migrate_errors_are_one_line_without_the_password(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    from actorchat.stores import SQLiteStore

    s = SQLiteStore(tmp_path / "actorchat.sqlite3")
    s.open()
    s.close()
    dead = f"postgresql://u:hunter2secret@127.0.0.1:{free_port()}/db"
    out = _migrate(tmp_path, dead)
    assert out.returncode == 1
    assert out.stderr.startswith("actorchat: cannot open PostgreSQL store")
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "hunter2secret" not in out.stderr and "Traceback" not in out.stderr
    missing = _migrate(tmp_path / "nowhere", pg_cluster.url())
    assert missing.returncode == 1 and "no SQLite store at" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_write_in_flight_when_its_connection_dies_fails_and_the_next_goes_through(
    pg_cluster: Cluster,
) -> None:
    import psycopg
    from gevent.event import AsyncResult

    schema = pg_cluster.new_schema()
    s = store(pg_cluster.url(schema))
    s.create_conversations([Conversation("c", "u")])
    outcome: AsyncResult[object] = AsyncResult()
    # Hold the writer inside its transaction: the table is locked elsewhere.
    with psycopg.connect(pg_cluster.url(schema)) as blocker:
        blocker.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        s.append_message_async(msg("c", "doomed", 1), outcome.set)

        def writer_pid() -> list[tuple[Any, ...]]:
            return pg_cluster.sql(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'COPY messages%%'"
            )

        assert wait_until(lambda: bool(writer_pid()), WAIT)
        pg_cluster.sql("SELECT pg_terminate_backend(%s)", None, writer_pid()[0][0])
        error = outcome.get(timeout=WAIT)
        blocker.rollback()
    assert isinstance(error, StoreError) and "Traceback" not in str(error)
    assert pg_cluster.password not in str(error)
    # Not acknowledged, not stored; the pool replaced the connection.
    s.append_message(msg("c", "next", 2))
    assert [m.id for m in s.messages("c")] == ["next"]
    s.close()


def test_a_client_of_the_older_server_is_told_the_conversation_moved(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    url = pg_cluster.url(pg_cluster.new_schema())
    with (
        running_server(tmp_path / "a", store="postgres", database_url=url) as older,
        running_server(tmp_path / "b", store="postgres", database_url=url) as newer,
    ):
        a = Client(older)
        cid = a.create()
        a.send("send_message", {"conversation_id": cid, "content": "on the older one"})
        a.expect("stream_complete")
        b = Client(newer)
        b.send("send_message", {"conversation_id": cid, "content": "on the newer one"})
        b.expect("stream_complete")
        rid = a.send("send_message", {"conversation_id": cid, "content": "too late"})
        err = a.expect("error", lambda f: f.get("reply_to") == rid)["data"]
        assert err["code"] == "CONVERSATION_MOVED", err
        assert "Traceback" not in err["message"]
        rid = b.send("join_conversation", {"conversation_id": cid})
        joined = b.expect("conversation_joined", lambda f: f.get("reply_to") == rid)
        contents = [m["content"] for m in joined["data"]["messages"] if m["message_type"] == "user"]
        assert contents == ["on the older one", "on the newer one"]


def test_migrate_replaces_a_nul_that_postgresql_cannot_hold(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    from actorchat.stores import PostgresStore, SQLiteStore

    # Older stores may hold a NUL in a title (refused since, in every store).
    store = SQLiteStore(tmp_path / "data" / "actorchat.sqlite3")
    store.open()
    store.create_conversations([Conversation("c1", "alice", "a\x00b"), Conversation("c2", "bob")])
    store.close()
    url = pg_cluster.url(pg_cluster.new_schema())
    out = _migrate(tmp_path / "data", url)
    assert out.returncode == 0, out.stderr
    assert "verified: 2 conversations" in out.stdout
    assert "note: replaced 1 NUL character(s)" in out.stderr
    target = PostgresStore(url)
    target.open()
    try:
        conv = target.get_conversation("c1")
        assert conv is not None and conv.title == "a\ufffdb"
    finally:
        target.close()


def test_a_dev_token_is_accepted_by_every_process_sharing_the_database(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    # Each process has its own data dir; the key is kept in the store they share.
    url = pg_cluster.url(pg_cluster.new_schema())
    with (
        running_server(tmp_path / "a", store="postgres", database_url=url) as one,
        running_server(tmp_path / "b", store="postgres", database_url=url) as two,
    ):
        token = requests.post(
            f"{one.url}/api/v1/auth/token", json={"user_id": "alice"}, timeout=WAIT
        ).json()["token"]
        r = requests.get(
            f"{two.url}/api/v1/conversations",
            headers={"Authorization": f"Bearer {token}"},
            timeout=WAIT,
        )
        assert r.status_code == 200, r.text
    assert not (tmp_path / "a" / "data" / "dev-auth.key").exists()
