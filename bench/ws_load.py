"""WebSocket load: C concurrent clients, each creating a conversation and sending K messages.

Drives actorchat (``actorchat serve``) and the FastAPI peer
(``bench/peers/fastapi_peer.py``) with the same client in the same run, one
fresh server process per measurement, and reports per run: connect time,
time to first chunk (p50/p99, from sending a message to its first
``stream_content``), chunks/s delivered, completed vs. incomplete streams,
gaps in ``index`` (must be 0), errors, and the server's RSS (idle per
connection, peak) and CPU.

The client is asyncio + uvloop + ``websockets`` (permessage-deflate off), in
this process; the servers run in their own. Everything shares the
machine's cores, so compare targets side by side, not across machines.

It also draws chunks/s and time to first chunk against the number of
clients, one line per target and a row per delay, in
``bench/charts/ws_load.png`` (``--charts DIR`` elsewhere, ``--no-charts`` not
at all).

Usage::

    python bench/ws_load.py --clients 100 1000 5000 --delays 10 0 --messages 5
    python bench/ws_load.py --clients 1000 --targets actorchat --json out.json

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _charts
import jwt
import psutil
import uvloop
from _common import machine
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
SECRET = "ws-load-bench-secret-0123456789abcdef"
TOKENS = 20
WS_PATH = "/api/v1/chat/ws"
#: Handshakes in flight at once while connecting (keeps the accept queue sane).
CONNECT_CONCURRENCY = 200
#: A stream that has not completed after this long counts as incomplete.
STREAM_TIMEOUT = 120.0


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Tally:
    connect_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    chunks: int = 0
    completed: int = 0
    incomplete: int = 0
    gaps: int = 0
    errors: int = 0
    connect_failures: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass
class Result:
    target: str
    clients: int
    messages: int
    delay_ms: float
    connect_p50_ms: float
    connect_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    chunks_per_s: float
    chunks: int
    completed: int
    incomplete: int
    gaps: int
    errors: int
    connect_failures: int
    phase_s: float
    rss_base_mb: float
    rss_idle_kb_per_conn: float
    rss_peak_mb: float
    cpu_s: float
    cpu_pct: float


# -- servers --------------------------------------------------------------------------


def start_server(target: str, port: int, delay_ms: float, store: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTORCHAT_")}
    env.update(
        {
            "ACTORCHAT_JWT_SECRET": SECRET,
            "ACTORCHAT_MOCK_TOKENS": str(TOKENS),
            "ACTORCHAT_MOCK_DELAY_MS": str(delay_ms),
            "ACTORCHAT_STORE": store,
            "ACTORCHAT_DATA_DIR": f"/tmp/ws-load-{port}",
            "ACTORCHAT_MAX_CONNECTIONS": "100000",
            "ACTORCHAT_RATE_LIMIT_MESSAGES": "1000",
            "ACTORCHAT_LOG_LEVEL": "WARNING",
            "ACTORCHAT_IDLE_TIMEOUT": "0",
        }
    )
    if target == "actorchat":
        cmd = [sys.executable, "-m", "actorchat", "serve", "--port", str(port)]
    else:
        cmd = [sys.executable, str(ROOT / "bench/peers/fastapi_peer.py"), "--port", str(port)]
    # The server's log goes to a file: a pipe nobody reads would fill up and
    # freeze the server mid-run.
    log_path = Path(f"/tmp/ws-load-{target}-{port}.log")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{target} exited: {log_path.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{target} did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the client ------------------------------------------------------------------------


async def one_client(
    i: int,
    url: str,
    k: int,
    tally: Tally,
    gate: asyncio.Semaphore,
    connected: list[int],
    all_connected: asyncio.Event,
    go: asyncio.Event,
    total: int,
) -> None:
    now = time.perf_counter
    token = jwt.encode({"sub": f"user{i}", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    try:
        async with gate:
            t0 = now()
            ws = await connect(
                url, compression=None, max_size=None, ping_interval=None, open_timeout=120
            )
            await ws.send(json.dumps({"type": "auth", "token": token}))
            auth = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if auth.get("type") != "auth_success":
                raise RuntimeError(auth)
            tally.connect_s.append(now() - t0)
    except Exception:
        tally.connect_failures += 1
        connected[0] += 1
        if connected[0] >= total:
            all_connected.set()
        return
    connected[0] += 1
    if connected[0] >= total:
        all_connected.set()
    try:
        await go.wait()
        await ws.send(json.dumps({"type": "create_conversation", "data": {}}))
        cid = None
        while cid is None:
            frame = json.loads(await asyncio.wait_for(ws.recv(), STREAM_TIMEOUT))
            if frame["type"] == "conversation_created":
                cid = frame["data"]["conversation"]["id"]
        for m in range(k):
            sent = now()
            await ws.send(
                json.dumps(
                    {
                        "type": "send_message",
                        "data": {"conversation_id": cid, "content": f"message {m} from {i}"},
                    }
                )
            )
            expected = 0
            first = True
            reply = None
            try:
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), STREAM_TIMEOUT))
                    kind = frame["type"]
                    if kind == "stream_start" and reply is None:
                        reply = frame["data"]["message_id"]
                    elif kind == "stream_content" and frame["data"]["message_id"] == reply:
                        d = frame["data"]
                        if first:
                            tally.ttft_s.append(now() - sent)
                            first = False
                        lo = d.get("first_index", d["index"])
                        if lo != expected:
                            tally.gaps += 1
                        tally.chunks += d["index"] - lo + 1
                        expected = d["index"] + 1
                    elif kind == "stream_complete" and frame["data"]["message_id"] == reply:
                        ok = frame["data"].get("finish_reason") == "stop" and expected == TOKENS
                        if ok:
                            tally.completed += 1
                        else:
                            tally.incomplete += 1
                        break
                    elif kind == "error":
                        tally.errors += 1
            except TimeoutError:
                tally.incomplete += 1
    except Exception as exc:
        tally.errors += 1
        tally.error_kinds[type(exc).__name__ + ": " + str(exc)[:80]] = (
            tally.error_kinds.get(type(exc).__name__ + ": " + str(exc)[:80], 0) + 1
        )
    finally:
        await ws.close()


class Sampler:
    """Samples the server's RSS and CPU while a phase runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0

    def rss(self) -> int:
        rss = int(self.proc.memory_info().rss)
        self.peak = max(self.peak, rss)
        return rss

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.rss()
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass


