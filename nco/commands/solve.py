"""``nco solve``: solve instance files with a neural, hybrid or classical solver.

Problems: TSP (.tsp), CVRP, CVRPTW (VRPLIB .vrp or Solomon .txt) and the VRP variants of
PyVRP's VRPLIB dialect (backhauls strict or mixed, open routes, distance and duration limits,
time windows, several depots with their vehicles). Prints, per instance, the cost, the gap to
the best-known cost (``--bks FILE`` or the ``.sol`` next to the instance), feasibility and
time, and writes a VRPLIB ``.sol`` (TSPLIB ``.tour``; multi-depot routes keep their depots).

Solvers: pyvrp and ortools solve every problem, hgs TSP and CVRP only; neural and hybrid use
the shipped checkpoint of the instance's problem (the variants: mtvrp50). The network cannot
represent a duration limit with time windows (VEHICLES_MAX_DURATION, e.g. the MDVRPTW files):
neural refuses such files, the hybrid gives the backend the whole budget.

Examples::

    nco solve data/instances/X-n101-k25.vrp --solver hybrid --time-limit 2 --plot route.png
    nco solve data/X-n101-k25.vrp --solver hgs --time-limit 10 --out X-n101-k25.sol
    nco solve my.vrp --solver neural --model runs/cvrp50-pomo --out my.sol
    nco solve data/cvrplib-x/*.vrp --solver pyvrp --time-limit 5 --workers 2 --out sols/
    nco solve vrpb/X-n524-50-k125.vrp --solver hybrid --time-limit 10
    nco solve vrptw-gh1000/C1_10_1.vrp --edge-weight SOLOMON --time-limit 10
    nco solve mdvrptw/PR11A.vrp --edge-weight EUC_2D --scale 1000 --time-limit 10
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from nco.commands import guarded, standalone_main

__all__ = ["add_parser", "configure", "main", "run"]

PROG = "nco solve"


def configure(p: argparse.ArgumentParser) -> None:
    """Add the solve arguments to a parser."""
    p.add_argument(
        "instances",
        nargs="+",
        type=Path,
        metavar="INSTANCE",
        help="instance files (.vrp, .tsp, Solomon .txt): TSP, CVRP, CVRPTW and the VRP "
        "variants (VRPB, VRPMB, OVRP, VRPL, MDVRPTW, ...)",
    )
    p.add_argument(
        "--solver",
        default="pyvrp",
        help="neural, hybrid (neural warm start + PyVRP), ortools, hgs or pyvrp (default "
        "pyvrp); pyvrp, ortools and hybrid solve every problem, hgs TSP and CVRP only",
    )
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint for --solver neural/hybrid: file, run directory or shipped name "
        "(e.g. cvrp100); default: the shipped checkpoint nearest in size",
    )
    p.add_argument(
        "--time-limit", type=float, default=10.0, help="seconds per instance; default 10"
    )
    p.add_argument(
        "--edge-weight",
        default=None,
        metavar="CONVENTION",
        help="distance convention replacing the VRPLIB files' EDGE_WEIGHT_TYPE, e.g. SOLOMON "
        "(one-decimal truncation) for the Gehring-Homberger files, which state EUC_2D; one of "
        "EUC_2D, CEIL_2D, ATT, GEO, MAN_2D, MAX_2D, SOLOMON, EXACT",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="VRPLIB files: multiply coordinates, times and route limits by FACTOR before the "
        "convention, e.g. 1000 with --edge-weight EUC_2D for the MDVRPTW files (the units of "
        "their best-known costs); default 1",
    )
    p.add_argument("--seed", type=int, default=0, help="solver seed; default 0")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="solution file (one instance) or folder; default: NAME.SOLVER.sol in the current folder",
    )
    p.add_argument(
        "--bks",
        type=Path,
        default=None,
        help="CSV with instance,bks columns for the gap (default: the .sol next to the instance)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="also draw the routes of the solution to this image (one instance only)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="instances solved in parallel (one core each); default 1",
    )


def add_parser(subparsers: Any) -> None:
    """Register ``solve`` on an argparse sub-parsers object."""
    p = subparsers.add_parser(
        "solve",
        help="solve instance files with a neural, hybrid or classical solver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(p)
    p.set_defaults(func=run)


def _out_path(out: Path | None, name: str, solver: str, problem: str, single: bool) -> Path:
    ext = ".tour" if problem == "tsp" else ".sol"
    if out is not None and single and (out.suffix in (".sol", ".tour") and not out.is_dir()):
        return out
    folder = out if out is not None else Path(".")
    return folder / f"{name}.{solver}{ext}"


def _run(args: argparse.Namespace) -> int:
    import nco.envs as E
    import nco.solvers  # noqa: F401  (registers "neural" and "hybrid")
    from nco.baselines import available_solvers, get_solver
    from nco.benchmark import load_bks, load_options, reference_cost_from_sol, solve_file
    from nco.envs.instance import CONVENTIONS

    if args.plot is not None and len(args.instances) > 1:
        raise ValueError(
            f"--plot: give one instance (got {len(args.instances)}); "
            "use nco plot INSTANCE SOLUTION --out PNG for each"
        )
    if args.solver not in available_solvers():
        raise ValueError(
            f"unknown solver {args.solver!r}; expected one of {', '.join(available_solvers())}"
        )
    if not (args.time_limit > 0):
        raise ValueError(f"--time-limit must be positive, got {args.time_limit}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if not (args.scale > 0 and args.scale < float("inf")):
        raise ValueError(f"--scale must be a positive number, got {args.scale}")
    if args.edge_weight is not None:
        args.edge_weight = args.edge_weight.upper()
        if args.edge_weight not in CONVENTIONS or args.edge_weight == "EXPLICIT":
            conv = ", ".join(c for c in CONVENTIONS if c != "EXPLICIT")
            raise ValueError(f"--edge-weight must be one of {conv}, got {args.edge_weight!r}")
    load = load_options(args.edge_weight, args.scale)
    if args.out is not None and len(args.instances) > 1 and args.out.suffix in (".sol", ".tour"):
        raise ValueError(f"--out {args.out}: give a folder when solving several instances")
    options: dict[str, Any] = {}
    if args.model is not None:
        if args.solver not in ("neural", "hybrid"):
            raise ValueError(f"--model applies to --solver neural or hybrid, not {args.solver!r}")
        options["model"] = str(args.model)
    # fails here, once, if its package (or, for neural/hybrid, the checkpoint) is missing
    solver = get_solver(args.solver, **options)
    bks = load_bks(args.bks) if args.bks is not None else None
    # Load everything first: a bad file stops the command before any solving starts.
    insts = [E.load(p, **load) for p in args.instances]
    for inst in insts:
        if not solver.supports(inst.problem):
            if args.model:  # the cause only: the model is for another problem
                raise ValueError(
                    f"--model {args.model} is not a {inst.problem} checkpoint ({inst.name} is a "
                    f"{inst.problem} instance)"
                )
            what = (
                f"{inst.problem!r} ({inst.variant})"
                if inst.problem == "mtvrp"
                else repr(inst.problem)
            )
            raise ValueError(f"solver {args.solver!r} does not support {what} ({inst.name})")
    single = len(insts) == 1
    outs = [_out_path(args.out, inst.name, args.solver, inst.problem, single) for inst in insts]
    jobs = [
        (str(p), args.solver, args.time_limit, args.seed, str(o), options, load)
        for p, o in zip(args.instances, outs)
    ]
    total = len(jobs)
    status = 0

    def report(k: int, row: dict[str, Any], inst: Any, path: Path) -> None:
        nonlocal status
        ref = bks.get(inst.name) if bks is not None else reference_cost_from_sol(path, inst)
        if row["cost"] == "":
            status = 1
            print(f"[{k}/{total}] {inst.name}: FAILED: {row['error']}")
            return
        cost = float(row["cost"])
        feasible = str(row["feasible"]) == "True"
        # no gap for an infeasible plan; a gap that rounds to zero prints as +0.00%
        pct = round(100.0 * (cost / ref - 1.0), 2) + 0.0 if ref else 0.0
        gap = f" gap {pct:+.2f}% (best known {ref:g})" if ref and feasible else ""
        feas = "feasible" if feasible else f"INFEASIBLE: {row['violations']}"
        print(
            f"[{k}/{total}] {inst.name}: cost {cost:.10g}{gap}, {feas}, {row['runtime']} s -> {row['solution_file']}",
            flush=True,
        )
        if row.get("note"):
            print(f"    {row['solver']}: {row['note']}", flush=True)
        if str(row["feasible"]) != "True":
            status = 1

    if args.workers == 1 or total == 1:
        for k, (job, inst, path) in enumerate(zip(jobs, insts, args.instances), 1):
            row = solve_file(*job)
            report(k, row, inst, path)
            if args.plot is not None:
                _plot(row, inst, args.plot)
    else:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
            futs = {pool.submit(solve_file, *job): i for i, job in enumerate(jobs)}
            for k, fut in enumerate(as_completed(futs), 1):
                i = futs[fut]
                report(k, fut.result(), insts[i], args.instances[i])
    return status


def _plot(row: dict[str, Any], inst: Any, png: Path) -> None:
    """Draw the solution file just written (read back, so the picture is what was saved)."""
    import nco.envs as E
    from nco.plotting.routes import save_route_plot

    if not row["solution_file"]:
        print(f"plot: skipped, no solution for {inst.name}")
        return
    sol_file = Path(row["solution_file"])
    sol = E.load_solution(sol_file, inst, solver=row["solver"])  # with each route's depot
    print(f"plot -> {save_route_plot(sol, png)}")


def run(args: argparse.Namespace) -> int:
    """Run the solve command; 0 when every instance got a feasible solution, 1 when some did
    not, 2 for bad input."""
    return guarded(PROG, _run, args)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m nco.commands.solve``."""
    return standalone_main(PROG, __doc__, configure, run, argv)


if __name__ == "__main__":
    sys.exit(main())
