"""PNG charts for the benches: line charts, duration distributions, timelines.

matplotlib comes with the optional ``bench`` extra (``pip install -e
'.[bench]'``), so nothing here imports it at module level: a bench calls
:func:`add_arguments` and :func:`output_dir` first (which only checks that
matplotlib is installed), measures, prints its figures, then draws. Every
drawing function writes one PNG with the non-interactive Agg canvas (no
display, no pyplot global state) and returns the path it wrote.

The helpers::

    line_chart(path, {"actorchat": [(x, y), ...], "baseline": [...]}, title, xlabel, ylabel)
    line_panels(path, [Panel(...), Panel(...)], title)   # several line charts side by side
    distribution(path, {"actorchat": [0.012, 0.015, ...]}, title, xlabel)   # histogram + CDF
    timeline(path, {"replies/s": [(t, y), ...]}, [(t0, t1, "kill 10%")], title, ylabel)
    rate(event_times, bucket_s=1.0)   # event timestamps -> [(t, events/s)] for timeline()

Units go in the axis labels ("time to first chunk, ms"); ``note`` puts a
small grey line (date, machine, command) at the bottom of the figure so a
PNG read on its own still says where it came from.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Where the benches write their charts unless told otherwise.
DEFAULT_DIR = Path(__file__).resolve().parent / "charts"
#: What to do when matplotlib is missing.
INSTALL_HINT = "pip install -e '.[bench]'"
#: Resolution of every PNG: readable on a screen, a few tens of KB per file.
DPI = 100
#: Colours in each PNG's palette (see _save).
PALETTE_COLOURS = 64
#: A series is a list of (x, y) points.
Points = Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Series:
    """One line of a line chart.

    Series with the same ``group`` share a colour across every panel of a
    figure (e.g. "actorchat p50" solid and "actorchat p99" dashed).
    """

    label: str
    points: Points
    group: str = ""
    dashed: bool = False


@dataclass(frozen=True)
class Panel:
    """One line chart among several in a figure (see :func:`line_panels`)."""

    title: str
    xlabel: str
    ylabel: str
    series: Sequence[Series] | Mapping[str, Points]
    #: None: logarithmic when the values span a factor of 10 or more.
    logx: bool | None = None
    logy: bool = False
    #: Start the y axis at 0 (the default: most bench figures are costs or rates).
    y_from_zero: bool = True


# -- command line -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--charts DIR`` and ``--no-charts`` to a bench's parser."""
    parser.add_argument(
        "--charts",
        metavar="DIR",
        default=str(DEFAULT_DIR),
        help="write PNG charts here (default: bench/charts; '' turns them off)",
    )
    parser.add_argument(
        "--no-charts", action="store_true", help="do not write charts (same as --charts '')"
    )


