"""The hybrid against its parts: gap-versus-time curves at budgets per 100 customers.

Runs ``nco benchmark``'s runner (:func:`nco.benchmark.run_benchmark`) on each set, every
instance solved once per budget by every solver and checked by the independent checker:

* ``x``: the 31 shared CVRPLib X instances (100-1000 customers), gap to the best-known
  solution (the ``.sol`` next to each file);
* ``cvrp100`` / ``cvrp500``: generated uniform CVRP sets (``--num`` instances each, seed 1234),
  gap to the best plan any solver found for the instance in this run;
* ``solomon``: the 56 shared Solomon VRPTW instances, gap to the optimum (``.sol``); HGS-CVRP has
  no time windows and is skipped there.

Budgets: ``--budgets`` seconds per 100 customers (default 0.1,0.3,1,3: an X instance with 500
customers gets 0.5, 1.5, 5 and 15 s). Solvers: ``hybrid`` (network warm start + PyVRP),
``pyvrp``, ``hgs``, ``ortools`` and ``neural+ls`` (the network and the numba local search).

Each set's run directory under ``--out`` keeps ``results.csv`` (resumable: rerun the same
command to finish an interrupted run), the solutions and ``summary.md``. This script prints and
writes ``--out/README.md``: per set and budget, one table of mean gap, feasibility and the
largest overrun of the time limit; per set a line comparing the hybrid with the better of PyVRP
and HGS (``hybrid - min(pyvrp, hgs)`` in points, negative = the hybrid is better); and
``gap_vs_time.png`` with one panel per set.

Usage: ``python benchmarks/gap_vs_time.py [--sets x,cvrp100,cvrp500,solomon]
[--budgets 0.1,0.3,1,3] [--solvers hybrid,pyvrp,hgs,ortools,neural+ls] [--num 10]
[--workers 2] [--out runs/gap_vs_time]``
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from nco.benchmark import (
    collect_instances,
    format_budget_tables,
    gap_column,
    generate_instances,
    read_results,
    run_benchmark,
    summarize,
)
from nco.envs.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _files(name: str, out: Path, num: int) -> tuple[list[Path], str]:
    """(instance files, reference kind) of a set."""
    if name == "x":
        return collect_instances(SHARED / "cvrplib-x"), "sol"
    if name == "solomon":
        return collect_instances(SHARED / "solomon"), "sol"
    if name.startswith("cvrp"):
        size = int(name[4:])
        return generate_instances("cvrp", size, num, 1234, out / "instances"), "none"
    raise SystemExit(f"unknown set {name!r}; expected x, solomon or cvrpN")


def _comparison(summary: list[dict[str, Any]]) -> str:
    """hybrid - min(pyvrp, hgs) per budget, in points of mean gap."""
    key = gap_column(summary)
    by: dict[str, dict[str, float]] = defaultdict(dict)
    for s in summary:
        by[s["label"]][s["solver"]] = s[key]
    parts = []
    for label, g in by.items():
        peers = [g[p] for p in ("pyvrp", "hgs") if p in g and not math.isnan(g[p])]
        if "hybrid" in g and peers:
            parts.append(f"{label}: {g['hybrid'] - min(peers):+.2f}")
    return "hybrid - min(pyvrp, hgs), points: " + ", ".join(parts) if parts else ""


def _plot(sets: dict[str, list[dict[str, Any]]], png: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(sets), 3.6), dpi=110)
    for k, (name, summary) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), k + 1)
        key = gap_column(summary)
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for s in summary:
            series[s["solver"]].append((s["time_per_100"], s[key]))
        for solver, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=solver)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("s per 100 customers")
        ax.set_ylabel(
            "mean gap to BKS (%)" if key == "mean_gap_ref_pct" else "mean gap to best found (%)"
        )
        ax.grid(True, alpha=0.3, which="both")
        if k == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)


def main() -> None:
    """Run (or resume) every set and write the tables and the plot."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="x,cvrp100,cvrp500,solomon")
    ap.add_argument("--budgets", default="0.1,0.3,1,3")
    ap.add_argument("--solvers", default="hybrid,pyvrp,hgs,ortools,neural+ls")
    ap.add_argument("--num", type=int, default=10, help="instances per generated set")
    ap.add_argument("--first", type=int, default=None, help="only the first K instances per set")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "gap_vs_time")
    ap.add_argument("--report-only", action="store_true", help="tables from existing results")
    args = ap.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    solvers = [s for s in args.solvers.split(",") if s]
    summaries: dict[str, list[dict[str, Any]]] = {}
    text = ["# Gap versus time (`benchmarks/gap_vs_time.py`)", ""]
    for name in [s for s in args.sets.split(",") if s]:
        out = args.out / name
        if args.report_only:
            rows = read_results(out / "results.csv")
        else:
            files, ref = _files(name, out, args.num)
            files = files[: args.first] if args.first else files
            rows = run_benchmark(
                files, solvers, [], out, seed=0, workers=args.workers, reference=ref,
                per_100=budgets,
            )  # fmt: skip
        summary = summarize(rows)
        summaries[name] = summary
        text += [f"## {name}", "", format_budget_tables(summary, title=name), _comparison(summary), ""]
        print("\n".join(text[-4:]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out / "README.md") as fh:
        fh.write("\n".join(text))
    _plot(summaries, args.out / "gap_vs_time.png")
    print(f"tables: {args.out / 'README.md'}, plot: {args.out / 'gap_vs_time.png'}")


if __name__ == "__main__":
    main()
