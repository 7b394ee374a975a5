"""Fault injection under load: do actorchat's promises hold while things break?

Starts a real ``actorchat serve`` process (its own temporary data directory,
SQLite store) and C WebSocket clients, each one user with one conversation,
sending a message every ``--interval`` seconds and following every reply,
then runs phases, each with its faults:

- ``baseline``: none;
- ``kills``: ``--kill-rate`` of the conversations crash every second
  (``POST /api/v1/admin/kill``), a share of them every ``--kill-every``
  seconds (1% every 100 ms by default; ``--kill-every 1`` kills 10% at once
  each second), never one more often than its supervisor allows (3 restarts
  within 5 s, then it is failed);
- ``model``: backend failures. With ``--model openai`` the conversations talk
  to a fake OpenAI server in its own process (``bench/_faults_model.py``), and
  chosen messages get a 429 with ``Retry-After``, a 500, a 529, a dropped
  connection before or during the stream, a hang, a stream cut short or a
  mid-stream error; with the embedded mock, its failure and crash rates are
  turned on for the phase (``PUT /api/v1/admin/faults``);
- ``disconnects``: clients drop their connection mid-stream, come back after
  up to a second and resume (``join_conversation`` with ``after_index`` and
  ``message_id``);
- ``slow``: clients stop reading for one to four seconds mid-stream;
- ``kill9``: the server process is killed with SIGKILL and started again on
  the same data directory; every client reconnects and resumes;
- ``chaos``: all of the above at once.

After each phase it audits, from the store through the public API
(``GET /api/v1/conversations/<id>/messages`` with each user's dev token),
what the clients saw (see ``_faults_audit``): acknowledged messages stored
exactly once and in order, completed replies stored as seen, no gap or
repeat in any followed stream, every acknowledged message answered or failed
explicitly, no error where no fault was aimed. It prints the tables and the
recovery figures (a crash seen by the client -> the next chunk of that
conversation; kill -9 -> serving; restart -> every acknowledged message read
back), writes charts (``bench/charts/faults-*.png``) and exits 1 when a
promise broke. ``--sabotage`` also breaks copies of the audit's inputs (a
deleted message, a dropped chunk, a fake acknowledgement) and exits 2 unless
each is reported.

Usage::

    python bench/faults.py                                   # 1,000 clients, all phases
    python bench/faults.py --clients 200 --phases kills kill9 --seconds 10 --long-seconds 20
    python bench/faults.py --model openai --phases model chaos --json faults.json

Traffic goes to 127.0.0.1 only; the run is bounded (every wait has a
deadline). Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import _charts
import psutil
import requests
from _common import fmt, machine, md_table, percentile
from _faults_audit import KINDS, PROMISES, Audit, Targets, across_outage, audit, sabotage
from _faults_load import BUCKET_S, COUNTS, run_worker

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("baseline", "kills", "model", "disconnects", "slow", "kill9", "chaos")
#: Phases that run for ``--long-seconds``.
LONG = ("kills", "chaos")
#: The server's restart intensity (its defaults): more restarts than this in
#: that many seconds fail a conversation, so the bench never kills one more often.
MAX_RESTARTS, MAX_SECONDS = 3, 5.0
#: After a kill -9, every client has reconnected within about this long.
STORM_S = 3.0
#: HTTP requests (dev tokens, reading the store back) in flight at once.
HTTP_THREADS = 32

now = time.monotonic
#: Kill requests: when sent, and the conversations killed.
Kills = list[tuple[float, list[str]]]


def log(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- processes: the server and the fake model ------------------------------------------------


class Server:
    """``actorchat serve`` on a data directory, killed and started again at will."""

    def __init__(self, data_dir: Path, port: int, args: argparse.Namespace, config: Path | None):
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config = config
        self.log_path = data_dir.parent / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}
        self.env.update(
            {
                "ACTORCHAT_MOCK_TOKENS": str(args.tokens),
                "ACTORCHAT_MOCK_DELAY_MS": str(args.delay_ms),
                "ACTORCHAT_IDLE_TIMEOUT": "0",
                "ACTORCHAT_LOG_LEVEL": "WARNING",
                "ACTORCHAT_SHUTDOWN_GRACE": "5",
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpu_s = 0.0  # CPU of the processes that ended (kill -9)

    def start(self) -> tuple[float, float]:
        """Start it; returns (when it was started, when /readyz first answered 200)."""
        cmd = [sys.executable, "-m", "actorchat", "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        with self.log_path.open("ab") as logf:
            started = now()
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=logf)
        deadline = started + 60
        while now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return started, now()
            except requests.RequestException:
                pass
            time.sleep(0.01)  # polling a starting process: nothing to wait on instead
        raise RuntimeError("the server did not become ready within 60 s")

    def cpu(self) -> float:
        """CPU seconds of every server process so far."""
        total = self.cpu_s
        if self.proc is not None and self.proc.poll() is None:
            try:
                t = psutil.Process(self.proc.pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def kill9(self) -> float:
        assert self.proc is not None
        self.cpu_s = self.cpu()
        at = now()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        return at

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_fake_model(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, str(ROOT / "bench" / "_faults_model.py")]
    cmd += ["--tokens", str(args.tokens), "--delay-ms", str(args.delay_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "base_url=" not in line:
        proc.kill()
        raise RuntimeError(f"the fake model did not start: {line!r}")
    return proc, line.strip().split("base_url=", 1)[1]


def model_config(path: Path, base_url: str) -> Path:
    """A config whose default model is the fake OpenAI server."""
    path.write_text(
        "\n".join(
            [
                'default_model = "fake"',
                "[models.fake]",
                'provider = "openai"',
                f'base_url = "{base_url}"',
                'model = "fake"',
                "max_concurrency = 5000",
                "first_token_timeout = 5",
                "idle_timeout = 1.5",  # a hanging stream fails after this long
                "max_attempts = 3",
                "backoff_base = 0.05",
                "",
            ]
        )
    )
    return path


# -- the load processes ------------------------------------------------------------------------


class Worker:
    """A load process and the thread that reads what it sends."""

    def __init__(self, ctx: Any, port: int, users: list[tuple[int, str]], t0: float, seed: int):
        cmd_r, self.cmd = ctx.Pipe(duplex=False)
        self.out, out_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=run_worker, args=(cmd_r, out_w, port, users, t0, seed), daemon=True
        )
        self.proc.start()
        cmd_r.close()
        out_w.close()
        self.inbox: dict[str, queue.Queue[Any]] = {
            k: queue.Queue() for k in ("ready", "phase_done", "acks", "failed")
        }
        threading.Thread(target=self._read, args=(self.out,), daemon=True).start()

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                kind, body = conn.recv()
            except (EOFError, OSError):
                self.inbox["failed"].put("the load process ended")
                return
            self.inbox[kind].put(body)
            if kind == "failed":
                return

    def wait(self, kind: str, timeout: float) -> Any:
        deadline = now() + timeout
        while True:
            try:
                return self.inbox[kind].get(timeout=min(1.0, max(deadline - now(), 0.01)))
            except queue.Empty:
                if not self.inbox["failed"].empty():
                    raise RuntimeError(self.inbox["failed"].get()) from None
                if now() > deadline:
                    raise TimeoutError(f"no {kind} from a load process in {timeout:.0f}s") from None

    def cpu(self) -> float:
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Restart:
    """One kill -9 and what followed."""

    killed_at: float
    started_at: float
    serving_at: float
    acked: int = 0
    acks_at: float = 0.0  # when the load processes had said what they had acknowledged
    all_present_at: float | None = None
    missing: int = 0
    rounds: int = 0  # reads of every conversation until all was there

    def storm_end(self) -> float:
        """When the reconnecting clients and the read-back stop loading the server."""
        return max(self.serving_at + STORM_S, self.all_present_at or 0.0)

    def figures(self) -> dict[str, Any]:
        present = None if self.all_present_at is None else self.all_present_at - self.started_at
        return {
            "kill_to_serving_s": self.serving_at - self.killed_at,
            "restart_to_serving_s": self.serving_at - self.started_at,
            "restart_to_all_acked_present_s": present,
            "acked_before_kill": self.acked,
            "restart_to_acks_listed_s": self.acks_at - self.started_at,
            "read_rounds": self.rounds,
            "missing": self.missing,
        }


@dataclass
class PhaseResult:
    name: str
    seconds: float
    messages: int
    faults: str
    audit: Audit
    kills: int = 0
    kill_rounds: int = 0
    kill_to_chunk_ms: list[float] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    chunks: int = 0
    server_cpu_pct: float = 0.0
    load_cpu_pct: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)
    t0: float = 0.0  # the run's start, for times in the JSON
    model_outcomes: dict[str, dict[str, int]] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        a = self.audit
        return {
            "phase": self.name,
            "faults": self.faults,
            "seconds": self.seconds,
            "messages_per_client": self.messages,
            "kills": self.kills,
            "chunks_per_s": self.chunks / self.seconds if self.seconds else 0.0,
            "server_cpu_pct": self.server_cpu_pct,
            "load_cpu_pct": self.load_cpu_pct,
            "recovery_ms": summary(a.recovery_ms),
            # (crash seen, s since the start; crash -> next chunk, ms)
            "recovery_samples": [
                (round(t - self.t0, 3), round(v, 2))
                for t, v in zip(a.recovery_at, a.recovery_ms, strict=True)
            ],
            "kill_to_chunk_ms": summary(self.kill_to_chunk_ms),
            "restarts": [
                {
                    **r.figures(),
                    "killed_at_s": r.killed_at - self.t0,
                    "serving_at_s": r.serving_at - self.t0,
                }
                for r in self.restarts
            ],
            "model_outcomes": self.model_outcomes,
            "audit": a.to_dict(),
            "broken": a.broken(),
        }


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values),
    }


class Run:
    """The server, the clients, and the phases, one after another."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.t0 = now()
        self.fake: subprocess.Popen[str] | None = None
        config = None
        if args.model == "openai":
            self.fake, base_url = start_fake_model(args)
            config = model_config(workdir / "models.toml", base_url)
        self.server = Server(workdir / "data", free_port(), args, config)
        self.workers: list[Worker] = []
        self.tokens: dict[int, str] = {}
        self.cids: dict[int, str] = {}
        self.acks: dict[str, list[str]] = {}
        self.buckets: dict[int, list[int]] = {}
        self.marks: list[tuple[float, float, str]] = []
        self.admin = ""
        self.faults_lock = threading.Lock()
        self.mock_faults: dict[str, float] = {}
        self.sabotage_results: list[tuple[str, str, bool]] = []

    @staticmethod
    def request(method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP request on a connection of its own.

        A connection per request, so that a read never depends on a
        connection the killed server held. (This also sidestepped a ~40 ms
        wait per kept-alive request, Nagle's algorithm against the client's
        delayed ACK, which the server has since fixed with TCP_NODELAY.)
        """
        return requests.request(method, url, **kwargs)

    def _token(self, user: str) -> str:
        r = self.request(
            "POST", f"{self.server.url}/api/v1/auth/token", json={"user_id": user}, timeout=30
        )
        r.raise_for_status()
        token: str = r.json()["token"]
        return token

    def setup(self) -> None:
        started, serving = self.server.start()
        log(f"server ready in {serving - started:.2f}s on {self.server.url}")
        self.admin = self._token("faults-admin")
        with ThreadPoolExecutor(HTTP_THREADS) as pool:
            users = [f"faults-user-{i}" for i in range(self.args.clients)]
            self.tokens = dict(enumerate(pool.map(self._token, users)))
        # Fork the load processes now, before this process has other threads
        # than the ones just ended and the readers (started after each fork).
        ctx = mp.get_context("fork")
        procs = max(1, self.args.procs)
        for p in range(procs):
            users = [(i, self.tokens[i]) for i in range(p, self.args.clients, procs)]
            self.workers.append(Worker(ctx, self.server.port, users, self.t0, self.args.seed))
        for w in self.workers:
            self.cids.update(w.wait("ready", 300))
        log(f"{len(self.cids)} clients connected, one conversation each")

    def close(self) -> None:
        for w in self.workers:
            try:
                w.cmd.send(("stop",))
            except OSError:
                pass
        for w in self.workers:
            w.proc.join(10)
            if w.proc.is_alive():
                w.proc.kill()
        self.server.stop()
        if self.fake is not None:
            self.fake.send_signal(signal.SIGTERM)
            try:
                out, _ = self.fake.communicate(timeout=10)
                log(f"fake model: {out.strip()}")
            except subprocess.TimeoutExpired:
                self.fake.kill()

    # -- faults --------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def set_mock_faults(self, crash: float, failure: float) -> None:
        with self.faults_lock:
            self.mock_faults = {"mock_crash_rate": crash, "mock_failure_rate": failure}
            self._put_faults()

    def _put_faults(self) -> None:
        if self.args.model != "mock" or not self.mock_faults:
            return
        r = self.request(
            "PUT",
            f"{self.server.url}/api/v1/admin/faults",
            json=self.mock_faults,
            headers=self._auth(),
            timeout=30,
        )
        r.raise_for_status()

    def kill_loop(self, t_start: float, t_end: float, stop: threading.Event, out: Kills) -> None:
        """Crash ``--kill-rate`` of the conversations a second, in rounds, until ``t_end``."""
        history: dict[str, list[float]] = {}
        cids = list(self.cids.values())
        count = max(1, round(self.args.kill_rate * self.args.kill_every * len(cids)))
        tick = t_start
        while not stop.is_set() and tick < t_end:
            if stop.wait(max(0.0, tick - now())):
                return
            tick += self.args.kill_every
            at = now()
            # Never past the supervisor's intensity: that would fail the
            # conversation (a documented outcome, not what this phase tests).
            eligible = [
                c
                for c in cids
                if sum(1 for t in history.get(c, ()) if t > at - MAX_SECONDS - 1) < MAX_RESTARTS
            ]
            ids = self.rng.sample(eligible, min(count, len(eligible)))
            try:
                r = self.request(
                    "POST",
                    f"{self.server.url}/api/v1/admin/kill",
                    json={"conversation_ids": ids},
                    headers=self._auth(),
                    timeout=10,
                )
            except requests.RequestException:
                continue  # the server is down (kill -9): nothing was killed
            if r.status_code != 200:
                continue
            for c in r.json()["killed"]:
                history.setdefault(c, []).append(at)
            out.append((at, list(r.json()["killed"])))

    def kill9(self, at: float, since: float, stop: threading.Event, out: list[Restart]) -> None:
        """SIGKILL the server at ``at``, start it again, and read back what was acknowledged.

        What this phase acknowledged before the kill (since ``since``) must be
        readable as soon as the server serves again: each conversation's
        newest messages are read until all of it is there. (What earlier
        phases acknowledged was read back by their audits, and this phase's
        audit reads every conversation whole again.)
        """
        if stop.wait(max(0.0, at - now())):
            return
        killed = self.server.kill9()
        started, serving = self.server.start()
        restart = Restart(killed, started, serving)
        out.append(restart)
        with self.faults_lock:
            self._put_faults()  # a new process starts with the configured rates
        for w in self.workers:
            w.cmd.send(("acks", since, killed))
        acked: list[tuple[int, str, str]] = []
        for w in self.workers:
            acked += w.wait("acks", 60)
        restart.acked = len(acked)
        restart.acks_at = now()
        missing: dict[str, tuple[int, set[str]]] = {}
        for i, cid, mid in acked:
            missing.setdefault(cid, (i, set()))[1].add(mid)
        deadline = now() + 60
        while missing and now() < deadline:
            # Room for the replies, and for what the clients sent since; a
            # second round reads them whole.
            reads = [
                (c, i, None if restart.rounds else 2 * len(mids) + 12)
                for c, (i, mids) in missing.items()
            ]
            with ThreadPoolExecutor(HTTP_THREADS) as pool:
                pages = pool.map(lambda read: self.stored_ids(*read), reads)
                found = dict(zip(missing, pages, strict=True))
            missing = {
                c: (i, mids - (found[c] or set()))
                for c, (i, mids) in missing.items()
                if found[c] is None or mids - found[c]
            }
            restart.rounds += 1
        restart.missing = sum(len(m) for _, m in missing.values())
        if not missing:
            restart.all_present_at = now()
        f = restart.figures()
        log(
            f"kill -9: serving {f['restart_to_serving_s']:.2f}s after the restart; "
            f"{restart.acked} acknowledged listed at {f['restart_to_acks_listed_s']:.2f}s, "
            f"all read back at {f['restart_to_all_acked_present_s']}s "
            f"({restart.rounds} rounds, {restart.missing} missing)"
        )

    # -- reading the store back ----------------------------------------------------------------

    def stored(self, cid: str, index: int, limit: int | None = None) -> list[dict[str, Any]] | None:
        """A conversation's messages (the newest ``limit``; default: all), or None."""
        try:
            r = self.request(
                "GET",
                f"{self.server.url}/api/v1/conversations/{cid}/messages",
                params={"limit": limit or 1000},
                headers={"Authorization": f"Bearer {self.tokens[index]}"},
                timeout=30,
            )
        except requests.RequestException:
            return None
        if r.status_code != 200:
            return None
        messages: list[dict[str, Any]] = r.json()["messages"]
        return messages

    def stored_ids(self, cid: str, index: int, limit: int | None = None) -> set[str] | None:
        messages = self.stored(cid, index, limit)
        return None if messages is None else {m["id"] for m in messages}

    def read_store(self) -> dict[str, list[dict[str, Any]]]:
        with ThreadPoolExecutor(HTTP_THREADS) as pool:
            pairs = list(self.cids.items())
            pages = pool.map(lambda p: self.stored(p[1], p[0]), pairs)
            out: dict[str, list[dict[str, Any]]] = {}
            for (_i, cid), page in zip(pairs, pages, strict=True):
                if page is None:
                    raise RuntimeError(f"could not read conversation {cid} back")
                out[cid] = page
            return out

    # -- a phase ------------------------------------------------------------------------------

    def plan(self, name: str) -> tuple[dict[int, dict[str, Any]], Targets, list[str]]:
        """Which client does what in this phase, and what the faults aim at."""
        args = self.args
        rng = self.rng
        k = self.messages(name)
        plans: dict[int, dict[str, Any]] = {i: {} for i in self.cids}
        targets = Targets()
        faults: list[str] = []
        everything = name == "chaos"
        share = 0.5 if everything else 1.0
        if name == "kills" or everything:
            burst = args.kill_rate * args.kill_every
            faults.append(f"kill {args.kill_rate:.0%}/s ({burst:.0%} every {args.kill_every:g} s)")
        if name == "model" or everything:
            if args.model == "openai":
                kinds = sorted(KINDS)
                chosen = rng.sample(sorted(self.cids), max(1, int(0.2 * share * len(self.cids))))
                for j, i in enumerate(chosen):
                    plans[i]["directive"] = {rng.randrange(k): kinds[j % len(kinds)]}
                    targets.directive.add(i)
                faults.append(f"model failures on {len(chosen)} clients")
            else:
                targets.model_faults_everywhere = True
                targets.crashes_everywhere = not everything
                faults.append("mock failures" + ("" if everything else " + crashes"))
        if name == "disconnects" or everything:
            chosen = rng.sample(sorted(self.cids), max(1, int(0.3 * share * len(self.cids))))
            for i in chosen:
                # After chunk 1..tokens-2; away up to a second (a reply lasts
                # tokens x delay): some resume mid-stream, some after its end.
                after = rng.randrange(1, max(2, args.tokens - 1))
                plans[i]["disconnect"] = {rng.randrange(k): (after, rng.uniform(0.0, 1.0))}
                targets.disconnect.add(i)
            faults.append(f"{len(chosen)} clients drop and resume")
        if name == "slow" or everything:
            chosen = rng.sample(sorted(self.cids), max(1, int(0.2 * share * len(self.cids))))
            for i in chosen:
                plans[i]["slow"] = {rng.randrange(k): (rng.randrange(0, 5), rng.uniform(1.0, 4.0))}
                targets.slow.add(i)
            faults.append(f"{len(chosen)} clients stop reading 1-4 s")
        if name == "kill9" or everything:
            targets.kill9 = True
            faults.append("kill -9 + restart")
        return plans, targets, faults

    def seconds(self, name: str) -> float:
        return float(self.args.long_seconds if name in LONG else self.args.seconds)

    def messages(self, name: str) -> int:
        return max(1, int(self.seconds(name) / self.args.interval))

    def phase(self, name: str) -> PhaseResult:
        args = self.args
        plans, targets, faults = self.plan(name)
        seconds = self.seconds(name)
        k = self.messages(name)
        t_start = now() + 1.0
        t_end = t_start + seconds
        spec = {
            "name": name,
            "t_start": t_start,
            "t_end": t_end,
            "interval": args.interval,
            "messages": k,
            "grace": args.grace,
            "plans": {},
        }
        log(f"phase {name}: {seconds:g}s, {k} messages per client; faults: {', '.join(faults)}")
        cpu_server0 = self.server.cpu()
        cpu_load0 = sum(w.cpu() for w in self.workers)
        for w in self.workers:
            mine = {i: plans[i] for i in plans if i % len(self.workers) == self.workers.index(w)}
            w.cmd.send(("phase", {**spec, "plans": mine}))
        stop = threading.Event()
        threads: list[threading.Thread] = []
        kills: Kills = []
        restarts: list[Restart] = []
        if name in ("kills", "chaos"):
            threads.append(
                threading.Thread(target=self.kill_loop, args=(t_start, t_end, stop, kills))
            )
        if name in ("kill9", "chaos"):
            at = t_start + (0.5 if name == "chaos" else 0.4) * seconds
            threads.append(threading.Thread(target=self.kill9, args=(at, t_start, stop, restarts)))
        mock_faults = args.model == "mock" and name in ("model", "chaos")
        if mock_faults:
            # Failure rate for everyone; crashes too when kills are not
            # running (both count against a conversation's restart intensity).
            self.set_mock_faults(0.0 if name == "chaos" else 0.01, 0.05)
        for t in threads:
            t.start()
        results = []
        try:
            for w in self.workers:
                results.append(w.wait("phase_done", seconds + args.grace + 120))
        finally:
            stop.set()
            for t in threads:
                t.join(120)
            if mock_faults:
                self.set_mock_faults(0.0, 0.0)
        duration = max(now() - t_start, 1e-9)
        clients = [c for r in results for c in r["clients"]]
        for r in results:
            for b, row in r["buckets"].items():
                acc = self.buckets.setdefault(int(b), [0] * len(COUNTS))
                for j, v in enumerate(row):
                    acc[j] += v
        targets.killed = {c for _, ids in kills for c in ids}
        targets.outages = [(r.killed_at, r.serving_at) for r in restarts]
        log(f"phase {name}: auditing {len(clients)} conversations")
        stored = self.read_store()
        earlier = {cid: list(ids) for cid, ids in self.acks.items()}
        a = audit(name, clients, stored, earlier, targets)
        result = PhaseResult(name, seconds, k, ", ".join(faults) or "none", a)
        result.kills = sum(len(ids) for _, ids in kills)
        if kills:
            result.faults += f"; {result.kills:,} kills"
        result.kill_rounds = len(kills)
        result.restarts = restarts
        result.window = (t_start - self.t0, t_end - self.t0)
        result.t0 = self.t0
        result.chunks = sum(
            int(ch[1]) - int(ch[0]) + 1 for c in clients for r in c["replies"] for ch in r["chunks"]
        )
        result.server_cpu_pct = 100 * (self.server.cpu() - cpu_server0) / duration
        result.load_cpu_pct = 100 * (sum(w.cpu() for w in self.workers) - cpu_load0) / duration
        result.kill_to_chunk_ms = self.kill_to_chunk(kills, clients, targets.outages)
        result.model_outcomes = self.model_outcomes(clients)
        # Marks for the timeline.
        label = name if name != "chaos" else "all faults"
        if faults:
            self.marks.append((t_start - self.t0, t_end - self.t0, label))
        for r in restarts:
            self.marks.append((r.killed_at - self.t0, r.serving_at - self.t0, "kill -9 → serving"))
        for c in clients:
            for m in c["messages"]:
                if m["id"] is not None:
                    self.acks.setdefault(c["cid"], []).append(m["id"])
        if args.sabotage and not self.sabotage_results:
            self.sabotage_results = sabotage(name, clients, stored, earlier, targets)
        return result

    @staticmethod
    def kill_to_chunk(
        kills: Kills, clients: list[Any], outages: list[tuple[float, float]]
    ) -> list[float]:
        """Kill request sent -> the next chunk of that conversation (crashes seen mid-reply)."""
        sent: dict[str, list[float]] = {}
        for at, ids in kills:
            for c in ids:
                sent.setdefault(c, []).append(at)
        out = []
        for c in clients:
            for rec in c["recoveries"]:
                before = [t for t in sent.get(rec["cid"], ()) if t <= rec["crash_at"]]
                if before and not across_outage(rec, outages):
                    out.append((rec["chunk_at"] - max(before)) * 1000.0)
        return out

    @staticmethod
    def model_outcomes(clients: list[Any]) -> dict[str, dict[str, int]]:
        """Per injected model failure: how the messages it hit were settled."""
        out: dict[str, dict[str, int]] = {}
        for c in clients:
            for m in c["messages"]:
                if m["directive"] and not m["replaced"]:
                    row = out.setdefault(m["directive"], {})
                    key = str(m["settled"])
                    row[key] = row.get(key, 0) + 1
        return out


# -- report ------------------------------------------------------------------------------------


def fmt_ms(s: dict[str, float | int]) -> str:
    if not s.get("n"):
        return "-"
    return f"{s['p50']:.0f} / {s['p99']:.0f} / {s['max']:.0f} (n={s['n']})"


def tables(results: list[PhaseResult]) -> str:
    load_rows = []
    promise_rows = []
    for p in results:
        a = p.audit
        row = p.row()
        load_rows.append(
            [
                p.name,
                p.faults,
                f"{p.seconds:g}",
                p.messages,
                f"{a.acked:,}",
                f"{a.answered:,}",
                f"{a.failed:,}",
                f"{a.resumed:,}",
                f"{a.drops:,} / {a.reconnects:,}",
                f"{row['chunks_per_s']:,.0f}",
                fmt_ms(row["recovery_ms"]),
                f"{p.server_cpu_pct:.0f} / {p.load_cpu_pct:.0f}",
            ]
        )
        promise_rows.append([p.name] + [f"{getattr(a, k):,}" for k in PROMISES])
    load = md_table(
        [
            "phase",
            "faults",
            "s",
            "K",
            "acked",
            "answered",
            "failed explicitly",
            "resumed streams",
            "drops / reconnects",
            "chunks/s",
            "crash → next chunk ms p50 / p99 / max",
            "CPU % server / load",
        ],
        load_rows,
    )
    promises = md_table(["phase", *PROMISES.values()], promise_rows)
    return load + "\n\n" + promises


def figures(results: list[PhaseResult]) -> list[dict[str, Any]]:
    """The headline figures and whether each target was met."""
    out: list[dict[str, Any]] = []
    rec = [v for p in results if p.name in ("kills", "chaos") for v in p.audit.recovery_ms]
    if rec:
        p99 = percentile(rec, 99)
        out.append(
            {
                "figure": "p99 crash seen → next chunk (kills, chaos)",
                "value": f"{p99:.0f} ms",
                "target": "≤ 100 ms",
                "met": p99 <= 100,
            }
        )
    # The same, split: crashes seen after a kill -9 while every client
    # reconnects and the bench reads every conversation back, and the rest.
    storm: list[float] = []
    calm: list[float] = []
    for p in results:
        if p.name not in ("kills", "chaos") or not p.restarts:
            continue
        for t, v in zip(p.audit.recovery_at, p.audit.recovery_ms, strict=True):
            near = any(r.serving_at <= t <= r.storm_end() for r in p.restarts)
            (storm if near else calm).append(v)
    if storm or calm:
        out.append(
            {
                "figure": f"chaos: p99 crash seen → next chunk, {len(storm)} crashes while "
                f"clients reconnect and the store is read back / {len(calm)} at other times",
                "value": f"{fmt(percentile(storm, 99), 0)} ms / {fmt(percentile(calm, 99), 0)} ms",
                "target": "(breakdown)",
                "met": None,
            }
        )
    sent = [v for p in results for v in p.kill_to_chunk_ms]
    if sent:
        out.append(
            {
                "figure": "p99 kill request sent → next chunk (kills, chaos)",
                "value": f"{percentile(sent, 99):.0f} ms",
                "target": "(includes the admin request's own latency)",
                "met": None,
            }
        )
    for p in results:
        for r in p.restarts:
            f = r.figures()
            present = f["restart_to_all_acked_present_s"]
            out.append(
                {
                    "figure": f"{p.name}: restart → serving; → the {r.acked:,} messages acked "
                    "in the phase before the kill read back",
                    "value": f"{f['restart_to_serving_s']:.2f} s; "
                    + ("never" if present is None else f"{present:.2f} s"),
                    "target": "≤ 5 s",
                    "met": present is not None and present <= 5.0,
                }
            )
    return out


def timeline(run: Run) -> dict[str, list[tuple[float, float]]]:
    """Per-second rates over the run, from the load processes' buckets."""
    t = sorted(run.buckets)
    return {
        f"{what}/s": [(b * BUCKET_S, run.buckets[b][j] / BUCKET_S) for b in t]
        for j, what in enumerate(COUNTS)
    }


def draw(run: Run, results: list[PhaseResult], out_dir: Path, note: str) -> None:
    series = timeline(run)
    # Reconnects come in a burst of a thousand after a kill -9: they share
    # the chunks' scale, and the errors (a few per second) get their own.
    path = _charts.timeline(
        out_dir / "faults-timeline.png",
        {"chunks/s": series["chunks/s"], "reconnects/s": series["reconnects/s"]},
        run.marks,
        "Chunks delivered and reconnects while faults are injected",
        "per second",
        note=note,
    )
    _charts.wrote(path)
    path = _charts.timeline(
        out_dir / "faults-errors.png",
        {"errors/s": series["errors/s"]},
        run.marks,
        "Errors seen by clients (error frames, closes) while faults are injected",
        "errors per second",
        note=note,
    )
    _charts.wrote(path)
    names = {"model": "mock crashes", "chaos": "all faults"}
    samples = {
        names.get(p.name, p.name): p.audit.recovery_ms for p in results if p.audit.recovery_ms
    }
    if samples:
        path = _charts.distribution(
            out_dir / "faults-recovery.png",
            samples,
            "Crashed conversation: the crash seen by its client → the next chunk",
            "ms",
            note=note,
        )
        _charts.wrote(path)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000, help="C: clients, one user each")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between a client's messages"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument(
        "--long-seconds", type=float, default=60.0, help="length of the kills and chaos phases"
    )
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument(
        "--kill-rate", type=float, default=0.10, help="share of the conversations killed a second"
    )
    parser.add_argument(
        "--kill-every", type=float, default=0.1, help="seconds between kill requests"
    )
    parser.add_argument("--model", choices=("mock", "openai"), default="mock")
    parser.add_argument("--tokens", type=int, default=20, help="tokens per reply")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="before each token")
    parser.add_argument("--procs", type=int, default=1, help="load processes")
    parser.add_argument("--grace", type=float, default=45.0, help="a phase's time to settle")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--sabotage",
        action="store_true",
        help="also check that the audit reports a deleted message, a dropped chunk "
        "and a fake acknowledgement (exit 2 if one goes unreported)",
    )
    _charts.add_arguments(parser)
    args = parser.parse_args()
    if args.clients < 1 or args.procs < 1 or args.interval <= 0:
        parser.error("need --clients >= 1, --procs >= 1 and --interval > 0")
    if not 0 < args.kill_rate * args.kill_every <= 1 or args.kill_every <= 0:
        parser.error("need --kill-every > 0 and 0 < --kill-rate x --kill-every <= 1")
    chart_dir = _charts.output_dir(args)
    command = "python bench/faults.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    m = machine()
    log(
        f"{m['date']}, commit {m['commit']}, {m['nproc']} CPUs ({m['cpu']}), "
        f"Python {m['python']}, load average {m['loadavg'][0]:.2f}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="actorchat-faults-"))
    run = Run(args, workdir)
    results: list[PhaseResult] = []
    try:
        run.setup()
        for name in args.phases:
            results.append(run.phase(name))
            a = results[-1].audit
            log(f"phase {name}: {a.acked:,} acknowledged, broken: {a.broken() or 'none'}")
    finally:
        run.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"{m['date']}, commit {m['commit']}, {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['mem_total_gb']} GB, Python {m['python']}, load average {m['loadavg'][0]:.2f}; "
        f"{args.clients:,} clients, a message every {args.interval:g} s each, "
        f"replies of {args.tokens} tokens {args.delay_ms:g} ms apart, model {args.model}\n"
    )
    print(tables(results))
    print()
    for p in results:
        for kind, rows in p.audit.examples.items():
            for ex in rows:
                print(f"- {p.name}: {PROMISES.get(kind, kind)}: {ex}")
        if p.model_outcomes:
            shown = ", ".join(
                f"{k} ({KINDS.get(k, '?')} expected): {v}"
                for k, v in sorted(p.model_outcomes.items())
            )
            print(f"- {p.name}: model failures settled as: {shown}")
    targets = figures(results)
    for t in targets:
        verdict = "" if t["met"] is None else (" -> met" if t["met"] else " -> **missed**")
        print(f"- {t['figure']}: {t['value']} (target {t['target']}){verdict}")
    broken = {p.name: p.audit.broken() for p in results if p.audit.broken()}
    print(f"- promises: {'all kept' if not broken else 'BROKEN: ' + json.dumps(broken)}")
    caught = True
    for what, how, ok in run.sabotage_results:
        caught = caught and ok
        print(f"- sabotage, {what}: {how} -> {'reported' if ok else '**not reported**'}")
    print(f"- command: {command}")
    note = f"{m['date']} · {m['nproc']} CPUs · {command}"
    if chart_dir is not None and results:
        draw(run, results, chart_dir, note)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": m,
                    "command": command,
                    "args": vars(args),
                    "phases": [p.row() for p in results],
                    "figures": targets,
                    "sabotage": [
                        {"what": w, "how": h, "reported": ok} for w, h, ok in run.sabotage_results
                    ],
                    "broken": broken,
                    "timeline": timeline(run),
                    "marks": run.marks,
                },
                indent=2,
                default=str,
            )
        )
    if broken:
        return 1
    if args.sabotage and (not caught or not run.sabotage_results):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
