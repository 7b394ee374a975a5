"""The cluster's first layer on a real redis-server: membership, the directory, epochs.

The lease of a node a test stops is short here (0.5 s) so that its death is
seen quickly; every
wait is on a condition with a deadline, never a sleep. The redis-server is
the run's own (``tests/redis_support.py``); each test uses a key namespace
of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from actorchat import Conversation, Message, load_config
from actorchat.cluster import Directory, Membership, Placement, connect
from actorchat.errors import ClusterError, ConfigurationError, Fenced, error_code
from tests.pg_support import wait_until
from tests.redis_support import RedisServer

#: The lease of a node a test lets die: its death is seen within a second.
TTL = 0.5
#: The lease of every other node: long beside any stall of a loaded machine,
#: so that only the node a test stops is ever taken for dead.
LONG = 3.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def node(redis_server: RedisServer, redis_namespace: str) -> Iterator[Any]:
    """Join nodes by id; every one still joined is made to leave afterwards."""
    made: list[Membership] = []

    def factory(node_id: str, ttl: float = LONG, **kwargs: Any) -> Directory:
        client = connect(redis_server.url, timeout=2.0)
        m = Membership(client, node_id, lease_ttl=ttl, namespace=redis_namespace, **kwargs)
        made.append(m.join())
        return Directory(m)

    yield factory
    for m in made:
        if m.joined:
            try:
                m.leave()
            except ClusterError:
                pass
        m.client.close()


def stop_heartbeat(d: Directory) -> None:
    """What a crashed or frozen process does: stop renewing, without leaving."""
    hb = d.membership._heartbeat
    assert hb is not None
    hb.kill()


# -- configuration and errors ---------------------------------------------------------------------


def test_cluster_settings_are_typed_validated_and_keep_the_password_out() -> None:
    c = load_config(env={"ACTORCHAT_REDIS_URL": "redis://:pw@r:6379/0", "ACTORCHAT_LEASE_TTL": "2"})
    assert c.redis_url == "redis://:pw@r:6379/0" and c.lease_ttl == 2.0
    assert "pw" not in repr(c)
    assert c.node_id and c.node_id != load_config(env={}).node_id  # generated, one per process
    assert load_config(env={}, node_id="web-1").node_id == "web-1"
    with pytest.raises(ConfigurationError, match="redis_url") as err:
        load_config(env={}, redis_url="http://:secret@r")
    assert "secret" not in str(err.value)
    with pytest.raises(ConfigurationError, match="node_id"):
        load_config(env={}, node_id="a{b}")
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        load_config(env={}, lease_ttl=0)


def test_an_unreachable_redis_is_one_cluster_error_line_without_the_password() -> None:
    from tests.pg_support import _free_port

    client = connect(f"redis://:hunter2@127.0.0.1:{_free_port()}/0", timeout=1.0)
    m = Membership(client, "n1", lease_ttl=TTL)
    started = time.monotonic()
    with pytest.raises(ClusterError) as err:
        m.join()
    assert time.monotonic() - started < 10  # refused at once, retried once
    text = str(err.value)
    assert "\n" not in text and "hunter2" not in text and "renewing the lease of node n1" in text
    assert error_code(err.value) == "CLUSTER_UNAVAILABLE" and err.value.http_status == 503
    assert not m.joined


def test_membership_from_the_configuration(redis_server: RedisServer) -> None:
    config = load_config(env={"ACTORCHAT_REDIS_URL": redis_server.url}, node_id="cfg", lease_ttl=1)
    m = Membership.from_config(config, namespace="t-config")
    assert (m.node_id, m.lease_ttl) == ("cfg", 1.0)
    try:
        assert m.join().live_nodes() == ["cfg"]
    finally:
        m.leave()
        m.client.close()
    with pytest.raises(ConfigurationError, match="redis_url"):
        Membership.from_config(load_config(env={}))


# -- membership -----------------------------------------------------------------------------------


def test_nodes_join_renew_their_lease_and_leave(node: Any) -> None:
    a, b = node("a", ttl=1.0), node("b")
    assert a.membership.live_nodes() == ["a", "b"]
    # Renewed every third of the lease: alive well past several leases.
    start = a.membership.renewals
    assert wait_until(lambda: a.membership.renewals >= start + 6, timeout=30)
    assert b.membership.is_live("a") and b.membership.live_nodes() == ["a", "b"]
    assert a.membership.lapses == 0
    a.membership.leave()  # gone at once, without waiting for the lease
    assert b.membership.live_nodes() == ["b"] and not b.membership.is_live("a")
    assert not a.membership.joined


def test_a_node_that_stops_renewing_is_dead_after_its_lease(node: Any) -> None:
    lapsed: list[str] = []
    a = node("a", ttl=TTL, on_lapse=lambda: lapsed.append("a"))
    b = node("b")
    stop_heartbeat(a)
    stopped = time.monotonic()
    assert b.membership.is_live("a")  # the lease still runs
    assert wait_until(lambda: not b.membership.is_live("a"), timeout=30)
    assert time.monotonic() - stopped > TTL / 3  # not before its lease could end
    assert b.membership.live_nodes() == ["b"]
    # Back again, it learns it was dead meanwhile (the layer above drops its conversations).
    a.membership.join()
    assert wait_until(lambda: lapsed == ["a"], timeout=30)
    assert b.membership.live_nodes() == ["a", "b"]


# -- directory ------------------------------------------------------------------------------------


def test_the_first_activation_claims_epoch_one_and_the_others_see_the_owner(node: Any) -> None:
    a, b = node("a"), node("b")
    assert a.owner("c1") is None
    first = a.activate("c1")
    assert first == Placement("c1", "a", 1, claimed=True)
    assert b.activate("c1") == Placement("c1", "a", 1)  # a is live: it stays a's
    assert a.activate("c1") == Placement("c1", "a", 1)  # idempotent for the owner
    assert b.owner("c1") == Placement("c1", "a", 1)
    # prefer_node places a free conversation on that node, if it is live.
    assert b.activate("c2", prefer_node="a") == Placement("c2", "a", 1, claimed=True)
    assert b.activate("c3", prefer_node="gone") == Placement("c3", "b", 1, claimed=True)
    assert a.activate("c4", min_epoch=40).epoch == 40


def test_many_greenlets_racing_to_activate_make_exactly_one_owner(node: Any) -> None:
    dirs = [node(f"n{i}") for i in range(20)]
    for round_ in range(5):
        cid = f"race-{round_}"
        jobs = [gevent.spawn(d.activate, cid) for d in dirs for _ in range(3)]
        gevent.joinall(jobs, raise_error=True, timeout=60)
        got = [j.value for j in jobs]
        assert sum(p.claimed for p in got) == 1
        winner = next(p for p in got if p.claimed)
        assert winner.epoch == 1
        assert {(p.node, p.epoch) for p in got} == {(winner.node, 1)}


def test_three_processes_racing_to_activate_make_exactly_one_owner(
    redis_server: RedisServer, redis_namespace: str, node: Any
) -> None:
    code = """
        import json, sys
        from actorchat._gevent import patch
        patch()
        from actorchat.cluster import Directory, Membership, connect
        url, ns, me = sys.argv[1:4]
        m = Membership(connect(url), me, lease_ttl=5.0, namespace=ns).join()
        d = Directory(m)
        m.client.redis.blpop([ns + ":go:" + me], timeout=60)
        p = [d.activate(f"race-{i}") for i in range(20)]
        print(json.dumps([(x.node, x.epoch, x.claimed) for x in p]), flush=True)
        sys.stdin.readline()  # stay alive (and live) until every process answered
        m.leave()
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}
    env["PYTHONPATH"] = ROOT
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), redis_server.url, redis_namespace, me],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for me in ("p0", "p1", "p2")
    ]
    try:
        watcher = node("watcher")
        assert wait_until(lambda: len(watcher.membership.live_nodes()) == 4, timeout=60)
        for me in ("p0", "p1", "p2"):  # released together
            watcher.client.redis.rpush(f"{redis_namespace}:go:{me}", "go")
        answers = []
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line, p.stderr.read() if p.stderr else ""
            answers.append(json.loads(line))
    finally:
        for p in procs:
            try:
                p.communicate("\n", timeout=60)
            except Exception:
                p.kill()
    assert all(p.returncode == 0 for p in procs)
    for i in range(20):
        seen = [tuple(a[i]) for a in answers]
        assert sum(claimed for _, _, claimed in seen) == 1, seen
        assert len({(n, e) for n, e, _ in seen}) == 1 and seen[0][1] == 1, seen


