"""Mean gap per solver against the time limit, from a benchmark ``results.csv``."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from nco.plotting.training import finite_float as _float

__all__ = ["plot_gap_vs_time"]


def plot_gap_vs_time(results_csv: str | Path, out_png: str | Path) -> Path:
    """Plot the mean gap (%) of each solver against its time limit and save a PNG.

    Runs with a budget per 100 customers (``time_per_100``) are plotted against that budget.

    The gap is the ``gap_pct`` column (to the run's reference) when every feasible row has one,
    otherwise the gap to the best cost any row found for the same instance.

    Parameters
    ----------
    results_csv : a benchmark ``results.csv`` (see :mod:`nco.benchmark`).
    out_png : output file.

    Returns
    -------
    The path written.
    """
    # Figure (not pyplot) draws with the Agg canvas and never touches the global backend.
    from matplotlib.figure import Figure

    with Path(results_csv).open(newline="") as fh:
        rows = [
            r
            for r in csv.DictReader(fh)
            if str(r.get("feasible", "")).lower() == "true" and _float(r.get("cost")) is not None
        ]
    use_ref = bool(rows) and all(_float(r.get("gap_pct")) is not None for r in rows)
    best: dict[str, float] = {}
    for r in rows:
        best[r["instance"]] = min(best.get(r["instance"], math.inf), float(r["cost"]))
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    several = len({r.get("problem") for r in rows}) > 1  # one curve per solver and problem
    for r in rows:
        gap = (
            float(r["gap_pct"])
            if use_ref
            else 100.0 * (float(r["cost"]) / best[r["instance"]] - 1.0)
        )
        per = _float(r.get("time_per_100"))
        name = f"{r['solver']} ({r.get('problem')})" if several else r["solver"]
        series[name][per if per else float(r["time_limit"])].append(gap)
    per_100 = any(_float(r.get("time_per_100")) for r in rows)

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    limits = sorted({t for s in series.values() for t in s})
    for solver in sorted(series):
        xs = sorted(series[solver])
        ys = [sum(series[solver][x]) / len(series[solver][x]) for x in xs]
        ax.plot(xs, ys, marker="o", label=solver)
    if len(limits) > 1 and limits[0] > 0:
        ax.set_xscale("log")
    ax.set_xlabel("time limit (s per 100 customers)" if per_100 else "time limit (s)")
    ax.set_ylabel("mean gap to reference (%)" if use_ref else "mean gap to best found (%)")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no feasible results", ha="center", va="center", transform=ax.transAxes)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    return out
