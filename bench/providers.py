"""Providers bench: N conversations streaming from a fake OpenAI server, vs reading it directly.

What it answers: how much latency does actorchat add to every
chunk between an OpenAI-compatible backend and a subscriber, and how much
throughput does it keep, with N = 100 and 1,000 streams at once.

Setup. The fake OpenAI server (``python -m actorchat.testing openai
--stamp``) runs in a process of its own, so that it does not share a core
with the client. Every token it sends is its send time
(``time.monotonic()``, system-wide on Linux), so the receiving side measures
each chunk's latency as ``now - token``. Two clients read the same server
in the same run, alternately, ``--repeat`` times:

- **direct**: N greenlets, each one ``requests`` streaming POST (one pooled
  session, as the provider uses), SSE parsed with ``sseclient``, each chunk
  JSON-decoded: the least a Python client does to read the stream;
- **actorchat**: a ``ChatSystem`` (SQLite store) whose default model is
  the OpenAI provider pointed at the server, N conversations, one message
  broadcast to all; a bus subscriber receives every ``StreamContent``,
  which is where the WebSocket layer would pick it up.

Latency: 20 tokens, 10 ms apart; added latency per chunk = actorchat's
p50 (p99) minus direct's p50 (p99). Throughput: 20 tokens, 0 ms apart;
chunks per second from the first request to the last end, actorchat over
direct.

Run: ``python bench/providers.py --n 100 1000`` (about a minute).
"""

from __future__ import annotations

import actorchat

actorchat.patch()

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import requests
import sseclient
from _common import percentile

from actorchat import ChatSystem, ModelConfig, StreamComplete, StreamContent, load_config
from actorchat.providers import (
    GenerationRequest,
    Provider,
    StreamItem,
    create_provider,
)

monotonic = time.monotonic


@dataclass
class Run:
    """One measured run of one client.

    ``latencies``: server send -> client has the chunk. ``inside`` (actorchat
    only): the provider hands the delta on -> a bus subscriber has it.
    """

    latencies: list[float] = field(default_factory=list)
    inside: list[float] = field(default_factory=list)
    chunks: int = 0
    streams: int = 0
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds during the run

    @property
    def rate(self) -> float:
        return self.chunks / self.elapsed if self.elapsed else 0.0