def test_a_lapsed_owner_is_taken_over_with_a_higher_epoch(node: Any) -> None:
    a, b = node("a", ttl=TTL), node("b")
    assert a.activate("c").epoch == 1
    stop_heartbeat(a)
    assert b.activate("c") == Placement("c", "a", 1)  # its lease still runs
    assert wait_until(lambda: b.owner("c") is None, timeout=30)
    taken = b.activate("c")
    assert taken == Placement("c", "b", 2, claimed=True)
    assert a.owner("c") == Placement("c", "b", 2)


def test_release_is_refused_with_a_stale_epoch_or_by_a_former_owner(node: Any) -> None:
    a, b = node("a", ttl=TTL), node("b")
    assert a.activate("c").epoch == 1
    assert not a.release("c", 0) and not b.release("c", 1)  # a wrong epoch, not the owner
    stop_heartbeat(a)
    assert wait_until(lambda: b.owner("c") is None, timeout=30)
    assert b.activate("c").epoch == 2
    assert not a.release("c", 1)  # a's epoch is stale: b keeps it
    assert a.owner("c") == Placement("c", "b", 2)
    assert b.release("c", 2)
    assert b.owner("c") is None and not b.release("c", 2)
    # The epoch stays after a release: the next owner's is higher still.
    assert b.activate("c") == Placement("c", "b", 3, claimed=True)


