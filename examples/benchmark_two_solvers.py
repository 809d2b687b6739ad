"""Benchmark two solvers on a few generated instances, print a table and plot the results.

Run as ``python examples/benchmark_two_solvers.py [--solvers neural,ortools] [--size 50]
[--time-limit 1] [--quick] [--out DIR]``.

Three CVRP instances are generated with a fixed seed (uniform customers, the POMO standard
capacity), each is solved by both solvers, and the table gives each cost, the ratio of the
second solver's cost to the first's (measured in the same run) and the times. Two figures are
written: the mean cost per solver (``costs.png``) and the routes of both solvers on the first
instance side by side (``routes.png``). For real benchmarks use ``nco benchmark``
(resumable ``results.csv``, many instances, worker processes, gap-vs-time plot).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from matplotlib.figure import Figure

import nco
from nco.plotting import save_route_plot

NUM_INSTANCES = 3


def main(argv: list[str] | None = None) -> int:
    """Generate, solve with both solvers, print the table and write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solvers", default="neural,ortools", help="two solver names, comma-separated")
    ap.add_argument("--size", type=int, default=50, help="customers per instance")
    ap.add_argument("--time-limit", type=float, default=1.0, help="seconds per run, for every solver")
    ap.add_argument("--quick", action="store_true", help="20 customers, 0.2 s (the test suite)")
    ap.add_argument("--out", type=Path, default=Path("out/benchmark_two_solvers"), help="output folder")
    args = ap.parse_args(argv)
    first, second = args.solvers.split(",")
    size, limit = (20, 0.2) if args.quick else (args.size, args.time_limit)

    problem = nco.get_problem("cvrp")
    td = problem.generator(num_loc=size)(NUM_INSTANCES, seed=1234)
    instances = [problem.to_instance(td[i : i + 1], name=f"cvrp{size}-{i}") for i in range(NUM_INSTANCES)]
    runs = {
        name: [nco.solve(inst, solver=name, time_limit=limit) for inst in instances]
        for name in (first, second)
    }

    print(f"{'instance':<12} {first:>10} {second:>10} {'ratio':>7} {'s ' + first:>10} {'s ' + second:>10}")
    for i, inst in enumerate(instances):
        a, b = runs[first][i], runs[second][i]
        print(f"{inst.name:<12} {a.cost:>10.4f} {b.cost:>10.4f} {b.cost / a.cost:>7.3f} {a.runtime:>10.2f} {b.runtime:>10.2f}")
    means = {name: statistics.fmean(s.cost for s in sols) for name, sols in runs.items()}
    feasible = all(s.feasible for sols in runs.values() for s in sols)
    print(f"mean cost {first} {means[first]:.4f}, {second} {means[second]:.4f}, ratio {means[second] / means[first]:.3f}; all feasible: {feasible}")

    args.out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 4))  # no pyplot: works without a display
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(list(means), list(means.values()), color=["tab:blue", "tab:orange"])
    ax.set_ylabel(f"mean cost over {NUM_INSTANCES} CVRP{size} instances")
    ax.set_title(f"{first} vs {second} ({limit:g} s per classical run)")
    fig.savefig(args.out / "costs.png", dpi=100)
    routes = save_route_plot([runs[first][0], runs[second][0]], args.out / "routes.png")
    print(f"figures -> {args.out / 'costs.png'}, {routes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
