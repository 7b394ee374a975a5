"""Helpers shared by the benches: worker subprocesses, RSS, GC pauses, tables.

Each measurement runs in a fresh subprocess (one per workload and N) so that
RSS deltas and garbage-collector state are not polluted by an earlier run;
the parent runs the actorchat workload and its bare-gevent baseline in the
same invocation, alternately, and reports ratios: the machine is shared and
absolute timings are noisy, ratios much less so.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

#: The mock's reply length and pace in every bench (20 tokens, 0 ms, as every recorded figure used).
TOKENS = 20
#: The message broadcast to every conversation.
TEXT = "Hello there, how do actors scale?"
#: Marks the worker's JSON result line on stdout.
RESULT_TAG = "@@RESULT "

now = time.perf_counter
cpu = time.process_time  # every thread of the process: hub and store writer


def rss_bytes() -> int:
    """Resident set size of this process."""
    return int(psutil.Process().memory_info().rss)


def settled_rss() -> int:
    """RSS after a full collection (what live objects really hold)."""
    gc.collect()
    return rss_bytes()


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


class HubGaps:
    """How long the hub goes without running a greenlet that asks to wake every 1 ms.

    What every other client of the process feels during a bulk operation:
    a socket read, a heartbeat or a timer waits at least that long.
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.gaps: list[float] = []
        self._ticker: Any = None

    def _tick(self) -> None:
        import gevent  # only the gevent benches use this

        last = now()
        while True:
            gevent.sleep(self.interval)
            t = now()
            self.gaps.append(t - last)
            last = t

    def __enter__(self) -> HubGaps:
        import gevent

        self._ticker = gevent.spawn(self._tick)
        gevent.sleep(0)  # started: a bulk loop right after this is measured too
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticker.kill()

    def summary(self) -> dict[str, Any]:
        return {
            "hub_gap_max_s": max(self.gaps, default=0.0),
            "hub_gap_p99_s": percentile(self.gaps, 99) if self.gaps else 0.0,
        }


class GcPauses:
    """Times every garbage-collector pass with ``gc.callbacks``.

    A pass stops the whole process (hub included), so its duration is a
    pause for every conversation.
    """

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self.cpu_pauses: list[float] = []
        self._t0 = 0.0
        self._c0 = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = now()
            self._c0 = time.thread_time()
        else:
            self.pauses.append((int(info.get("generation", -1)), now() - self._t0))
            # CPU time too: on a shared machine a pass can be preempted, and
            # then its wall time overstates what the collector itself cost.
            self.cpu_pauses.append(time.thread_time() - self._c0)

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self, threshold: float = 0.1) -> dict[str, Any]:
        durations = [d for _, d in self.pauses]
        return {
            "gc_collections": len(self.pauses),
            "gc_gen2": sum(1 for g, _ in self.pauses if g == 2),
            "gc_max_pause_s": max(durations, default=0.0),
            "gc_max_pause_cpu_s": max(self.cpu_pauses, default=0.0),
            "gc_total_pause_s": sum(durations),
            "gc_pauses_over_100ms": sum(1 for d in durations if d > threshold),
        }


class TempDir:
    """A scratch data directory removed afterwards."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="actorchat-bench-"))
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def make_config(data_dir: Path) -> Any:
    """The bench's configuration: isolated from the environment, SQLite in ``data_dir``."""
    from actorchat import load_config

    return load_config(
        env={},
        data_dir=data_dir,
        mock_tokens=TOKENS,
        mock_delay_ms=0,
        idle_timeout=0,
        store="sqlite",
    )


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result for the parent (last line of stdout)."""
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_worker(script: str, args: Sequence[str], timeout: float = 3600.0) -> dict[str, Any]:
    """Run ``script --worker ...`` in a fresh interpreter and return its result."""
    cmd = [sys.executable, script, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            result: dict[str, Any] = json.loads(line[len(RESULT_TAG) :])
            return result
    sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
    raise RuntimeError(f"worker {' '.join(args)} failed (exit {proc.returncode})")


def run_pairs(
    script: str,
    ns: Sequence[int],
    repeat: int,
    extra: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> dict[int, dict[str, dict[str, Any]]]:
    """Run baseline and actorchat workers for every N, ``repeat`` times each.

    Runs alternate (baseline, actorchat, baseline, ...) so that both see the
    same background load; each metric is the median over the repeats.
    """
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for n in ns:
        runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "actorchat": []}
        for r in range(repeat):
            for kind in ("baseline", "actorchat"):
                if log:
                    log(f"N={n:,} {kind} run {r + 1}/{repeat} ...")
                runs[kind].append(run_worker(script, ["--worker", kind, "--n", str(n), *extra]))
        out[n] = {kind: median_of(results) for kind, results in runs.items()}
        for kind in runs:
            out[n][kind]["runs"] = runs[kind]
    return out


def median_of(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median of numeric fields (the first run's value for others)."""
    merged: dict[str, Any] = {}
    for key, value in results[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in results)
        else:
            merged[key] = value
    return merged


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    mem = psutil.virtual_memory()
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "actorchat"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": commit + (" (actorchat/ modified)" if dirty else ""),
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_total_gb": round(mem.total / 2**30, 1),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float, digits: int = 1) -> str:
    """A number with thousands separators."""
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}x" if base else "n/a"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def print_report(
    results: Any, table: str, targets: Sequence[dict[str, Any]], repeat: int, as_json: bool
) -> None:
    """The bench's output: JSON, or the machine line, the table and the targets."""
    if as_json:
        out = {"machine": machine(), "repeat": repeat, "results": results, "targets": targets}
        print(json.dumps(out, indent=2))
        return
    m = machine()
    print(
        f"{m['date']}, commit {m['commit']}, {m['nproc']} CPUs ({m['cpu']}), "
        f"{m['mem_total_gb']} GB, Python {m['python']}, "
        f"load average {m['loadavg'][0]:.2f}, median of {repeat} run(s)\n"
    )
    print(table)
    print()
    for t in targets:
        print(f"- {t['target']}: {t['value']:.2f} -> {verdict(t['ok'])}")
