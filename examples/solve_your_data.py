"""Solve your own routing data: from arrays (coordinates or a distance matrix) and from files.

Run as ``python examples/solve_your_data.py [--file PATH] [--quick] [--out DIR]``.

1. A CVRP built from numpy arrays (depot first, demands and capacity in your own units), solved
   by the default solver (``hybrid``: the shipped network's plan as PyVRP's warm start), by the
   network alone and by OR-Tools; costs come back in your units.
2. The same data given only as a distance matrix (e.g. road distances): the network still gets
   2-D positions (a classical MDS embedding of the matrix, used only as input features), while
   every cost is computed from the matrix itself.
3. Files: the instance written as VRPLIB ``.vrp`` (readable by any VRPLIB tool), read back and
   solved, the routes written as a ``.sol``; and any ``.vrp``/``.tsp``/Solomon ``.txt`` file
   (``--file``, default a shipped CVRPLib instance).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import nco
from nco.envs import write_instance

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "instances" / "E-n22-k4.vrp"


def report(label: str, sol: nco.Solution) -> None:
    """One line per solution: cost in instance units, routes, feasibility, time."""
    status = "feasible" if sol.feasible else f"INFEASIBLE ({len(sol.violations)} violations)"
    n = len(sol.routes)
    print(f"{label:<32} cost {sol.cost:10.1f}  {n} route{'s' * (n != 1)}  {status}  {sol.runtime:.2f} s")


def main(argv: list[str] | None = None) -> int:
    """Build, solve, write and read back the example instances."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", type=Path, default=SHIPPED, help="an instance file to solve")
    ap.add_argument("--quick", action="store_true", help="short time limits (the test suite)")
    ap.add_argument("--out", type=Path, default=Path("out/solve_your_data"), help="output folder")
    args = ap.parse_args(argv)
    limit = 0.2 if args.quick else 2.0

    # 1. Arrays: 20 customers around a depot, integer demands, a vehicle capacity of 30.
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1000, size=(21, 2)).round()
    demand = np.concatenate([[0], rng.integers(1, 10, size=20)])
    # EUC_2D rounds every edge to the nearest integer, like CVRPLib; the default is exact.
    inst = nco.Instance.from_arrays(
        coords=coords, demand=demand, capacity=30, edge_weight="EUC_2D", name="my-cvrp20"
    )
    print(inst)
    report(f"hybrid, the default ({limit:g} s)", nco.solve(inst, time_limit=limit))
    report("neural (shipped weights)", nco.solve(inst, solver="neural"))
    report(f"ortools ({limit:g} s)", nco.solve(inst, solver="ortools", time_limit=limit))

    # 2. A distance matrix only (here the same distances, so the costs are comparable).
    matrix = nco.Instance.from_arrays(
        distance=inst.distance, demand=demand, capacity=30, name="my-matrix"
    )
    report("neural on the matrix alone", nco.solve(matrix, solver="neural"))

    # 3. Files.
    path = write_instance(inst, args.out / "my-cvrp20.vrp")
    again = nco.load(path)
    sol = nco.solve(again, solver="ortools", time_limit=limit)
    report(f"ortools on {path.name}", sol)
    print(f"routes -> {sol.write(args.out / 'my-cvrp20.sol')}")
    other = nco.load(args.file)
    report(f"neural on {args.file.name}", nco.solve(other, solver="neural"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