def summarize(
    target: str,
    clients: int,
    k: int,
    delay_ms: float,
    tally: Tally,
    phase: float,
    base: int,
    idle: int,
    sampler: Sampler,
    cpu: float,
) -> Result:
    """One measurement's figures from the merged tally and the server samples."""
    ok = max(1, clients - tally.connect_failures)
    return Result(
        target=target,
        clients=clients,
        messages=k,
        delay_ms=delay_ms,
        connect_p50_ms=percentile(tally.connect_s, 50) * 1000,
        connect_p99_ms=percentile(tally.connect_s, 99) * 1000,
        ttft_p50_ms=percentile(tally.ttft_s, 50) * 1000,
        ttft_p99_ms=percentile(tally.ttft_s, 99) * 1000,
        chunks_per_s=tally.chunks / phase if phase else 0.0,
        chunks=tally.chunks,
        completed=tally.completed,
        incomplete=tally.incomplete,
        gaps=tally.gaps,
        errors=tally.errors,
        connect_failures=tally.connect_failures,
        phase_s=phase,
        rss_base_mb=base / 2**20,
        rss_idle_kb_per_conn=(idle - base) / ok / 1024,
        rss_peak_mb=sampler.peak / 2**20,
        cpu_s=cpu,
        cpu_pct=100 * cpu / phase if phase else 0.0,
    )


