"""Local-search benchmarks: numba kernels vs plain-Python references.

Run as ``python benchmarks/local_search.py``. On random uniform instances (CVRP100: 100 customers,
demands 1..9, capacity 50; TSP100) each instance starts from the same random solution (CVRP: a
random customer order cut greedily by capacity; TSP: a random permutation) and is improved by
``nco.kernels.local_search.local_search_vrp`` / ``local_search_tsp`` (numba) and by their
plain-Python references. Both paths must return the identical solution (checked).

Kernel times are medians over ``--repeats`` calls after one warm-up call (which triggers or loads
the numba compilation); reference times are one call each (they take about a second). The ratio
column is ``reference time / kernel time`` (higher is better); the headline speed-up of a problem is
total reference time / total kernel time over its instances, all measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nco.kernels.local_search import (
    local_search_tsp,
    local_search_tsp_reference,
    local_search_vrp,
    local_search_vrp_reference,
    route_cost,
)


def make_cvrp(n_customers: int, seed: int) -> dict:
    """Random uniform CVRP with a random feasible initial solution.

    Returns
    -------
    dict
        ``dist`` float64 [N, N] (Euclidean, unit square), ``demand`` float64 [N] (integers 1..9,
        0 at the depot), ``capacity`` (50, the Kool et al. value for 100 customers) and ``start``
        int64 [L] (flat routes).
    """
    rng = np.random.default_rng(seed)
    n = n_customers + 1
    xy = rng.random((n, 2))
    dist = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    demand = rng.integers(1, 10, n).astype(np.float64)
    demand[0] = 0.0
    capacity = 50.0
    flat, load = [0], 0.0
    for c in rng.permutation(np.arange(1, n)).tolist():
        if load + demand[c] > capacity:
            flat.append(0)
            load = 0.0
        flat.append(c)
        load += demand[c]
    flat.append(0)
    return {"dist": dist, "demand": demand, "capacity": capacity, "start": np.asarray(flat)}


def make_tsp(n: int, seed: int) -> dict:
    """Random uniform TSP: ``dist`` float64 [N, N] and a random ``start`` tour int64 [N]."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2))
    dist = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    return {"dist": dist, "start": rng.permutation(n)}


def _time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[np.ndarray, float]:
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, 1e3 * statistics.median(times)


def bench(problem: str, n: int, seeds: list[int], repeats: int) -> dict:
    """Time kernel and reference on ``len(seeds)`` instances of ``problem`` ("cvrp" or "tsp")."""
    rows = []
    for seed in seeds:
        if problem == "cvrp":
            inst = make_cvrp(n, seed)
            args = (inst["start"], inst["dist"], inst["demand"], inst["capacity"])
            kernel, reference = local_search_vrp, local_search_vrp_reference
            start_cost = route_cost(inst["start"], inst["dist"])

            def cost(sol, inst=inst):
                return route_cost(sol, inst["dist"])
        else:
            inst = make_tsp(n, seed)
            args = (inst["start"], inst["dist"])
            kernel, reference = local_search_tsp, local_search_tsp_reference

            def cost(sol, inst=inst):
                return route_cost(np.append(sol, sol[0]), inst["dist"])

            start_cost = cost(inst["start"])
        kernel(*args)  # warm-up / compilation
        out_k, kernel_ms = _time(lambda kernel=kernel, args=args: kernel(*args), repeats)
        out_r, ref_ms = _time(lambda reference=reference, args=args: reference(*args), 1)
        if not np.array_equal(out_k, out_r):
            raise AssertionError(f"{problem} seed {seed}: kernel and reference disagree")
        rows.append(
            {
                "problem": f"{problem}{n}",
                "seed": seed,
                "start_cost": start_cost,
                "final_cost": cost(out_k),
                "kernel_ms": kernel_ms,
                "reference_ms": ref_ms,
                "speedup": ref_ms / kernel_ms,
            }
        )
    total = sum(r["reference_ms"] for r in rows) / sum(r["kernel_ms"] for r in rows)
    return {"rows": rows, "speedup": total}


def _print_table(title: str, rows: list[dict], speedup: float) -> None:
    print(title)
    print(
        f"{'instance':<10}{'seed':>5}{'start cost':>12}{'final cost':>12}"
        f"{'numba ms':>11}{'reference ms':>14}{'ratio vs ref':>14}"
    )
    for r in rows:
        print(
            f"{r['problem']:<10}{r['seed']:>5}{r['start_cost']:>12.3f}{r['final_cost']:>12.3f}"
            f"{r['kernel_ms']:>11.2f}{r['reference_ms']:>14.1f}{r['speedup']:>13.1f}x"
        )
    print(f"{'total':<10}{'':>5}{'':>12}{'':>12}{'':>11}{'':>14}{speedup:>13.1f}x")


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="customers (CVRP) / nodes (TSP)")
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed kernel calls per instance")
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows to this CSV")
    args = parser.parse_args(argv)

    import numba

    print(f"numba {numba.__version__}, numpy {np.__version__}; single-threaded kernels")
    seeds = list(range(args.instances))
    result: dict[str, float] = {}
    all_rows: list[dict] = []
    for problem in ("cvrp", "tsp"):
        res = bench(problem, args.n, seeds, args.repeats)
        _print_table(
            f"{problem.upper()}{args.n}: granular local search (k=20), kernel median of "
            f"{args.repeats}, reference 1 call",
            res["rows"],
            res["speedup"],
        )
        all_rows += res["rows"]
        result[f"ls_speedup_{problem}{args.n}"] = res["speedup"]
    if args.csv is not None:
        _write_csv(args.csv, all_rows)
    print("RESULT " + " ".join(f"{k}={v:.1f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