def available() -> bool:
    """Whether matplotlib is installed (checked without importing it)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def skipped(reason: str = "matplotlib is not installed") -> None:
    """The one line a bench prints instead of its charts."""
    print(f"# charts skipped: {reason} ({INSTALL_HINT} to get them)", file=sys.stderr, flush=True)


def output_dir(args: argparse.Namespace) -> Path | None:
    """The directory to write charts to, or None when they are off or cannot be drawn.

    Called before the bench runs, so that a missing matplotlib is said at
    once rather than after minutes of measuring.
    """
    if args.no_charts or not args.charts:
        return None
    if not available():
        skipped()
        return None
    return Path(args.charts)


def wrote(path: Path) -> None:
    """Say where a chart went (on stderr: stdout carries the figures and --json)."""
    print(f"# chart: {path}", file=sys.stderr, flush=True)


# -- drawing ----------------------------------------------------------------------------


def _figure(rows: int, cols: int, width: float = 6.0, height: float = 4.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path, title: str, note: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.suptitle(title, fontsize=13)
    if note:
        # Outside the constrained layout, so it cannot squeeze the axes.
        fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))  # type: ignore[call-arg, union-attr]
        fig.text(0.01, 0.01, note, fontsize=7.5, color="0.4", ha="left", va="bottom")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    # A chart is a handful of flat colours plus anti-aliased edges: a 64-colour
    # palette looks the same and makes the committed PNGs about a third the size.
    from PIL import Image  # a dependency of matplotlib itself

    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=PALETTE_COLOURS).save(out, optimize=True)
    return out


def _as_series(series: Sequence[Series] | Mapping[str, Points]) -> list[Series]:
    if isinstance(series, Mapping):
        return [Series(label, points) for label, points in series.items()]
    return list(series)


def _colours(panels: Sequence[Panel]) -> dict[str, str]:
    """One colour per group, in order of first appearance, for the whole figure."""
    colours: dict[str, str] = {}
    for panel in panels:
        for s in _as_series(panel.series):
            key = s.group or s.label
            colours.setdefault(key, f"C{len(colours) % 10}")
    return colours


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,g}"


def _draw_lines(ax: Axes, panel: Panel, colours: Mapping[str, str]) -> None:
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        NullFormatter,
        NullLocator,
    )

    series = _as_series(panel.series)
    xs = sorted({x for s in series for x, _ in s.points})
    for s in series:
        if not s.points:
            continue
        points = sorted(s.points)
        ax.plot(
            [x for x, _ in points],
            [y for _, y in points],
            marker="o",
            markersize=4,
            linestyle="--" if s.dashed else "-",
            color=colours[s.group or s.label],
            label=s.label,
        )
    positive = [x for x in xs if x > 0]
    logx = panel.logx
    if logx is None:
        logx = len(positive) == len(xs) > 1 and max(positive) / min(positive) >= 10
    if logx:
        ax.set_xscale("log")
    if panel.logy:
        ax.set_yscale("log")
        # 10, 20, 50, 100, ... in plain numbers: "2 x 10^1" on a minor tick is
        # hard to read at a glance.
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
    elif panel.y_from_zero:
        ax.set_ylim(bottom=0)
    if 0 < len(xs) <= 12:
        # The measured x values themselves as ticks (1,000 / 10,000 / 30,000),
        # not powers of ten most of which were never measured.
        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _number(v)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,g}"))
    ax.set_title(panel.title, fontsize=11)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    if any(s.points for s in series):
        ax.legend(fontsize=8)


def line_panels(
    path: str | Path, panels: Sequence[Panel], title: str, *, cols: int = 2, note: str = ""
) -> Path:
    """Several line charts in one PNG, ``cols`` per row; returns the path written."""
    if not panels:
        raise ValueError("no panels to draw")
    cols = max(1, min(cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(rows, cols)
    axes = fig.subplots(rows, cols, squeeze=False)
    colours = _colours(panels)
    for i, panel in enumerate(panels):
        _draw_lines(axes[i // cols][i % cols], panel, colours)
    for j in range(len(panels), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    return _save(fig, path, title, note)


def line_chart(
    path: str | Path,
    series: Sequence[Series] | Mapping[str, Points],
    title: str,
    xlabel: str,
    ylabel: str,
    *,
    logx: bool | None = None,
    logy: bool = False,
    note: str = "",
) -> Path:
    """One line per series against x; returns the path written.

    ``series`` maps a label to its (x, y) points, or is a list of
    :class:`Series` for shared colours and dashed lines.
    """
    panel = Panel("", xlabel, ylabel, series, logx=logx, logy=logy)
    return line_panels(path, [panel], title, cols=1, note=note)


def distribution(
    path: str | Path,
    samples: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    *,
    bins: int = 40,
    logx: bool | None = None,
    note: str = "",
) -> Path:
    """Histogram (left) and cumulative distribution (right) of durations; returns the path.

    ``samples`` maps a label to its durations, in the unit ``xlabel``
    names. The CDF marks each label's p50 and p99, and its legend gives
    them. With ``logx`` None the x axis is logarithmic when the positive
    samples span a factor of 100 or more (tails of latencies usually do).
    """
    import numpy as np

    fig = _figure(1, 2)
    hist_ax, cdf_ax = fig.subplots(1, 2)
    values = [v for vs in samples.values() for v in vs]
    edges = np.linspace(0.0, 1.0, bins + 1)
    positive = [v for v in values if v > 0]
    if logx is None:
        logx = (
            bool(positive)
            and len(positive) == len(values)
            and (max(positive) / min(positive) >= 100)
        )
    if values:
        lo, hi = min(values), max(values)
        if hi == lo:
            hi = lo + 1.0
        edges = (
            np.geomspace(min(positive), max(positive), bins + 1)
            if logx and positive
            else np.linspace(lo, hi, bins + 1)
        )
    for i, (label, vs) in enumerate(samples.items()):
        if not vs:
            continue
        colour = f"C{i % 10}"
        hist_ax.hist(vs, bins=edges, histtype="step", linewidth=1.5, color=colour, label=label)
        ordered = np.sort(np.asarray(vs, dtype=float))
        fraction = np.arange(1, len(ordered) + 1) / len(ordered)
        # Percentiles by nearest rank, as the benches' own percentile() does.
        p50, p99 = (
            ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]
            for p in (50, 99)
        )
        cdf_ax.step(
            ordered,
            fraction,
            where="post",
            color=colour,
            label=f"{label}: n={len(vs):,}, p50 {p50:,.3g}, p99 {p99:,.3g}",
        )
        cdf_ax.plot([p50, p99], [0.5, 0.99], linestyle="none", marker="o", ms=4, color=colour)
    for ax in (hist_ax, cdf_ax):
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    hist_ax.set_title("histogram", fontsize=11)
    hist_ax.set_ylabel("count")
    cdf_ax.set_title("cumulative distribution", fontsize=11)
    cdf_ax.set_ylabel("fraction at or below")
    cdf_ax.set_ylim(0, 1.02)
    if values:
        hist_ax.legend(fontsize=8)
        cdf_ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path, title, note)


def timeline(
    path: str | Path,
    series: Mapping[str, Points],
    marks: Sequence[tuple[float, float, str]],
    title: str,
    ylabel: str,
    *,
    xlabel: str = "time since start, s",
    step: bool = True,
    note: str = "",
) -> Path:
    """Values over time with shaded intervals (faults, phases); returns the path written.

    ``series`` maps a label to (t, value) points; ``marks`` are (start, end,
    label) intervals on the same time axis, shaded, one colour and legend
    entry per distinct label (a zero-length interval is drawn as a line).
    ``step`` draws each value as holding until the next point, which is
    what a per-bucket rate (see :func:`rate`) means.
    """
    fig = _figure(1, 1, width=10.0, height=4.5)
    ax = fig.subplots()
    for i, (label, points) in enumerate(series.items()):
        ordered = sorted(points)
        ax.plot(
            [t for t, _ in ordered],
            [v for _, v in ordered],
            drawstyle="steps-post" if step else "default",
            color=f"C{i % 10}",
            label=label,
            linewidth=1.3,
        )
    # Mark colours come after the series' so the two never share one.
    mark_colours: dict[str, str] = {}
    for start, end, label in marks:
        legend = None if label in mark_colours else label  # one legend entry per label
        colour = mark_colours.setdefault(label, f"C{(len(series) + len(mark_colours)) % 10}")
        if end > start:
            ax.axvspan(start, end, color=colour, alpha=0.18, label=legend, linewidth=0)
        else:
            ax.axvline(start, color=colour, alpha=0.7, linestyle=":", label=legend)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if series or marks:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path, title, note)


def rate(times: Sequence[float], bucket_s: float = 1.0) -> list[tuple[float, float]]:
    """Event timestamps (seconds) -> (bucket start, events per second) for :func:`timeline`.

    Empty buckets between the first and the last event are kept as zeros:
    a stall is exactly what a timeline should show. The last bucket's rate
    is repeated at its end, so that a step line covers that bucket too.
    """
    if not times:
        return []
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    origin = math.floor(min(times) / bucket_s) * bucket_s
    counts = [0] * (int((max(times) - origin) // bucket_s) + 1)
    for t in times:
        counts[int((t - origin) // bucket_s)] += 1
    points = [(origin + i * bucket_s, c / bucket_s) for i, c in enumerate(counts)]
    points.append((origin + len(counts) * bucket_s, counts[-1] / bucket_s))
    return points