def start_server(tokens: int, delay_ms: float) -> tuple[subprocess.Popen[str], str]:
    """The fake OpenAI server in its own process; returns it and its base_url."""
    cmd = [
        sys.executable,
        "-m",
        "actorchat.testing",
        "openai",
        "--tokens",
        str(tokens),
        "--delay-ms",
        str(delay_ms),
        "--stamp",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "base_url=" not in line:
        proc.kill()
        raise SystemExit(f"the fake server did not start: {line!r}")
    return proc, line.strip().split("base_url=", 1)[1]


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _stamps(text: str, now: float, out: list[float]) -> int:
    n = 0
    for stamp in text.split():
        out.append(now - float(stamp))
        n += 1
    return n


# -- the direct client -----------------------------------------------------------------


def run_direct(base_url: str, n: int) -> Run:
    """N streaming requests read with requests + sseclient, no actorchat."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=n + 2, max_retries=0)
    session.mount("http://", adapter)
    url = base_url + "/chat/completions"
    body = json.dumps(
        {
            "model": "fake",
            "messages": [{"role": "user", "content": "Hello there, how do actors scale?"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 64,
        }
    ).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    run = Run()

    def one() -> None:
        try:
            resp = session.post(url, data=body, headers=headers, stream=True, timeout=(10, 60))
            lat = run.latencies
            for event in sseclient.SSEClient(resp.iter_content(None)).events():
                if event.data == "[DONE]":
                    break
                chunk = json.loads(event.data)
                for choice in chunk.get("choices") or ():
                    text = choice.get("delta", {}).get("content")
                    if text:
                        run.chunks += _stamps(text, monotonic(), lat)
            resp.close()
            run.streams += 1
        except Exception:
            run.errors += 1

    started, cpu = monotonic(), time.process_time()
    greenlets = [gevent.spawn(one) for _ in range(n)]
    gevent.joinall(greenlets)
    run.elapsed = monotonic() - started
    run.cpu = time.process_time() - cpu
    session.close()
    return run


# -- through actorchat ---------------------------------------------------------------------


class Stamping(Provider):
    """Notes when the real provider hands each delta to its conversation."""

    name = "openai"

    def __init__(self, inner: Provider, handed: dict[str, float]) -> None:
        self.inner = inner
        self.handed = handed

    def stream(self, request: GenerationRequest) -> Iterator[StreamItem]:
        inner = self.inner.stream(request)
        handed = self.handed
        try:
            for item in inner:
                if type(item) is str:
                    t = monotonic()
                    for stamp in item.split():
                        handed[stamp] = t
                yield item
        finally:
            inner.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.inner.close()


def run_actorchat(base_url: str, n: int, data_dir: Path) -> Run:
    """N conversations on the OpenAI provider; one subscriber sees every chunk."""
    model = ModelConfig(
        "fake",
        provider="openai",
        base_url=base_url,
        model="fake",
        max_tokens=64,
        max_concurrency=n,
        max_waiting=n,
    )
    shutil.rmtree(data_dir, ignore_errors=True)
    cfg = load_config(
        env={},
        data_dir=data_dir,
        models={"fake": model},
        default_model="fake",
        idle_timeout=0.0,
        subscriber_queue=1_000_000,
    )
    run = Run()
    handed: dict[str, float] = {}
    provider = Stamping(create_provider(model, cfg), handed)
    with ChatSystem(cfg, providers={"fake": provider}) as chat:
        ids = chat.start_conversations(n)
        sub = chat.subscribe(None, replay=False, maxsize=10_000_000)
        lat, inside = run.latencies, run.inside
        started, cpu = monotonic(), time.process_time()
        chat.broadcast_async(ids, "Hello there, how do actors scale?")
        while run.streams + run.errors < n:
            event = sub.get(120.0)
            if event is None:
                raise SystemExit(f"actorchat run stalled: {run.streams} of {n} replies ended")
            kind = type(event)
            if kind is StreamContent:
                now = monotonic()
                for stamp in event.content.split():  # type: ignore[attr-defined]
                    lat.append(now - float(stamp))
                    inside.append(now - handed.pop(stamp))
                    run.chunks += 1
            elif kind is StreamComplete:
                if event.finish_reason == "error":  # type: ignore[attr-defined]
                    run.errors += 1
                else:
                    run.streams += 1
        run.elapsed = monotonic() - started
        run.cpu = time.process_time() - cpu
        sub.close()
    return run


# -- the report ------------------------------------------------------------------------------


def measure(n: int, tokens: int, delay_ms: float, repeat: int, data_dir: Path) -> dict[str, Any]:
    proc, base_url = start_server(tokens, delay_ms)
    try:
        run_direct(base_url, min(n, 50))  # warm both paths (imports, first connections)
        run_actorchat(base_url, min(n, 50), data_dir)
        direct: list[Run] = []
        ours: list[Run] = []
        for _ in range(repeat):
            direct.append(run_direct(base_url, n))
            ours.append(run_actorchat(base_url, n, data_dir))
    finally:
        stop_server(proc)

    def med(runs: list[Run], fn: Any) -> float:
        return statistics.median(fn(r) for r in runs)

    out: dict[str, Any] = {"n": n, "delay_ms": delay_ms, "tokens": tokens, "repeat": repeat}
    for name, runs in (("direct", direct), ("actorchat", ours)):
        out[name] = {
            "p50_ms": med(runs, lambda r: percentile(r.latencies, 50)) * 1000,
            "p99_ms": med(runs, lambda r: percentile(r.latencies, 99)) * 1000,
            "chunks_per_s": med(runs, lambda r: r.rate),
            "cpu_us_per_chunk": med(runs, lambda r: r.cpu / max(r.chunks, 1)) * 1e6,
            "cpu_share": med(runs, lambda r: r.cpu / r.elapsed if r.elapsed else 0.0),
            "chunks": sum(r.chunks for r in runs),
            "errors": sum(r.errors for r in runs),
            "expected_chunks": n * tokens * repeat,
        }
    out["actorchat"]["inside_p50_ms"] = med(ours, lambda r: percentile(r.inside, 50)) * 1000
    out["actorchat"]["inside_p99_ms"] = med(ours, lambda r: percentile(r.inside, 99)) * 1000
    out["added_p50_ms"] = out["actorchat"]["p50_ms"] - out["direct"]["p50_ms"]
    out["added_p99_ms"] = out["actorchat"]["p99_ms"] - out["direct"]["p99_ms"]
    out["throughput_ratio"] = out["actorchat"]["chunks_per_s"] / out["direct"]["chunks_per_s"]
    # What the server offers while every stream keeps its pace. A client
    # process that needs a whole core to read it is saturated (gevent runs on
    # one core), and then its latencies measure its own queueing, not what
    # actorchat adds.
    out["offered_chunks_per_s"] = n * 1000.0 / delay_ms if delay_ms > 0 else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=10.0, help="latency runs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print raw results as JSON")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="actorchat-bench-providers-"))
    results = []
    try:
        for n in args.n:
            for delay in (args.delay_ms, 0.0):
                result = measure(n, args.tokens, delay, args.repeat, data_dir)
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, repeat={args.repeat}")
    print()
    print(
        "| N | ms between tokens | direct p50 / p99 ms | actorchat p50 / p99 ms "
        "| added p50 / p99 ms | inside actorchat p50 / p99 ms "
        "| direct chunks/s | actorchat chunks/s | ratio | client CPU µs/chunk direct / actorchat "
        "| errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        d, a = r["direct"], r["actorchat"]
        print(
            f"| {r['n']:,} | {r['delay_ms']:g} | {d['p50_ms']:.2f} / {d['p99_ms']:.2f} "
            f"| {a['p50_ms']:.2f} / {a['p99_ms']:.2f} "
            f"| {r['added_p50_ms']:+.2f} / {r['added_p99_ms']:+.2f} "
            f"| {a['inside_p50_ms']:.2f} / {a['inside_p99_ms']:.2f} "
            f"| {d['chunks_per_s']:,.0f} | {a['chunks_per_s']:,.0f} "
            f"| {r['throughput_ratio']:.2f} "
            f"| {d['cpu_us_per_chunk']:.0f} / {a['cpu_us_per_chunk']:.0f} "
            f"| {d['errors'] + a['errors']} |"
        )
    print()
    for r in results:
        offered = r["offered_chunks_per_s"]
        if offered is None:
            continue
        d = r["direct"]
        share = d["cpu_share"]
        state = "saturated" if share >= 0.9 else "not saturated"
        print(
            f"- N={r['n']:,}, {r['delay_ms']:g} ms: the server offers {offered:,.0f} chunks/s "
            f"at full pace; the direct client read {d['chunks_per_s']:,.0f}/s (start-up "
            f"included) using {share:.0%} of a core: {state}."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