def test_a_redis_restart_is_a_cluster_error_then_ridden_out(
    node: Any, redis_server: RedisServer
) -> None:
    lapsed: list[bool] = []
    a = node("a", ttl=TTL, on_lapse=lambda: lapsed.append(True))
    assert a.activate("c").claimed
    redis_server.stop()
    try:
        for call in (lambda: a.activate("c"), a.membership.live_nodes, lambda: a.release("c", 1)):
            with pytest.raises(ClusterError) as err:
                call()
            text = str(err.value)
            assert "\n" not in text and redis_server.password not in text
            assert "Redis at redis://:***@127.0.0.1" in text
    finally:
        redis_server.start()
    # The same clients reconnect; the heartbeat takes the lease again (the
    # data went with the restart: no persistence in tests) and says so.
    assert wait_until(lambda: lapsed == [True], timeout=30)
    assert a.membership.live_nodes() == ["a"]
    assert a.activate("c") == Placement("c", "a", 1, claimed=True)


# -- the epoch is the PostgreSQL store's fencing token --------------------------------------------


def test_directory_epochs_fence_the_postgres_store(node: Any, pg_url: str) -> None:
    from actorchat.stores import PostgresStore

    def message(mid: str, turn: int) -> Message:
        return Message(mid, "c", "user", f"text of {mid}", "u", time.time(), turn)

    a, b = node("a", ttl=TTL), node("b")
    store_a, store_b = PostgresStore(pg_url, epoch=0), PostgresStore(pg_url, epoch=0)
    store_a.open()
    store_b.open()
    try:
        mine = a.activate("c")
        store_a.set_epoch("c", mine.epoch)
        store_a.create_conversations([Conversation("c", "u")])
        store_a.append_message(message("a-1", 1))
        stop_heartbeat(a)  # a freezes; b takes the conversation over
        assert wait_until(lambda: b.owner("c") is None, timeout=30)
        theirs = b.activate("c")
        assert theirs.epoch == 2
        store_b.set_epoch("c", theirs.epoch)
        loaded = store_b.load("c")  # loading takes the row over
        assert loaded is not None and [m.id for m in loaded[1]] == ["a-1"]
        store_b.append_message(message("b-2", 2))
        with pytest.raises(Fenced):  # a wakes up and writes: refused
            store_a.append_message(message("a-2", 2))
        assert [m.id for m in store_b.messages("c")] == ["a-1", "b-2"]
    finally:
        store_a.close()
        store_b.close()


# -- the public surface ---------------------------------------------------------------------------


def test_the_cluster_package_exports_what_it_promises_and_redis_stays_optional() -> None:
    import actorchat.cluster as cluster

    assert cluster.__all__ == sorted(cluster.__all__)
    assert set(cluster.__all__) == {
        "Directory",
        "Membership",
        "Placement",
        "RedisClient",
        "connect",
    }
    # Nothing imports redis-py before a client is made: a process without
    # the cluster extra imports actorchat (and actorchat.cluster) as before.
    code = "import sys, actorchat, actorchat.cluster; print('redis' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