async def run_load(
    target: str, port: int, pid: int, clients: int, k: int, delay_ms: float
) -> Result:
    url = f"ws://127.0.0.1:{port}{WS_PATH}"
    sampler = Sampler(pid)
    base = sampler.rss()
    tally = Tally()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connected = [0]
    all_connected, go, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    watcher = asyncio.create_task(sampler.watch(stop))
    tasks = [
        asyncio.create_task(
            one_client(i, url, k, tally, gate, connected, all_connected, go, clients)
        )
        for i in range(clients)
    ]
    await asyncio.wait_for(all_connected.wait(), 600)
    await asyncio.sleep(1.0)  # let the server settle before measuring idle memory
    idle = sampler.rss()
    cpu0 = sampler.cpu()
    t0 = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    phase = time.perf_counter() - t0
    cpu = sampler.cpu() - cpu0
    stop.set()
    await watcher
    for kind, n in sorted(tally.error_kinds.items(), key=lambda kv: -kv[1])[:5]:
        print(f"#   {target}: {n} x {kind}", file=sys.stderr)
    return summarize(target, clients, k, delay_ms, tally, phase, base, idle, sampler, cpu)


def measure(
    target: str, clients: int, k: int, delay_ms: float, store: str, procs: int = 1
) -> Result:
    port = free_port()
    proc = start_server(target, port, delay_ms, store)
    try:
        if procs <= 1:
            return uvloop.run(run_load(target, port, proc.pid, clients, k, delay_ms))
        return run_split(target, port, proc.pid, clients, k, delay_ms, procs)
    finally:
        stop_server(proc)


# -- several load processes --------------------------------------------------------------
#
# One asyncio process saturates its core at about 1,000 clients, and then the
# bench measures the client. With --procs P the clients are split over P
# forked processes that connect, then start messaging together (two
# barriers); the parent samples the server and merges the tallies. The phase
# runs from the common start to the last client's end (CLOCK_MONOTONIC is
# shared by all processes).


def _worker(port: int, first: int, count: int, k: int, ready: Any, go: Any, out: Any) -> None:
    async def main() -> None:
        url = f"ws://127.0.0.1:{port}{WS_PATH}"
        tally = Tally()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        connected = [0]
        all_connected, start = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(
                one_client(first + i, url, k, tally, gate, connected, all_connected, start, count)
            )
            for i in range(count)
        ]
        await asyncio.wait_for(all_connected.wait(), 600)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, ready.wait)
        await loop.run_in_executor(None, go.wait)
        start.set()
        await asyncio.gather(*tasks)
        out.put((asdict(tally), time.monotonic()))

    uvloop.run(main())


def run_split(
    target: str, port: int, pid: int, clients: int, k: int, delay_ms: float, procs: int
) -> Result:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    ready, go = ctx.Barrier(procs + 1), ctx.Barrier(procs + 1)
    out = ctx.Queue()
    sampler = Sampler(pid)
    base = sampler.rss()
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = []
    first = 0
    for n in share:
        w = ctx.Process(target=_worker, args=(port, first, n, k, ready, go, out))
        w.start()
        workers.append(w)
        first += n
    ready.wait(timeout=600)
    time.sleep(1.0)  # let the server settle before measuring idle memory
    idle = sampler.rss()
    cpu0 = sampler.cpu()
    go.wait(timeout=60)
    t0 = time.monotonic()
    tally = Tally()
    end = t0
    for _ in workers:
        part, finished = out.get(timeout=STREAM_TIMEOUT * (k + 1))
        end = max(end, finished)
        tally.connect_s += part["connect_s"]
        tally.ttft_s += part["ttft_s"]
        for name in ("chunks", "completed", "incomplete", "gaps", "errors", "connect_failures"):
            setattr(tally, name, getattr(tally, name) + part[name])
        for kind, n in part["error_kinds"].items():
            tally.error_kinds[kind] = tally.error_kinds.get(kind, 0) + n
        sampler.rss()
    for w in workers:
        w.join(timeout=60)
    phase = end - t0
    cpu = sampler.cpu() - cpu0
    return summarize(target, clients, k, delay_ms, tally, phase, base, idle, sampler, cpu)


COLUMNS = [
    ("target", "target", "{}"),
    ("C", "clients", "{}"),
    ("K", "messages", "{}"),
    ("delay ms", "delay_ms", "{:g}"),
    ("connect p50/p99 ms", None, None),
    ("TTFC p50/p99 ms", None, None),
    ("chunks/s", "chunks_per_s", "{:,.0f}"),
    ("completed", "completed", "{:,}"),
    ("incomplete", "incomplete", "{}"),
    ("gaps", "gaps", "{}"),
    ("errors", "errors", "{}"),
    ("idle KB/conn", "rss_idle_kb_per_conn", "{:.1f}"),
    ("peak RSS MB", "rss_peak_mb", "{:.0f}"),
    ("CPU %", "cpu_pct", "{:.0f}"),
]


