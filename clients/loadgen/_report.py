"""A load run's result: the merged histogram and counts, the summary table, the JSON the
bench reads, and the latency-percentile plot."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from clients.loadgen._scenarios import Options

# Latencies are recorded in microseconds, from 1 µs to 10 minutes, to 3 significant digits.
_HIGHEST_US = 600_000_000
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def new_histogram() -> HdrHistogram:
    """An empty latency histogram (microseconds)."""
    return HdrHistogram(1, _HIGHEST_US, 3)


@dataclass
class Counts:
    """Counts of the calls meant for the measured window."""

    completed: int = 0
    ok: int = 0
    misses: int = 0  # NOT_FOUND answers to keys sent as misses (the expected outcome)
    replays_sent: int = 0
    replays: int = 0  # replays answered with replayed=true
    sent: int = 0  # open loop: calls sent ...
    intended: int = 0  # ... of the calls scheduled

    def add(self, other: Counts) -> None:
        """Add another process's counts to these."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Result:
    """One run's figures; :meth:`to_json` is the object ``--json`` writes."""

    options: Options = field(repr=False)
    histogram: HdrHistogram = field(repr=False)
    counts: Counts
    errors: dict[str, int]
    unexpected_errors: dict[str, int]
    client_cpu_s: float
    started_at: datetime
    per_process_completed: list[int] = field(default_factory=list)

    @property
    def qps(self) -> float:
        """Completed calls per second of the measured window."""
        return self.counts.completed / self.options.duration

    @property
    def achieved_rate_ratio(self) -> float | None:
        """Open loop: calls sent / calls scheduled in the window (None for a closed loop)."""
        if self.options.rate is None:
            return None
        return self.counts.sent / self.counts.intended if self.counts.intended else 0.0

    @property
    def latency_ms(self) -> dict[str, float]:
        """Percentiles, max and mean of the calls' latencies, in milliseconds."""
        h = self.histogram
        if not h.get_total_count():
            return {name: 0.0 for name in ("p50", "p90", "p99", "p99.9", "max", "mean")}
        out = {name: h.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES}
        out["max"] = h.get_max_value() / 1000
        out["mean"] = h.get_mean_value() / 1000
        return {k: round(v, 3) for k, v in out.items()}

    def to_json(self) -> dict[str, Any]:
        """The result in the agreed shape (see README, "Load testing")."""
        o, c = self.options, self.counts
        ratio = self.achieved_rate_ratio
        return {
            "scenario": o.scenario,
            "mode": o.mode,
            "rate": o.rate,
            "concurrency": o.in_flight if o.rate is None else None,
            "processes": o.processes,
            "channels": o.channels,
            "duration_s": o.duration,
            "completed": c.completed,
            "per_process_completed": self.per_process_completed,
            "ok": c.ok,
            "errors": dict(sorted(self.errors.items())),
            "unexpected_errors": dict(sorted(self.unexpected_errors.items())),
            "misses": c.misses,
            "replays_sent": c.replays_sent,
            "replays": c.replays,
            "qps": round(self.qps, 1),
            "achieved_rate_ratio": None if ratio is None else round(ratio, 4),
            "latency_ms": self.latency_ms,
            "client_cpu_s": round(self.client_cpu_s, 3),
            "started_at": self.started_at.isoformat(),
            "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }


def table(result: Result) -> str:
    """The one-screen summary: a header, a row, and the lines that explain the errors."""
    o, c, lat = result.options, result.counts, result.latency_ms
    load = f"{o.rate:g}/s" if o.rate is not None else f"{o.in_flight} in flight"
    heads = [
        "scenario",
        "mode",
        "load",
        "processes",
        "completed",
        "qps",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "client CPU",
    ]
    row = [
        o.scenario,
        o.mode,
        load,
        str(o.processes),
        str(c.completed),
        f"{result.qps:.1f}",
        str(c.completed - c.ok),
        *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
        f"{result.client_cpu_s:.2f} s",
    ]
    widths = [max(len(h), len(v)) for h, v in zip(heads, row, strict=True)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip(),
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(),
    ]
    if result.errors:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items()))
        lines.append(f"errors: {shown}")
    if c.misses:
        lines.append(f"  of which NOT_FOUND for the --miss-share keys (expected): {c.misses}")
    if result.unexpected_errors:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(result.unexpected_errors.items()))
        lines.append(f"  unexpected: {shown}")
    if c.replays_sent:
        lines.append(f"replays: {c.replays_sent} sent, {c.replays} answered replayed")
    ratio = result.achieved_rate_ratio
    if ratio is not None:
        lines.append(
            f"open loop: sent {c.sent} of {c.intended} calls scheduled ({ratio:.1%}); "
            "latency from each call's scheduled send time"
        )
    lines.append(
        f"measured {o.duration:g} s after {o.warmup:g} s warm-up; client CPU: the client "
        "processes' user+sys during the measured seconds"
    )
    return "\n".join(lines)


def write_json(result: Result, path: str) -> None:
    """Write :meth:`Result.to_json` to ``path`` (``-``: standard output)."""
    text = json.dumps(result.to_json(), indent=2) + "\n"
    if path == "-":
        print(text, end="")
    else:
        Path(path).write_text(text)


def write_plot(path: Path, results: Sequence[Result]) -> None:
    """Write a PNG of latency (ms, log scale) against percentile (50 to 99.99, on a log
    scale of 1/(1-p)), one line per result."""
    # Imported here: matplotlib takes a second to import, and only --plot needs it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ticks = (50.0, 90.0, 99.0, 99.9, 99.99)
    steps = 200
    # x = 1/(1-p): each "nine" takes the same width, from 2 (p50) to 10,000 (p99.99).
    xs = [2 * 5000 ** (i / steps) for i in range(steps + 1)]
    for r in results:
        if not r.histogram.get_total_count():
            continue
        ys = [r.histogram.get_value_at_percentile(100 * (1 - 1 / x)) / 1000 for x in xs]
        o = r.options
        load = f"{o.rate:g}/s" if o.rate is not None else f"{o.in_flight} in flight"
        axes.plot(xs, ys, label=f"{o.scenario} {o.mode} {load}, {o.processes} proc")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xticks([1 / (1 - p / 100) for p in ticks], [f"{p:g}" for p in ticks])
    axes.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left")
    figure.savefig(path, format="png")