def row(r: Result) -> str:
    cells = []
    for _title, attr, fmt in COLUMNS:
        if attr is None:
            pair = (
                (r.connect_p50_ms, r.connect_p99_ms)
                if _title.startswith("connect")
                else (r.ttft_p50_ms, r.ttft_p99_ms)
            )
            cells.append(f"{pair[0]:.1f} / {pair[1]:.1f}")
        else:
            assert fmt is not None
            cells.append(fmt.format(getattr(r, attr)))
    return "| " + " | ".join(cells) + " |"


def header() -> str:
    titles = [t for t, _a, _f in COLUMNS]
    return "| " + " | ".join(titles) + " |\n|" + "---|" * len(titles)


#: How the charts name the targets.
TARGET_NAMES = {"actorchat": "actorchat", "peer": "FastAPI peer"}


def charts(results: list[Result], out_dir: Path, note: str) -> Path | None:
    """chunks/s and time to first chunk against clients, a row per delay, in ``ws_load.png``."""
    if not results:
        return None
    targets = list(dict.fromkeys(r.target for r in results))
    panels = []
    for delay in dict.fromkeys(r.delay_ms for r in results):
        runs = [r for r in results if r.delay_ms == delay]

        def points(target: str, attr: str, runs: list[Result] = runs) -> list[tuple[float, float]]:
            return [(r.clients, getattr(r, attr)) for r in runs if r.target == target]

        heading = f"mock delay {delay:g} ms, K = {runs[0].messages}"
        throughput = [
            _charts.Series(TARGET_NAMES.get(t, t), points(t, "chunks_per_s"), group=t)
            for t in targets
        ]
        latency = [
            _charts.Series(
                f"{TARGET_NAMES.get(t, t)} {p}",
                points(t, f"ttft_{p}_ms"),
                group=t,
                dashed=p == "p99",
            )
            for t in targets
            for p in ("p50", "p99")
        ]
        ttfts = [y for s in latency for _, y in s.points if y > 0]
        panels += [
            _charts.Panel(f"Throughput ({heading})", "concurrent clients", "chunks/s", throughput),
            _charts.Panel(
                f"Time to first chunk ({heading})",
                "concurrent clients",
                "time to first chunk, ms (from the send)",
                latency,
                # A p99 tens of times the p50 would flatten the p50 line on a linear axis.
                logy=bool(ttfts) and max(ttfts) / min(ttfts) >= 30,
            ),
        ]
    return _charts.line_panels(out_dir / "ws_load.png", panels, "WebSocket load", note=note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--delays", type=float, nargs="+", default=[10.0, 0.0])
    parser.add_argument("--messages", type=int, default=5, help="K messages per client")
    parser.add_argument("--targets", nargs="+", default=["actorchat", "peer"])
    parser.add_argument("--store", default="memory", choices=("memory", "sqlite"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--procs", type=int, default=1, help="load processes the clients are split over"
    )
    _charts.add_arguments(parser)
    args = parser.parse_args()

    print(
        f"# ws_load: {platform.node()} nproc={os.cpu_count()} python={platform.python_version()}"
        f" tokens={TOKENS} K={args.messages} store={args.store} procs={args.procs}",
        flush=True,
    )
    print(header(), flush=True)
    chart_dir = _charts.output_dir(args)
    results = []
    for clients in args.clients:
        for delay in args.delays:
            for target in args.targets:
                result = measure(target, clients, args.messages, delay, args.store, args.procs)
                results.append(result)
                print(row(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if chart_dir is not None:
        m = machine()
        note = (
            f"{m['date']}, commit {m['commit']}, {m['nproc']} CPUs ({m['cpu']}),"
            f" {m['mem_total_gb']} GB; {TOKENS} tokens per reply, store {args.store};"
            f" python bench/ws_load.py {' '.join(sys.argv[1:])}"
        )
        if path := charts(results, chart_dir, note):
            _charts.wrote(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
